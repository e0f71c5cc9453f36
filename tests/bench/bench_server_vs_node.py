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

from common import median, sh

ROUNDS = 3
SUBSCRIBERS = 1000
EVENTS = 1000


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
        "Median of the rounds in bold, each round in brackets:\n\n"
        + "\n".join(table)
        + f"\n\nDeliveries missing at full speed over all rounds: Courier {lost['courier']}, Node {lost['node']}. "
        f"1-minute load average of the machine around the runs: {min(loads):.1f} to {max(loads):.1f} "
        "(above 2, other work competed for the 2 cores: the figures then say how each server "
        "degrades under contention more than what it does on a quiet machine).\n"
    )
