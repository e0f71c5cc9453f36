"""History stores: append throughput and the latency of a 100-event replay page
(`GET /history/{channel}`) at 1,000,000 events held in one channel, on memory, Redis and
PostgreSQL in the same run.

Redis is started by bench_redis's `start_redis` (AOF, `appendfsync everysec`); PostgreSQL by
tests/with-postgres.sh (a throwaway cluster, `fsync=off`, on loopback).
"""
import json
import shutil

from bench_redis import redis_version, start_redis
import os

from common import ROOT, cpu_model, sh

STORED = 1_000_000
CMD = "target/release/history_replay"


def load(cmd):
    out = sh(cmd, capture_output=True).stdout.strip().splitlines()
    return json.loads(out[-1])


def run():
    sh("cargo build --release -p courier-bench --bin history_replay")
    rows = [load(f"{CMD} --backend memory --stored {STORED}")]
    proc, port, workdir = start_redis()
    try:
        rows.append(load(f"{CMD} --backend redis --url redis://127.0.0.1:{port}/ --stored {STORED}"))
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    rows.append(load(f"tests/with-postgres.sh bash -c '{CMD} --backend postgres --url "
                     f"\"$COURIER_POSTGRES_URL\" --stored {STORED}'"))
    pg = sh("ls /usr/lib/postgresql", capture_output=True).stdout.split()

    def row(r):
        return (f"| {r['backend']} | {r['append_per_sec']:,.0f} | "
                f"{r['forward']['p50_ms']:.2f} / {r['forward']['p99_ms']:.2f} ms | "
                f"{r['backward']['p50_ms']:.2f} / {r['backward']['p99_ms']:.2f} ms |\n")

    return (
        "## History: append and replay pages on memory, Redis and PostgreSQL\n\n"
        f"Command: `{CMD} --backend memory|redis|postgres [--url …] --stored {STORED}` "
        f"(Redis {redis_version()}, AOF `appendfsync everysec`; PostgreSQL {pg[-1] if pg else '?'} "
        "from tests/with-postgres.sh, `fsync=off`). The server runs in the bench's process, "
        "rate limits off. Append: 8 tasks appending to 8 channels straight into the history store "
        "for 5 s (one event per call: PostgreSQL one statement, Redis one script). Replay: "
        f"{STORED:,} events held in one channel (PostgreSQL filled by one `INSERT … SELECT "
        "generate_series`), then 1,000 `GET /history/bench.replay?after=R&limit=100` (and "
        "`before=R`) at random offsets, one at a time, timed to the whole JSON body.\n\n"
        "| backend | appends/s | 100-event page forwards p50 / p99 | backwards p50 / p99 |\n"
        "|---|---|---|---|\n"
        + "".join(row(r) for r in rows)
        + f"\nMachine: {cpu_model()}; 1-minute load average after the run: {os.getloadavg()[0]:.1f}.\n"
    )
