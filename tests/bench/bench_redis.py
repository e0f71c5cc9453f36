"""courier-server on Redis: fan-out across two instances beside one in-memory instance, and
HTTP publish throughput both ways, in the same run.

Starts its own `redis-server` (Debian's package) on a free loopback port with AOF
(`appendfsync everysec`) in a temporary directory, and stops it afterwards.
"""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

from common import ROOT, sh

SUBSCRIBERS = 1000
EVENTS = 1000


def load(cmd):
    out = sh(cmd, capture_output=True).stdout.strip().splitlines()
    return json.loads(out[-1])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis():
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: apt-get install -y redis-server")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="courier-bench-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes", "--appendfsync", "everysec", "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, port, workdir
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


def redis_version():
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return out.split()[2].removeprefix("v=") if out else "?"


def run():
    sh("cargo build --release -p courier-server -p courier-bench")
    proc, port, workdir = start_redis()
    url = f"redis://127.0.0.1:{port}/"
    try:
        fan = f"target/release/fanout --subscribers {SUBSCRIBERS} --events {EVENTS}"
        mem = load(fan)
        red = load(f"{fan} --redis-url {url} --instances 2")
        pub = "target/release/http_publish"
        load_before = os.getloadavg()[0]
        pub_mem = load(pub)
        pub_red = load(f"{pub} --redis-url {url}")
        load_after = os.getloadavg()[0]
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    def row(name, f):
        lost = f["expected_deliveries"] - f["deliveries"]
        return (f"| {name} | {f['deliveries_per_sec']:,.0f} | {lost} | "
                f"{f['saturated']['p50_ms']:.1f} / {f['saturated']['p99_ms']:.1f} ms | "
                f"{f['paced']['p50_ms']:.1f} / {f['paced']['p99_ms']:.1f} ms | "
                f"{f['server_rss_mb']:.0f} MB |\n")

    return (
        "## Server on Redis: two instances beside one in-memory instance\n\n"
        f"Redis {redis_version()} on 127.0.0.1 (AOF, `appendfsync everysec`); the servers, Redis "
        "and the load generator share the machine's 2 cores.\n\n"
        f"Fan-out, `{fan}` (in memory) and the same with `--redis-url … --instances 2` (the "
        f"{SUBSCRIBERS:,} subscribers spread round-robin over two Redis-backed instances; the "
        "publisher posts batches of 50 to the first, 4 in flight, so every event crosses Redis "
        "pub/sub to both). Latency is publish→deliver measured by the subscribers; paced is "
        f"{mem['paced']['rate']} events/s.\n\n"
        "| backend | deliveries/s | missing | p50 / p99 at full speed | p50 / p99 paced | server memory |\n"
        "|---|---|---|---|---|---|\n"
        + row("memory, 1 instance", mem)
        + row("Redis, 2 instances", red)
        + f"\nHTTP publish, `{pub}` (rate limits off, {pub_mem['seconds_each']:.0f} s each; the "
        f"machine's 1-minute load average, other work included, was {load_before:.1f} before "
        f"and {load_after:.1f} after):\n\n"
        "| backend | `POST /publish`, 64 in flight | `POST /publish/batch` ×100, 8 in flight |\n"
        "|---|---|---|\n"
        f"| memory | {pub_mem['single_per_sec']:,.0f} events/s | {pub_mem['batched_per_sec']:,.0f} events/s |\n"
        f"| Redis | {pub_red['single_per_sec']:,.0f} events/s | {pub_red['batched_per_sec']:,.0f} events/s |\n"
        f"| Redis / memory | {pub_red['single_per_sec'] / pub_mem['single_per_sec']:.0%} | "
        f"{pub_red['batched_per_sec'] / pub_mem['batched_per_sec']:.0%} |\n\n"
        "On Redis a publish request costs a fixed number of round trips whatever its size "
        "(idempotency claims, the appends, the completions; the rate-limit decisions when "
        "limits are on), each one pipeline for all of the request's events.\n"
    )
