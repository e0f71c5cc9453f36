"""Shared plumbing of the Python e2e clients: arguments, the JSONL record, stdin control."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional


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

    def schedule(self) -> List[Any]:
        """(tick, [(seq, channel, id), ...]) for every tick of the paced publisher."""
        s = self.scenario
        total = s["events_per_client"]
        per_tick = s["publish_rate_per_s"] * s["publish_tick_ms"] / 1000
        channels = s["channels"]
        out = []
        seq = 0
        tick = 0
        while seq < total:
            due = min(total, round((tick + 1) * per_tick))
            group = []
            while seq < due:
                group.append((seq, channels[seq % len(channels)], f"{self.name}-{seq}"))
                seq += 1
            out.append(group)
            tick += 1
        return out


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
