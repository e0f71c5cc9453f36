"""Python package: publish throughput of AsyncCourierClient against the reference server,
compared in the same run with a plain httpx.AsyncClient posting the same JSON."""
import asyncio
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV_PY = os.path.join(ROOT, ".venv", "bin", "python")
CONCURRENCY = 64
SECRET = "courier-bench"


def run():
    from common import sh

    sh("make --no-print-directory python-dev")
    sh("cargo build -q --release --locked -p courier-server")
    out = subprocess.run([VENV_PY, os.path.abspath(__file__), "--measure"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    base = r["httpx"]
    un, ba, many = r["client_unbatched"], r["client_batched"], r["client_publish_many"]
    ok = lambda v, t: "meets" if v >= t else "MISSES"  # noqa: E731
    return (
        "## Python: publish throughput (`courier_client.AsyncCourierClient`)\n\n"
        "Command: `make bench` (`tests/bench/bench_python.py`). One release `courier-server` on "
        "127.0.0.1 (rate limits off), the client in the same 2-core machine; "
        f"{CONCURRENCY} concurrent publishes in every case; `backtest.progress` events.\n\n"
        "| publisher | events | events/s | vs httpx |\n|---|---|---|---|\n"
        f"| httpx.AsyncClient, `POST /publish`, {CONCURRENCY} concurrent requests | {base['n']} | {base['rate']:,.0f} | 1.0× |\n"
        f"| `await client.publish(...)`, batching off (`max_batch_events=1`) | {un['n']} | {un['rate']:,.0f} | {un['rate'] / base['rate']:.1f}× |\n"
        f"| `await client.publish(...)`, batching on (defaults: ≤100 events, 2 ms linger) | {ba['n']} | {ba['rate']:,.0f} | {ba['rate'] / base['rate']:.1f}× |\n"
        f"| `await client.publish_many(...)` of 100 events | {many['n']} | {many['rate']:,.0f} | {many['rate'] / base['rate']:.1f}× |\n\n"
        f"Targets: unbatched ≥ 1.5× httpx: {ok(un['rate'] / base['rate'], 1.5)}; "
        f"batched ≥ 5× httpx: {ok(ba['rate'] / base['rate'], 5)}.\n"
    )


# --- measurement (runs in the project's .venv) ---------------------------------------------


def token():
    import base64
    import hashlib
    import hmac

    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "bench", "role": "service", "exp": now + 3600, "iat": now}).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def data(i):
    return {"backtest_id": "bench", "percent": (i % 1000) / 10, "processed": i, "total": 100000,
            "message": "simulated bar processed"}


async def workers(n, fn):
    counter = iter(range(n))

    async def worker():
        for i in counter:
            await fn(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - start


async def bench_httpx(url, tok, n):
    import httpx

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, limits=limits, headers={"authorization": f"Bearer {tok}"}) as http:
        async def one(i):
            body = {"id": f"httpx-{i}-{time.time_ns()}", "type": "backtest.progress", "channel": "backtest.bench-h",
                    "data": data(i), "metadata": {"timestamp": int(time.time() * 1000), "source": "bench"}}
            r = await http.post("/publish", content=json.dumps(body), headers={"content-type": "application/json"})
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
    env = dict({k: v for k, v in os.environ.items() if not k.startswith("COURIER_")}, COURIER_JWT_SECRET=SECRET, COURIER_RATE_LIMITS__ENABLED="false", COURIER_LOG_LEVEL="warn",
               COURIER_HISTORY__MAX_EVENTS_PER_CHANNEL="1000")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    proc = subprocess.Popen([os.path.join(target, "release", "courier-server"), "serve", "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        addr = proc.stdout.readline().decode().split()[-1]
        url = f"http://{addr}"
        tok = token()
        results = {}
        n_httpx = 5000
        results["httpx"] = {"n": n_httpx, "rate": asyncio.run(bench_httpx(url, tok, n_httpx))}
        results["client_unbatched"] = {"n": 10000, "rate": asyncio.run(bench_client(url, tok, 10000, max_batch_events=1, max_in_flight=64))}
        results["client_batched"] = {"n": 50000, "rate": asyncio.run(bench_client(url, tok, 50000))}
        results["client_publish_many"] = {"n": 50000, "rate": asyncio.run(bench_many(url, tok, 50000))}
        print(json.dumps(results))
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    if "--measure" in sys.argv:
        measure()
