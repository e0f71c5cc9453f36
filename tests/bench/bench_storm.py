"""Reconnect storm: 500 subscribers when the server restarts (tests/e2e/test_storm.py), with
a plot of the server's record of connection attempts over time."""
import json
import os

from common import ROOT, plot, sh


def run():
    cmd = ".venv/bin/python -m pytest -q -p no:cacheprovider tests/e2e/test_storm.py"
    sh("cargo build -p courier-server -p courier-client --examples")
    sh(cmd)
    with open(os.path.join(ROOT, "tests", "artifacts", "e2e", "storm-requests.json")) as f:
        record = json.load(f)
    with open(os.path.join(ROOT, "tests", "e2e", "scenario.json")) as f:
        storm = json.load(f)["storm"]
    up = record["restart"]["up_ms"]
    times = sorted(q["at_ms"] - up for q in record["attempts"])
    accepted = sorted(q["at_ms"] - up for q in record["attempts"] if q["status"] == 101)
    bucket = storm["bucket_ms"]
    max_delay = storm["backoff"]["max_delay_ms"]
    start = min(0, int(times[0] // bucket) * bucket)
    edges = list(range(start, int(times[-1]) + bucket, bucket))
    counts = [sum(1 for t in times if e <= t < e + bucket) for e in edges]
    chart = plot(
        "docs/img/reconnect-storm.png",
        f"reconnect storm: {storm['subscribers']} subscribers, attempts per {bucket} ms after the restart",
        "ms after the new server was up",
        f"connection attempts per {bucket} ms",
        {"attempts": (edges, counts)},
        kind="bar",
    )
    first = times[0]
    window = [t for t in times if first <= t < first + max_delay]
    mean = len(window) / (max_delay / bucket)
    peak = max(counts)
    n = storm["subscribers"]
    return (
        "## Reconnect storm\n\n"
        f"Command: `{cmd}` ({n} subscribers of the Rust client, one WebSocket each; backoff "
        f"min {storm['backoff']['min_delay_ms']} ms, max {max_delay} ms, full jitter; the server "
        "restarts and records every connection attempt).\n\n"
        "| measure | value |\n|---|---|\n"
        f"| attempts recorded after the restart | {len(times)} ({len(accepted)} accepted) |\n"
        f"| busiest {bucket} ms bucket / mean over the {max_delay} ms backoff window | {peak} / "
        f"{mean:.1f} = {peak / mean:.2f} (limit 3) |\n"
        f"| the {n}th accepted connection, after the server was up | {accepted[n - 1]:.0f} ms "
        f"(limit {max_delay + 2000} ms) |\n\n"
        f"![connection attempts over time]({chart.replace('docs/', '')})\n"
    )
