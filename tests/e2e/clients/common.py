"""Shared plumbing of the Python e2e clients: arguments, the JSONL record, stdin control."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple


class Args:
    def __init__(self, argv: List[str]) -> None:
        scenario_path, self.name, self.url, self.token, self.out = argv[1:6]
        with open(scenario_path) as f:
            self.scenario: Dict[str, Any] = json.load(f)

    def client_options(self) -> Dict[str, Any]:
        o = self.scenario["client_options"]
        return {
            "backoff": o["backoff"],
            "max_in_flight": o["max_in_flight"],
            "max_attempts": o["max_attempts"],
            "max_batch_events": o["max_batch_events"],
            "max_queued": 100_000,
        }

    def schedule(self) -> List[Tuple[float, List[Tuple[int, str, str]]]]:
        """(seconds after `go`, [(seq, channel, type), ...]) for every tick, as the orchestrator
        resolved the scenario's streams (tests/e2e/harness.py)."""
        return [(t["at_ms"] / 1000, [(int(e[0]), str(e[1]), str(e[2])) for e in t["events"]])
                for t in self.scenario["schedule"]]


def by_type(group: List[Tuple[int, str, str]]) -> Dict[str, List[Tuple[int, str, str]]]:
    """A tick's events split by type, publish order kept within each."""
    out: Dict[str, List[Tuple[int, str, str]]] = {}
    for e in group:
        out.setdefault(e[2], []).append(e)
    return out


def now_ms() -> float:
    return time.time() * 1000


class Record:
    """Thread-safe JSONL writer; remembers when the last event or gap arrived."""

    def __init__(self, path: str) -> None:
        self._f = open(path, "w")
        self._lock = threading.Lock()
        self.last_activity = time.monotonic()

    def write(self, rec: Dict[str, Any]) -> None:
        if rec["k"] in ("event", "gap"):
            self.last_activity = time.monotonic()
        line = json.dumps(rec) + "\n"
        with self._lock:
            self._f.write(line)

    def close(self) -> None:
        with self._lock:
            self._f.close()


def status(s: str) -> None:
    sys.stdout.write(s + "\n")
    sys.stdout.flush()


def read_control(on_line: Callable[[str], None]) -> threading.Thread:
    """Calls on_line("go") / on_line("stop") from a daemon thread reading stdin."""

    def run() -> None:
        for line in sys.stdin:
            on_line(line.strip())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def pos(p: Optional[Any]) -> Optional[Dict[str, Any]]:
    return None if p is None else {"epoch": p.epoch, "offset": p.offset}
