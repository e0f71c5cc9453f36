"""Publish rate of a standard-tier user under the server's default rate limits, beside the
same with limits off, in the same run (Python SDK, default client options).

Two release servers run side by side: one at its defaults (limits on), one with
`COURIER_RATE_LIMITS__ENABLED=false`. The events are of an unlimited type (`custom.bench`:
no row of the type table, so the user's fallback bucket, 300 a minute with a burst of 300,
and the user bucket, 600): a client that mirrors the server's buckets sends them as fast as
with limits off. Each user publishes 250 events (within the burst), so every user is a fresh
`sub`; a round is USERS users on each server, interleaved user by user (on, off, then off,
on, ...); the client is built and taught the table (one publish) before its timing starts.
"""
import asyncio
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import ROOT, ReleaseServer, jwt, median  # noqa: E402

VENV_PY = os.path.join(ROOT, ".venv", "bin", "python")
ROUNDS = 9
USERS = 8  # per round and server
EVENTS = 250  # per user, within the fallback burst (300) with the warm-up publish
CONCURRENCY = 64
EVENT_TYPE = "custom.bench"


def run():
    from common import sh

    sh("make --no-print-directory python-dev")
    sh("cargo build -q --release --locked -p courier-server")
    out = subprocess.run([VENV_PY, os.path.abspath(__file__), "--measure"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return section(json.loads(out.strip().splitlines()[-1]))


def section(r):
    ok = lambda v: "meets" if v >= 0.9 else "MISSES"  # noqa: E731
    rows = []
    for key, label in (("sequential", "sequential (`CourierClient.publish` in a loop)"),
                       ("concurrent", f"{CONCURRENCY} concurrent (`await AsyncCourierClient.publish`)")):
        m = r[key]
        rows.append(
            f"| {label} | {m['off']:,.0f} | {m['on']:,.0f} | **{m['ratio']:.2f}** "
            f"({', '.join(f'{x:.2f}' for x in m['ratios'])}) | {ok(m['ratio'])} | {m['waits']} / {m['retries']} |"
        )
    return (
        "## Python: publish rate under the default rate limits (standard tier)\n\n"
        "Command: `make bench` (`tests/bench/bench_limits.py`). Two release `courier-server`s "
        "side by side on 127.0.0.1, one at its defaults (rate limits on), one with "
        "`COURIER_RATE_LIMITS__ENABLED=false`; a `user` token of tier `standard`; events of the "
        f"unlimited type `{EVENT_TYPE}` (the user's fallback bucket: 300 a minute, burst 300). "
        f"Each user publishes {EVENTS} events (within the burst), so each is a fresh `sub`; a round "
        f"is {USERS} users on each server, interleaved user by user (on, off, then off, on, …) so "
        "both sides meet the same moments of a noisy machine; the client is "
        "built and has made one publish (it knows the server's table) before the timing starts. "
        f"{ROUNDS} rounds; rates are medians, the ratio is the median of the rounds' ratios (all "
        "listed).\n\n"
        "| publishing | limits off, events/s | default limits, events/s | on / off | target ≥ 0.90 | client waits / retries (limits on) |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


# --- measurement (runs in the project's .venv) ---------------------------------------------

RUN = f"{os.getpid()}-{time.time_ns()}"


def user_token(sub):
    return jwt({"sub": sub, "role": "user", "tier": "standard", "publish": ["backtest.*"]})


def sequential_user(url, sub):
    """(seconds publishing EVENTS, stats) for one fresh user, the blocking client."""
    from courier_client import CourierClient

    with CourierClient(url, token=user_token(sub), service_name="bench") as client:
        client.publish("backtest.limits-s", EVENT_TYPE, {"warm": True})
        start = time.perf_counter()
        for i in range(EVENTS):
            client.publish("backtest.limits-s", EVENT_TYPE, {"i": i})
        took = time.perf_counter() - start
        return took, client.stats()


async def concurrent_user(url, sub):
    """(seconds publishing EVENTS, stats) for one fresh user, CONCURRENCY async publishers."""
    from courier_client import AsyncCourierClient

    async with AsyncCourierClient(url, token=user_token(sub), service_name="bench") as client:
        await client.publish("backtest.limits-c", EVENT_TYPE, {"warm": True})
        counter = iter(range(EVENTS))

        async def worker():
            for i in counter:
                await client.publish("backtest.limits-c", EVENT_TYPE, {"i": i})

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        took = time.perf_counter() - start
        return took, client.stats()


def one_user(kind, url, sub):
    """(seconds publishing EVENTS, stats) for one fresh user."""
    if kind == "sequential":
        return sequential_user(url, sub)
    return asyncio.run(concurrent_user(url, sub))


def one_round(kind, on, off, tag):
    """USERS fresh users on each server, interleaved (on, off, then off, on, ...) so both
    sides see the same moments of a noisy machine: ({"on": events/s, "off": events/s},
    client waits and retries with limits on)."""
    seconds = {"on": 0.0, "off": 0.0}
    waits = retries = 0
    for u in range(USERS):
        pair = [("on", on), ("off", off)] if u % 2 == 0 else [("off", off), ("on", on)]
        for name, server in pair:
            took, stats = one_user(kind, server.url, f"bench-{RUN}-{tag}-{kind}-{name}-{u}")
            seconds[name] += took
            if name == "on":
                waits += stats.rate_limit_waits
                retries += stats.retries
    return {name: USERS * EVENTS / s for name, s in seconds.items()}, waits, retries


def measure():
    out = {}
    with ReleaseServer() as on, ReleaseServer(COURIER_RATE_LIMITS__ENABLED="false") as off:
        for kind in ("sequential", "concurrent"):
            rates = {"on": [], "off": []}
            waits = retries = 0
            one_round(kind, on, off, "warm")  # warm-up: both servers and the client library
            for k in range(ROUNDS):
                r, w, rt = one_round(kind, on, off, f"r{k}")
                for name in rates:
                    rates[name].append(r[name])
                waits += w
                retries += rt
            ratios = [a / b for a, b in zip(rates["on"], rates["off"])]
            out[kind] = {"on": median(rates["on"]), "off": median(rates["off"]), "ratio": median(ratios),
                         "ratios": ratios, "waits": waits, "retries": retries,
                         "on_rounds": rates["on"], "off_rounds": rates["off"]}
    print(json.dumps(out))


if __name__ == "__main__":
    if "--measure" in sys.argv:
        measure()
