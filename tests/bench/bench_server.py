"""courier-server: fan-out, HTTP publish throughput, memory per idle connection.

The load generators are the `courier-bench` binaries; each starts the release server as a
child process on a free loopback port and prints one JSON object.
"""
import json

from common import plot, sh


def load(cmd):
    out = sh(cmd, capture_output=True).stdout.strip().splitlines()
    return json.loads(out[-1])


def run():
    sh("cargo build --release -p courier-server -p courier-bench")
    fan_cmd = "target/release/fanout --subscribers 1000 --events 1000"
    fan = load(fan_cmd)
    pub_cmd = "target/release/http_publish"
    pub = load(pub_cmd)
    idle_cmd = "target/release/idle_connections --connections 10000"
    idle = load(idle_cmd)
    ok = lambda good: "meets" if good else "MISSES"  # noqa: E731
    chart = plot(
        "docs/img/fanout-latency.png",
        "publish→deliver latency, 1 publisher → 1,000 subscribers (in-memory server)",
        "percentile",
        "milliseconds (log scale)",
        {
            f"paced, {fan['paced']['rate']} events/s": tuple(zip(*fan["paced"]["curve"])),
            "full speed": tuple(zip(*fan["saturated"]["curve"])),
        },
        log_y=True,
    )
    lost = fan["expected_deliveries"] - fan["deliveries"]
    return (
        "## Server: fan-out, HTTP publish, idle connections\n\n"
        "The server and the load generator share the machine's 2 cores (all on 127.0.0.1).\n\n"
        f"Fan-out, `{fan_cmd}`: one publisher posting batches of 50 to `/publish/batch` (4 in "
        "flight), 1,000 WebSocket subscribers on one channel.\n\n"
        "| measure | value |\n|---|---|\n"
        f"| deliveries | {fan['deliveries']:,} of {fan['expected_deliveries']:,} ({lost} missing) |\n"
        f"| deliveries per second | {fan['deliveries_per_sec']:,.0f} (target ≥ 300,000: "
        f"{ok(fan['deliveries_per_sec'] >= 300_000)}) |\n"
        f"| publish→deliver at full speed, p50 / p99 | {fan['saturated']['p50_ms']:.1f} ms / "
        f"{fan['saturated']['p99_ms']:.1f} ms ({fan['saturated']['samples']:,} samples) |\n"
        f"| publish→deliver at {fan['paced']['rate']} events/s (×1,000 subscribers), p50 / p99 | "
        f"{fan['paced']['p50_ms']:.1f} ms / {fan['paced']['p99_ms']:.1f} ms |\n"
        f"| server resident memory after | {fan['server_rss_mb']:.0f} MB |\n\n"
        f"![publish to deliver latency percentiles]({chart.replace('docs/', '')})\n\n"
        f"HTTP publish, `{pub_cmd}` (rate limits off, {pub['seconds_each']:.0f} s each):\n\n"
        "| mode | events/s |\n|---|---|\n"
        f"| `POST /publish`, one event per request, 64 in flight | {pub['single_per_sec']:,.0f} |\n"
        f"| `POST /publish/batch`, 100 events per request, 8 in flight | {pub['batched_per_sec']:,.0f} |\n\n"
        f"Idle connections, `{idle_cmd}`: resident memory of the server with 10,000 "
        "authenticated WebSocket connections open, over a 200-connection baseline.\n\n"
        "| measure | value |\n|---|---|\n"
        f"| connections still open at the end | {idle['still_open']:,} |\n"
        f"| resident memory | {idle['rss_before_mb']:.1f} MB → {idle['rss_after_mb']:.1f} MB |\n"
        f"| per connection | {idle['bytes_per_connection'] / 1024:.1f} KB (target ≤ 16 KB: "
        f"{ok(idle['bytes_per_connection'] <= 16 * 1024)}) |\n"
    )
