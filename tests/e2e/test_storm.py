"""Issue #6 part 3, reconnect storm: 500 subscribers (one Rust process, one WebSocket each)
when the server restarts. The new server's record of connection attempts must show them
spread out — the busiest 100 ms holds at most 3x the mean over the backoff window — and all
are back within the maximum backoff delay plus 2 s."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List

from conftest import ARTIFACTS, SCENARIO, SCENARIO_PATH, TARGET, ClientProc, Server, free_port, log, read_jsonl, token

STORM = SCENARIO["storm"]


def busiest(times: List[float], width: float) -> int:
    """The most attempts in any window [t, t + width) (windows start at an attempt)."""
    times = sorted(times)
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] < t:
            j += 1
        k = i
        while k < len(times) and times[k] < t + width:
            k += 1
        best = max(best, k - j)
    return best


def test_reconnect_storm_is_spread_out_and_recovers(server_bin: str) -> None:
    n = STORM["subscribers"]
    max_delay = STORM["backoff"]["max_delay_ms"]
    bucket = STORM["bucket_ms"]
    server = Server(server_bin, free_port(), SCENARIO["server_env"], "storm-server")
    server.start()
    out = os.path.join(ARTIFACTS, "storm-rust.jsonl")
    proc = ClientProc("storm", [os.path.join(TARGET, "debug", "examples", "e2e_client"), "storm", SCENARIO_PATH,
                                server.url, token("storm", role="user", channels=[STORM["channel"]]), out], out)
    try:
        t = time.monotonic()
        assert proc.wait_for("ready", 90), f"{n} subscribers not connected within 90 s:\n{proc.stderr_tail()}"
        log(f"storm: {n} subscribers connected in {time.monotonic() - t:.1f} s")
        restart = server.restart()
        up = restart["up_ms"]
        deadline = time.monotonic() + max_delay / 1000 + 15
        attempts: List[Dict[str, Any]] = []
        while time.monotonic() < deadline:
            attempts = [q for q in server.requests() if q["path"].startswith("/ws")]
            if sum(1 for q in attempts if q["status"] == 101) >= n and time.time() * 1000 > up + max_delay:
                break
            time.sleep(0.25)
        proc.send("stop")
        assert proc.wait_for("done", 60), proc.stderr_tail()
    finally:
        proc.kill()
        if server.proc is not None:
            server.stop()
    records = read_jsonl(out)
    with open(os.path.join(ARTIFACTS, "storm-requests.json"), "w") as f:
        json.dump({"restart": restart, "attempts": attempts}, f)

    accepted = [q for q in attempts if q["status"] == 101]
    assert len(accepted) >= n, f"only {len(accepted)} of {n} subscribers reconnected (server record)"
    times = [q["at_ms"] for q in attempts]
    first = min(times)
    in_window = [x for x in times if first <= x < first + max_delay]
    mean = len(in_window) / (max_delay / bucket)
    peak = busiest(times, bucket)
    ratio = peak / mean
    back: Dict[int, float] = {}
    for r in records:
        if r["k"] == "state" and r["state"] == "connected" and r["t"] > restart["signal_ms"]:
            back.setdefault(r["i"], r["t"])
    recovery = max(back.values()) - up if back else float("inf")
    server_recovery = sorted(q["at_ms"] for q in accepted)[n - 1] - up
    log(f"storm: {len(attempts)} attempts after the restart ({len(accepted)} accepted), first {first - up:.0f} ms "
        f"after the server was up; busiest {bucket} ms: {peak}, mean over the {max_delay} ms backoff window: "
        f"{mean:.1f} -> ratio {ratio:.2f}; all {len(back)} back {recovery:.0f} ms after the restart "
        f"(server record: {server_recovery:.0f} ms)")
    assert ratio <= STORM["max_busiest_to_mean"], (
        f"reconnects bunched up: the busiest {bucket} ms holds {peak} attempts, {ratio:.2f}x the mean "
        f"{mean:.1f} over the {max_delay} ms backoff window (limit {STORM['max_busiest_to_mean']}x)")
    assert len(back) == n, f"{n - len(back)} subscribers never reported `connected` after the restart"
    assert recovery <= STORM["recover_within_ms"], (
        f"the last subscriber was back {recovery:.0f} ms after the restart; limit {STORM['recover_within_ms']} ms "
        f"(max delay {max_delay} ms + 2 s)")
    assert server_recovery <= STORM["recover_within_ms"], f"server saw the {n}th reconnect after {server_recovery:.0f} ms"
