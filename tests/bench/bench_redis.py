"""courier-server on Redis and on a Redis Cluster: fan-out across two instances beside one
in-memory instance, and HTTP publish throughput, in the same run.

Starts its own `redis-server` (Debian's package) on a free loopback port, and a Redis
Cluster of three masters (no replicas) on free loopback ports, all with AOF
(`appendfsync everysec`) in temporary directories; every node is killed and its directory
removed afterwards, also when something fails.
"""
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from common import ROOT, sh

SUBSCRIBERS = 1000
EVENTS = 1000
MASTERS = 3
# The multi-channel variant: events round-robin over this many channels, every subscriber
# on all of them, so a cluster's masters share the appends and the pub/sub.
CHANNELS = 8


def load(cmd):
    try:
        out = sh(cmd, capture_output=True).stdout.strip().splitlines()
    except subprocess.CalledProcessError as e:
        # The servers' logs go to the load generator's stderr: show them.
        sys.stderr.write(e.stdout or "")
        sys.stderr.write(e.stderr or "")
        raise
    return json.loads(out[-1])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_cli(port, *args):
    """One `redis-cli` command against the node on `port`; its output."""
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                          text=True, timeout=10).stdout


class RedisNode:
    """A `redis-server` on 127.0.0.1:`port` with AOF (`appendfsync everysec`) in a temporary
    directory (its log there too), started with `extra` arguments. `stop()` kills it and
    removes the directory."""

    def __init__(self, port, extra=()):
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed: apt-get install -y redis-server")
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="courier-bench-redis-")
        self.proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", self.dir,
             "--logfile", "redis.log", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop(show_log=True)
        raise SystemExit(f"redis-server on port {port} did not start")

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/"

    def stop(self, show_log=False):
        self.proc.kill()
        self.proc.wait()
        if show_log:
            with contextlib.suppress(OSError), open(os.path.join(self.dir, "redis.log")) as f:
                tail = f.readlines()[-30:]
                sys.stderr.write(f"--- redis-server :{self.port} log (tail) ---\n{''.join(tail)}")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def redis_node(port, extra=()):
    """A [`RedisNode`], stopped on exit (its log's tail shown if the block failed)."""
    node = RedisNode(port, extra)
    failed = False
    try:
        yield node
    except BaseException:
        failed = True
        raise
    finally:
        node.stop(show_log=failed)


def start_redis():
    """One node on a free port, for the callers that stop it themselves (bench_history):
    `(process, port, directory)`; kill the process and remove the directory when done."""
    node = RedisNode(free_port())
    return node.proc, node.port, node.dir


@contextlib.contextmanager
def redis_cluster():
    """Three masters, no replicas, each with its own client port, cluster bus port,
    `nodes.conf` and AOF; formed with `redis-cli --cluster create … --cluster-yes`, ready
    once every node reports `cluster_state:ok` with every slot served and all masters
    known. Yields the nodes; all are killed and removed on exit."""
    with contextlib.ExitStack() as stack:
        nodes = []
        for _ in range(MASTERS):
            # Own bus port: the default (port + 10000) may be taken or past 65535.
            extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-port", str(free_port())]
            nodes.append(stack.enter_context(redis_node(free_port(), extra)))
        create = subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in nodes],
             "--cluster-replicas", "0", "--cluster-yes"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if create.returncode != 0:
            raise SystemExit(f"redis-cli --cluster create failed:\n{create.stdout}{create.stderr}")
        deadline = time.time() + 30
        while True:
            infos = {n.port: redis_cli(n.port, "CLUSTER", "INFO") for n in nodes}
            want = {"cluster_state:ok", "cluster_slots_ok:16384", f"cluster_known_nodes:{MASTERS}"}
            if all(want <= {line.strip() for line in i.splitlines()} for i in infos.values()):
                break
            if time.time() > deadline:
                raise SystemExit(f"the cluster did not become healthy: {infos}")
            time.sleep(0.1)
        yield nodes


def masters_of(nodes, channels):
    """How many of `channels` each master serves (its keys' hash tag is `{c:channel}`), in
    the nodes' order."""
    ranges = []
    for n in nodes:
        me = next(line for line in redis_cli(n.port, "CLUSTER", "NODES").splitlines()
                  if "myself" in line)
        ranges.append([tuple(map(int, (r.split("-") * 2)[:2])) for r in me.split()[8:]])
    counts = [0] * len(nodes)
    for c in channels:
        slot = int(redis_cli(nodes[0].port, "CLUSTER", "KEYSLOT", f"{{c:{c}}}"))
        counts[next(i for i, rs in enumerate(ranges) if any(a <= slot <= b for a, b in rs))] += 1
    return counts


def redis_version():
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return out.split()[2].removeprefix("v=") if out else "?"


def run():
    load_start = os.getloadavg()[0]
    sh("cargo build --release -p courier-server -p courier-bench")
    fan = f"target/release/fanout --subscribers {SUBSCRIBERS} --events {EVENTS}"
    pub = "target/release/http_publish"
    many = [f"bench.fanout.{k}" for k in range(CHANNELS)]
    with redis_node(free_port()) as single, redis_cluster() as nodes:
        url = single.url
        curl = ",".join(n.url for n in nodes)
        spread = masters_of(nodes, many)
        pub_spread = masters_of(nodes, [f"backtest.b{k}" for k in range(8)])
        mem = load(fan)
        red = load(f"{fan} --redis-url {url} --instances 2")
        clu = load(f"{fan} --redis-url {curl} --redis-cluster --instances 2")
        red_many = load(f"{fan} --redis-url {url} --instances 2 --channels {CHANNELS}")
        clu_many = load(f"{fan} --redis-url {curl} --redis-cluster --instances 2 --channels {CHANNELS}")
        load_before = os.getloadavg()[0]
        pub_mem = load(pub)
        pub_red = load(f"{pub} --redis-url {url}")
        pub_clu = load(f"{pub} --redis-url {curl} --redis-cluster")
        load_after = os.getloadavg()[0]

    def row(name, f):
        lost = (f["expected_deliveries"] - f["deliveries"]
                + f["paced"]["expected_deliveries"] - f["paced"]["deliveries"])
        return (f"| {name} | {f['deliveries_per_sec']:,.0f} | {lost} | "
                f"{f['saturated']['p50_ms']:.1f} / {f['saturated']['p99_ms']:.1f} ms | "
                f"{f['paced']['p50_ms']:.1f} / {f['paced']['p99_ms']:.1f} ms | "
                f"{f['server_rss_mb']:.0f} MB |\n")

    def ratio(key, f):
        return f"{f[key] / pub_mem[key]:.0%}"

    cluster_name = f"Redis Cluster ({MASTERS} masters)"
    return (
        "## Server on Redis and on Redis Cluster: two instances beside one in-memory instance\n\n"
        f"Redis {redis_version()} on 127.0.0.1: one node, and a Redis Cluster of {MASTERS} masters "
        "(`--cluster-enabled yes`, no replicas, formed with `redis-cli --cluster create`), every "
        "node with AOF (`appendfsync everysec`). The servers, every Redis node and the load "
        "generator share the machine's 2 cores; the 1-minute load average was "
        f"{load_start:.1f} when the run started.\n\n"
        f"Fan-out, `{fan}` (in memory) and the same with `--redis-url … --instances 2` (one "
        "Redis) or `--redis-url NODE,NODE,NODE --redis-cluster --instances 2` (the cluster): the "
        f"{SUBSCRIBERS:,} subscribers spread round-robin over two instances; the publisher posts "
        "batches of 50 to the first, 4 in flight, so every event crosses Redis pub/sub to both "
        "(sharded pub/sub on the cluster). With one channel, the cluster serves that channel's "
        "appends and pub/sub from the one master owning its slot; the other two stay idle. "
        f"The `--channels {CHANNELS}` rows send the events round-robin to {CHANNELS} channels, "
        "every subscriber subscribed to all of them (so the deliveries are the same); their slots "
        f"fall {' / '.join(map(str, spread))} on the three masters. Latency is publish→deliver "
        f"measured by the subscribers; paced is {mem['paced']['rate']} events/s, one per request. "
        "Missing counts both phases.\n\n"
        "| backend | deliveries/s | missing | p50 / p99 at full speed | p50 / p99 paced | server memory |\n"
        "|---|---|---|---|---|---|\n"
        + row("memory, 1 instance", mem)
        + row("Redis, 2 instances", red)
        + row(f"{cluster_name}, 2 instances", clu)
        + row(f"Redis, 2 instances, {CHANNELS} channels", red_many)
        + row(f"{cluster_name}, 2 instances, {CHANNELS} channels", clu_many)
        + f"\nHTTP publish, `{pub}` (one instance, rate limits off, {pub_mem['seconds_each']:.0f} s "
        "each; the events go to 8 channels, "
        f"{' / '.join(map(str, pub_spread))} of them on the cluster's three masters; the "
        f"machine's 1-minute load average, this benchmark's own processes included, was "
        f"{load_before:.1f} before and {load_after:.1f} after):\n\n"
        "| backend | `POST /publish`, 64 in flight | `POST /publish/batch` ×100, 8 in flight |\n"
        "|---|---|---|\n"
        f"| memory | {pub_mem['single_per_sec']:,.0f} events/s | {pub_mem['batched_per_sec']:,.0f} events/s |\n"
        f"| Redis | {pub_red['single_per_sec']:,.0f} events/s | {pub_red['batched_per_sec']:,.0f} events/s |\n"
        f"| {cluster_name} | {pub_clu['single_per_sec']:,.0f} events/s | {pub_clu['batched_per_sec']:,.0f} events/s |\n"
        f"| Redis / memory | {ratio('single_per_sec', pub_red)} | {ratio('batched_per_sec', pub_red)} |\n"
        f"| {cluster_name} / memory | {ratio('single_per_sec', pub_clu)} | {ratio('batched_per_sec', pub_clu)} |\n\n"
        "On Redis a publish request costs a fixed number of round trips whatever its size "
        "(idempotency claims, the appends, the completions; the rate-limit decisions when "
        "limits are on), each one pipeline for all of the request's events; on the cluster each "
        "stage is one pipeline per hash tag (the user's keys, each channel's keys), sent at once "
        "to the masters that own them.\n"
    )
