"""courier-server: fan-out with WebSocket compression (permessage-deflate) off and on.

`target/release/fanout_deflate` starts a release server with `ws.compression = "off"`, then
one with `"on"`, each with 1,000 raw-socket subscribers on one channel (offering deflate in
the `on` run), and publishes `backtest.progress` then `trade.executed` events as fast as the
server takes them. The subscribers count frames and TCP bytes without inflating, so the
client side costs the same in both runs. ROUNDS runs; medians, with every round's figure.
"""
import json

from common import cpu_model, median, sh

ROUNDS = 3
SUBSCRIBERS = 1000
EVENTS = 3000
TYPES = ("backtest.progress", "trade.executed")


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def run():
    sh("cargo build --release -p courier-server -p courier-bench")
    cmd = f"target/release/fanout_deflate --subscribers {SUBSCRIBERS} --events {EVENTS}"
    rounds = []
    loads = []
    for _ in range(ROUNDS):
        loads.append(loadavg())
        out = sh(cmd, capture_output=True).stdout.strip().splitlines()
        rounds.append(json.loads(out[-1])["runs"])

    def cell(mode, kind, key, fmt):
        values = [r[mode][kind][key] for r in rounds]
        return median(values), f"**{fmt.format(median(values))}** ({', '.join(fmt.format(v) for v in values)})"

    ok = lambda good: "meets" if good else "MISSES"  # noqa: E731
    lines = [
        "## Server: fan-out with WebSocket compression (permessage-deflate)\n",
        f"Command: `{cmd}` ({ROUNDS} rounds; `tests/bench/bench_deflate.py`), on {cpu_model()} "
        f"(load average before each round: {', '.join(f'{l:.1f}' for l in loads)}). "
        "The server and the load generator share the machine (127.0.0.1). Each round runs a "
        "release server with `COURIER_WS__COMPRESSION=off`, then one with `on` (rate limits off), "
        f"{SUBSCRIBERS:,} raw-socket subscribers on one channel, and {EVENTS:,} events of each "
        "type published as fast as the server takes them (batches of 50, 4 in flight). Wire bytes: "
        "what the subscribers read from TCP per delivered event, frame headers included; raw: the "
        "event frame uncompressed. Server CPU: user + system time per 1,000 deliveries (/proc). "
        "Medians, every round in brackets.\n",
    ]
    for kind in TYPES:
        lines.append(f"\n`{kind}`:\n")
        lines.append("| measure | compression off | compression on | on / off |")
        lines.append("|---|---|---|---|")
        meds = {}
        for label, key, fmt in (
            ("raw event frame (bytes)", "raw_bytes_per_event", "{:,.0f}"),
            ("bytes on the wire per event", "wire_bytes_per_event", "{:,.0f}"),
            ("deliveries per second", "deliveries_per_sec", "{:,.0f}"),
            ("server CPU per 1,000 deliveries (ms)", "server_cpu_ms_per_1000", "{:.2f}"),
        ):
            off, off_cell = cell("off", kind, key, fmt)
            on, on_cell = cell("on", kind, key, fmt)
            meds[key] = (off, on)
            lines.append(f"| {label} | {off_cell} | {on_cell} | {on / off:.2f}× |")
        bytes_ratio = meds["wire_bytes_per_event"][1] / meds["wire_bytes_per_event"][0]
        rate_ratio = meds["deliveries_per_sec"][1] / meds["deliveries_per_sec"][0]
        lines.append(
            f"\nTargets of #17: bytes ≤ 1/3 of uncompressed: {bytes_ratio:.2f}, {ok(bytes_ratio <= 1 / 3)}; "
            f"deliveries/s ≥ 80 % of uncompressed: {rate_ratio:.0%}, {ok(rate_ratio >= 0.8)}."
        )
    lines.append(
        "\nHow: the subscribers went live together, so with compression on they share one "
        "cohort (`deflate::Cohort`): each event is deflated once, with the events before it as "
        "its dictionary, and the same bytes go to all 1,000. Deflating each event on its own "
        "(what a client that asks for `server_no_context_takeover` gets, and any subscriber "
        "outside a cohort) leaves these 400–450-byte events at about 0.6–0.7 of their size: "
        "their ids, correlation id, numbers and timestamp differ from event to event. The deflate "
        "itself is paid once per event, not per delivery; the figures move from round to round "
        "with the other work on the machine (see the load averages).\n"
    )
    return "\n".join(lines) + "\n"
