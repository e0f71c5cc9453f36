"""courier-server beside a bare Node `ws` broadcast server, under the same fan-out load.

The same load generator (`target/release/fanout`: 1,000 WebSocket subscribers on one channel,
one publisher posting to `/publish/batch`) runs against the release Courier server (memory
backend, limits off) and against `tests/bench/ws_broadcast.mjs` (Node, the `ws` package from
npm/node_modules, nothing but stringify-once-and-send-to-all), interleaved, ROUNDS times each;
the table gives the median of the rounds and every round's figure. Measures: deliveries per
second at full speed; publish→deliver p50 / p99 at full speed and paced at 200 events/s
(×1,000 subscribers); server CPU time per 1,000 deliveries (user + system, /proc).
"""
import json
import os
import platform

from common import cpu_model, median, sh

ROUNDS = 3
SUBSCRIBERS = 1000
EVENTS = 1000


def machine():
    """CPU, kernel and Node: sections are measured at different times, on different machines."""
    node = sh("node --version", capture_output=True).stdout.strip()
    return f"{cpu_model()}, {platform.system()} {platform.release()}, Node {node}"


def loadavg():
    """The machine's 1-minute load average: other work on the 2 cores skews both servers."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def fanout(server):
    cmd = f"target/release/fanout --subscribers {SUBSCRIBERS} --events {EVENTS} --server {server}"
    before = loadavg()
    out = sh(cmd, capture_output=True).stdout.strip().splitlines()
    result = json.loads(out[-1])
    result["loadavg"] = (before, loadavg())
    return result


def run():
    sh("cargo build --release -p courier-server -p courier-bench")
    runs = {"courier": [], "node": []}
    for _ in range(ROUNDS):
        for server in runs:
            runs[server].append(fanout(server))

    rows = [
        ("deliveries per second, full speed", lambda r: r["deliveries_per_sec"], "{:,.0f}"),
        ("publish→deliver p50, full speed (ms)", lambda r: r["saturated"]["p50_ms"], "{:.1f}"),
        ("publish→deliver p99, full speed (ms)", lambda r: r["saturated"]["p99_ms"], "{:.1f}"),
        ("server CPU per 1,000 deliveries, full speed (ms)", lambda r: r["saturated"]["server_cpu_ms_per_1000"], "{:.2f}"),
        ("publish→deliver p50, 200 events/s (ms)", lambda r: r["paced"]["p50_ms"], "{:.1f}"),
        ("publish→deliver p99, 200 events/s (ms)", lambda r: r["paced"]["p99_ms"], "{:.1f}"),
        ("server CPU per 1,000 deliveries, 200 events/s (ms)", lambda r: r["paced"]["server_cpu_ms_per_1000"], "{:.2f}"),
    ]
    table = ["| measure | Courier | bare Node `ws` | Courier / Node |", "|---|---|---|---|"]
    for label, get, fmt in rows:
        cells = []
        meds = {}
        for server in ("courier", "node"):
            values = [get(r) for r in runs[server]]
            meds[server] = median(values)
            each = ", ".join(fmt.format(v) for v in values)
            cells.append(f"**{fmt.format(meds[server])}** ({each})")
        ratio = meds["courier"] / meds["node"] if meds["node"] else float("nan")
        table.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio:.2f}× |")
    paced = {
        s: {k: median([r["paced"][k] for r in runs[s]]) for k in ("p50_ms", "p99_ms", "server_cpu_ms_per_1000")}
        for s in runs
    }
    ok = lambda good: "meets" if good else "MISSES"  # noqa: E731
    cpu_ratio = paced["courier"]["server_cpu_ms_per_1000"] / paced["node"]["server_cpu_ms_per_1000"]
    targets = (
        "Targets of #14, paced (medians): p50 and p99 no worse than bare `ws`: "
        f"{ok(paced['courier']['p50_ms'] <= paced['node']['p50_ms'] and paced['courier']['p99_ms'] <= paced['node']['p99_ms'])}; "
        f"server CPU per 1,000 deliveries at most 0.6× bare `ws`: {cpu_ratio:.2f}×, {ok(cpu_ratio <= 0.6)}.\n\n"
    )
    lost = {s: sum(r["expected_deliveries"] - r["deliveries"] for r in runs[s]) for s in runs}
    loads = [x for s in runs for r in runs[s] for x in r["loadavg"]]
    return (
        "## Fan-out: Courier beside a bare Node `ws` broadcast server\n\n"
        f"Command: `target/release/fanout --subscribers {SUBSCRIBERS} --events {EVENTS} --server courier|node`, "
        f"{ROUNDS} rounds each, interleaved (courier, node, courier, …), one process at a time; "
        "the load generator and the server share the machine's 2 cores (127.0.0.1). The same "
        "subscriber process for both: 1,000 WebSockets on one channel, latency sampled on every "
        "tenth; one publisher posting batches of 50 to `/publish/batch` (4 in flight) at full "
        "speed, then one event per request at 200 events/s for 3 s. The Node baseline is "
        "`tests/bench/ws_broadcast.mjs`: `ws` with its defaults (TCP_NODELAY on), one "
        "`JSON.stringify` per event and a `send` per subscriber, no auth, validation, history "
        "or rate limits. Courier: the release server, memory backend, rate limits off, TCP_NODELAY "
        "on accepted sockets and the WebSocket writer flushing once per burst.\n\n"
        f"Machine: {machine()}.\n\n"
        "Median of the rounds in bold, each round in brackets:\n\n"
        + "\n".join(table)
        + "\n\n"
        + targets
        + f"Deliveries missing at full speed over all rounds: Courier {lost['courier']}, Node {lost['node']}. "
        f"1-minute load average of the machine around the runs: {min(loads):.1f} to {max(loads):.1f} "
        "(the benchmark itself keeps both cores busy, about 2; well above that, other work "
        "competed for the cores and the figures say more about contention than about the servers).\n"
    )
