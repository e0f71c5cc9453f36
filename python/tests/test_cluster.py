"""The Python SDK against two server instances on a three-master Redis Cluster, with one master
killed mid-stream and restarted: the client's retries (503 with Retry-After while the master's
slots are down) must end with every acknowledged event delivered once, in order.

The cluster (Debian's redis-server and redis-cli, which `make test` installs) runs on free
loopback ports in temporary directories, with AOF `always` so the restarted master comes back
with its data and its slots.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Dict, Iterator, List

import pytest

from conftest import Server, make_token, start_server, stop_server
from courier_client import CourierClient

pytestmark = [
    pytest.mark.skipif(
        shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
        reason="redis-server / redis-cli not installed (apt-get install -y redis-server; `make test` does it)",
    ),
    # Self-contained (its own cluster): run once, by `make test-python`, not again in the
    # suite's reruns against a Redis-backed server.
    pytest.mark.skipif(
        bool(os.environ.get("COURIER_BACKEND")), reason="runs in the plain suite (its own cluster)"
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10
    ).stdout


class Cluster:
    """Three masters, no replicas; `kill(i)` is a SIGKILL, `restart(i)` brings the node back
    from its directory (nodes.conf and the AOF)."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="courier-py-cluster-")
        self.ports = [_free_port() for _ in range(3)]
        # The cluster bus on ports of its own (the default, port + 10000, may be taken).
        self.bus = [_free_port() for _ in range(3)]
        self.procs: List["subprocess.Popen[bytes]"] = [self._spawn(i) for i in range(3)]
        for p in self.ports:
            self._wait_ping(p)
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )
        self.wait_ok()

    def _spawn(self, i: int) -> "subprocess.Popen[bytes]":
        d = os.path.join(self.root, str(i))
        os.makedirs(d, exist_ok=True)
        return subprocess.Popen(
            ["redis-server", "--port", str(self.ports[i]), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-port", str(self.bus[i]), "--cluster-node-timeout", "1000",
             "--cluster-require-full-coverage", "no", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", d],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    @staticmethod
    def _wait_ping(port: int) -> None:
        deadline = time.time() + 10
        while "PONG" not in _cli(port, "ping"):
            assert time.time() < deadline, f"redis-server on {port} did not start"
            time.sleep(0.05)

    def wait_ok(self) -> None:
        deadline = time.time() + 30
        while not all("cluster_state:ok" in _cli(p, "cluster", "info") for p in self.ports):
            assert time.time() < deadline, "the cluster did not become ok"
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return ",".join(f"redis://127.0.0.1:{p}/" for p in self.ports)

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()

    def restart(self, i: int) -> None:
        self.procs[i] = self._spawn(i)
        self._wait_ping(self.ports[i])

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        c.close()


def _instances(server_bin: str, cluster: Cluster, n: int) -> List[Server]:
    env = {
        "COURIER_BACKEND": "redis-cluster",
        "COURIER_REDIS_URL": cluster.url,
        "COURIER_REDIS__KEY_PREFIX": f"pytest-cluster-{os.getpid()}:",
    }
    return [start_server(server_bin, env) for _ in range(n)]


def test_a_master_killed_mid_stream_loses_and_duplicates_nothing_acknowledged(
    server_bin: str, cluster: Cluster
) -> None:
    a, b = _instances(server_bin, cluster, 2)
    channels = [f"spread.{i}" for i in range(12)]  # over all three masters
    token = make_token("svc-cluster")
    acked: Dict[str, List[int]] = {c: [] for c in channels}
    failed: List[str] = []
    retried: List[str] = []

    try:
        with CourierClient(b.url, token=token, service_name="sub") as sub_client, \
             CourierClient(a.url, token=token, service_name="pub") as pub:
            subs = [sub_client.subscribe(c) for c in channels]
            for s in subs:
                s.ready()

            def chaos() -> None:
                time.sleep(1.0)
                cluster.kill(1)
                time.sleep(2.5)
                cluster.restart(1)

            chaos_thread = threading.Thread(target=chaos)
            chaos_thread.start()
            n = 0
            # Publish through the outage and a little after it.
            while chaos_thread.is_alive() or n < 60:
                for c in channels:
                    try:
                        r = pub.publish(c, "custom.n", {"n": n}, idempotency_key=f"{c}-{n}")
                        acked[c].append(n)
                        if r.attempts > 1:
                            retried.append(r.id)
                    except Exception as e:  # noqa: BLE001 - reported below
                        failed.append(f"{c} {n}: {e!r}")
                n += 1
                time.sleep(0.02)
            chaos_thread.join()
            # The client retried through the outage: the events of the down master's slots
            # were refused (UNAVAILABLE, per event in a batch, or 503) and sent again.
            assert retried, "no publish needed a retry: the outage was not seen"
            assert failed == [], failed[:5]
            for s, c in zip(subs, channels):
                seen: List[int] = []
                while len(seen) < len(acked[c]):
                    # Bounded: an event that never comes fails the test, not the suite.
                    e = s.next(timeout=15)
                    assert e is not None, f"{c}: got {len(seen)} of {len(acked[c])}"
                    seen.append(e.data["n"])
                assert seen == acked[c], c
            # Nothing more: publishing each id again is a duplicate at its first offset.
            for c in channels[:3]:
                again = pub.publish(c, "custom.n", {"n": 0}, idempotency_key=f"{c}-0")
                assert again.duplicate and again.offset == 1, again
    finally:
        for server in (a, b):
            stop_server(server)
