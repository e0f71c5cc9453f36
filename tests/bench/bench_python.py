"""Python package: publish throughput of the clients at their default options against the
reference server, beside hand-written HTTP loops in the same run: the blocking client
publishing sequentially against a `requests.Session` loop, 64 concurrent async publishers
against an aiohttp loop, and the older httpx comparison.

The machine is noisy (2 cores shared by the server, the client and whatever else runs):
each comparison alternates its two sides over several rounds (A B, B A, ...) and reports
the medians and the median of the rounds' ratios."""
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
CONCURRENCY = 64
ROUNDS = 5
SEQ_EVENTS = 2000  # per side and round, sequential
CONC_EVENTS = {"client": 20000, "aiohttp": 5000}  # per round, 64 concurrent


def run():
    from common import sh

    sh("make --no-print-directory python-dev")
    sh("cargo build -q --release --locked -p courier-server")
    out = subprocess.run([VENV_PY, os.path.abspath(__file__), "--measure"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return section(r)


def section(r):
    ok = lambda v, t: "meets" if v >= t else "MISSES"  # noqa: E731
    ratios = lambda rounds: ", ".join(f"{x:.2f}" for x in rounds)  # noqa: E731
    seq, conc = r["sequential"], r["concurrent"]
    base = r["httpx"]
    un, ba, many = r["client_unbatched"], r["client_batched"], r["client_publish_many"]
    return (
        "## Python: publish throughput (`courier_client`)\n\n"
        "Command: `make bench` (`tests/bench/bench_python.py`). One release `courier-server` on "
        "127.0.0.1 with rate limits off (this compares the clients' own cost; the limits' cost "
        "is the next section), the client in the same 2-core machine; `backtest.progress` "
        "events of ~150 bytes, the client at its default options. Each comparison alternates "
        f"its two sides over {ROUNDS} rounds; rates are medians, the ratio is the median of the "
        "rounds' ratios (all listed).\n\n"
        "| publisher | events per round | events/s (median) |\n|---|---|---|\n"
        f"| `requests.Session`, `POST /publish` in a loop | {SEQ_EVENTS} | {seq['base']:,.0f} |\n"
        f"| `CourierClient.publish(...)` in a loop (blocking client) | {SEQ_EVENTS} | {seq['client']:,.0f} |\n"
        f"| aiohttp `ClientSession`, `POST /publish`, {CONCURRENCY} concurrent workers | {CONC_EVENTS['aiohttp']} | {conc['base']:,.0f} |\n"
        f"| `await client.publish(...)`, {CONCURRENCY} concurrent workers (`AsyncCourierClient`) | {CONC_EVENTS['client']} | {conc['client']:,.0f} |\n\n"
        f"- sequential, blocking client / requests: **{seq['ratio']:.2f}×** "
        f"(rounds: {ratios(seq['ratios'])}); target ≥ 1.0×: {ok(seq['ratio'], 1.0)}.\n"
        f"- {CONCURRENCY} concurrent, async client / aiohttp: **{conc['ratio']:.2f}×** "
        f"(rounds: {ratios(conc['ratios'])}); target ≥ 3×: {ok(conc['ratio'], 3.0)}.\n\n"
        f"Beside httpx ({CONCURRENCY} concurrent publishes in every row; httpx itself runs at a few "
        "hundred requests/s here, so these ratios flatter the client: the rows above are the "
        "comparison that counts):\n\n"
        "| publisher | events | events/s | vs httpx |\n|---|---|---|---|\n"
        f"| httpx.AsyncClient, `POST /publish`, {CONCURRENCY} concurrent requests | {base['n']} | {base['rate']:,.0f} | 1.0× |\n"
        f"| `await client.publish(...)`, batching off (`max_batch_events=1`) | {un['n']} | {un['rate']:,.0f} | {un['rate'] / base['rate']:.1f}× |\n"
        f"| `await client.publish(...)`, defaults (batches of ≤100 while a request is in flight) | {ba['n']} | {ba['rate']:,.0f} | {ba['rate'] / base['rate']:.1f}× |\n"
        f"| `await client.publish_many(...)` of 100 events | {many['n']} | {many['rate']:,.0f} | {many['rate'] / base['rate']:.1f}× |\n\n"
        f"Targets: unbatched ≥ 1.5× httpx: {ok(un['rate'] / base['rate'], 1.5)}; "
        f"defaults ≥ 5× httpx: {ok(ba['rate'] / base['rate'], 5)}.\n"
    )


# --- measurement (runs in the project's .venv) ---------------------------------------------

RUN = f"{os.getpid()}-{time.time_ns()}"


def data(i):
    return {"backtest_id": "bench", "percent": (i % 1000) / 10, "processed": i, "total": 100000,
            "message": "simulated bar processed"}


def body(prefix, channel, i):
    """The JSON a hand-written publisher posts to `POST /publish`: the same event the client
    sends (a unique id, type, channel, data, metadata)."""
    return json.dumps({"id": f"{prefix}-{RUN}-{i}", "type": "backtest.progress", "channel": channel, "data": data(i),
                       "metadata": {"timestamp": int(time.time() * 1000), "source": "bench"}})


async def workers(n, fn, concurrency=CONCURRENCY):
    counter = iter(range(n))

    async def worker():
        for i in counter:
            await fn(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


def alternate(a, b, rounds=ROUNDS):
    """Runs `a()` and `b()` (each returning events/s) `rounds` times, alternating which goes
    first; {"client": median a, "base": median b, "ratio": median a/b, "ratios": [...]}."""
    ra, rb = [], []
    for k in range(rounds):
        if k % 2 == 0:
            ra.append(a())
            rb.append(b())
        else:
            rb.append(b())
            ra.append(a())
    ratios = [x / y for x, y in zip(ra, rb)]
    return {"client": median(ra), "base": median(rb), "ratio": median(ratios), "ratios": ratios,
            "client_rounds": ra, "base_rounds": rb}


# Sequential: the blocking client against requests.Session.

def sequential(url, tok):
    import requests
    from courier_client import CourierClient

    session = requests.Session()
    session.headers.update({"authorization": f"Bearer {tok}", "content-type": "application/json"})
    client = CourierClient(url, token=tok, service_name="bench")
    rounds = iter(range(10**9))

    def with_requests(n=SEQ_EVENTS):
        k = next(rounds)
        start = time.perf_counter()
        for i in range(n):
            r = session.post(f"{url}/publish", data=body(f"req-{k}", "backtest.bench-r", i))
            r.raise_for_status()
        return n / (time.perf_counter() - start)

    def with_client(n=SEQ_EVENTS):
        start = time.perf_counter()
        for i in range(n):
            client.publish("backtest.bench-s", "backtest.progress", data(i))
        return n / (time.perf_counter() - start)

    try:
        with_requests(200)  # warm-up: connections, caches
        with_client(200)
        return alternate(with_client, with_requests)
    finally:
        client.close()
        session.close()


# 64 concurrent: the async client against an aiohttp loop.

async def concurrent(url, tok):
    import aiohttp
    from courier_client import AsyncCourierClient

    rounds = iter(range(10**9))
    headers = {"authorization": f"Bearer {tok}", "content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http, \
            AsyncCourierClient(url, token=tok, service_name="bench") as client:
        async def with_aiohttp(n=CONC_EVENTS["aiohttp"]):
            k = next(rounds)

            async def one(i):
                async with http.post(f"{url}/publish", data=body(f"aio-{k}", "backtest.bench-a", i)) as r:
                    r.raise_for_status()
                    await r.read()

            return n / await workers(n, one)

        async def with_client(n=CONC_EVENTS["client"]):
            async def one(i):
                await client.publish("backtest.bench-c", "backtest.progress", data(i))

            return n / await workers(n, one)

        await with_aiohttp(500)
        await with_client(500)
        ra, rb = [], []
        for k in range(ROUNDS):
            pair = (with_client, with_aiohttp) if k % 2 == 0 else (with_aiohttp, with_client)
            first = await pair[0]()
            second = await pair[1]()
            a, b = (first, second) if k % 2 == 0 else (second, first)
            ra.append(a)
            rb.append(b)
    ratios = [x / y for x, y in zip(ra, rb)]
    return {"client": median(ra), "base": median(rb), "ratio": median(ratios), "ratios": ratios,
            "client_rounds": ra, "base_rounds": rb}


# The httpx comparison (64 concurrent in every row).

async def bench_httpx(url, tok, n):
    import httpx

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, limits=limits, headers={"authorization": f"Bearer {tok}"}) as http:
        async def one(i):
            r = await http.post("/publish", content=body("httpx", "backtest.bench-h", i),
                                headers={"content-type": "application/json"})
            r.raise_for_status()

        await workers(200, one)  # warm-up
        return n / await workers(n, one)


async def bench_client(url, tok, n, **options):
    from courier_client import AsyncCourierClient

    async with AsyncCourierClient(url, token=tok, service_name="bench", **options) as client:
        async def one(i):
            await client.publish("backtest.bench-c", "backtest.progress", data(i))

        await workers(200, one)
        return n / await workers(n, one)


async def bench_many(url, tok, n):
    from courier_client import AsyncCourierClient

    async with AsyncCourierClient(url, token=tok, service_name="bench") as client:
        async def one(i):
            await client.publish_many([("backtest.bench-m", "backtest.progress", data(i * 100 + k)) for k in range(100)])

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n // 100)))
        return n / (time.perf_counter() - start)


def measure():
    tok = jwt({"sub": "bench", "role": "service"})
    with ReleaseServer(COURIER_RATE_LIMITS__ENABLED="false") as server:
        url = server.url
        results = {
            "sequential": sequential(url, tok),
            "concurrent": asyncio.run(concurrent(url, tok)),
        }
        n_httpx = 5000
        results["httpx"] = {"n": n_httpx, "rate": asyncio.run(bench_httpx(url, tok, n_httpx))}
        results["client_unbatched"] = {"n": 10000, "rate": asyncio.run(bench_client(url, tok, 10000, max_batch_events=1, max_in_flight=64))}
        results["client_batched"] = {"n": 50000, "rate": asyncio.run(bench_client(url, tok, 50000))}
        results["client_publish_many"] = {"n": 50000, "rate": asyncio.run(bench_many(url, tok, 50000))}
        print(json.dumps(results))


if __name__ == "__main__":
    if "--measure" in sys.argv:
        measure()
