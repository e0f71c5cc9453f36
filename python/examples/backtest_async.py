"""A simulated backtest publishing typed progress events with asyncio, and a subscriber
reading them back. Run with COURIER_URL and COURIER_TOKEN set."""

from __future__ import annotations

import asyncio
import os
from typing import List

from courier_client import AsyncCourierClient, CourierError, PublishResult, RateLimitedError
from courier_client.events import BacktestCompleted, BacktestProgress, BacktestStarted


async def token() -> str:
    return os.environ["COURIER_TOKEN"]


async def main() -> None:
    url = os.environ.get("COURIER_URL", "http://127.0.0.1:8766")
    async with AsyncCourierClient(url, token=token, service_name="backtester") as client:
        client.on_state_change(lambda state: print("connection:", state))
        sub = client.subscribe("backtest.demo")
        await sub.ready(timeout=10)
        started: BacktestStarted = {"backtest_id": "demo", "strategy_id": "s1", "symbols": ["AAPL"]}
        await client.publish("backtest.demo", "backtest.started", started, priority="high")
        acks: List[PublishResult] = []
        for i in range(1, 5):
            step: BacktestProgress = {"backtest_id": "demo", "percent": i * 25.0, "processed": i, "total": 4}
            try:
                acks.append(await client.publish("backtest.demo", "backtest.progress", step))
            except RateLimitedError as e:
                print("rate limited; retry after", e.retry_after)
            except CourierError as e:
                print("failed:", e.code, e.message)
        done: BacktestCompleted = {"backtest_id": "demo", "total_return": "0.125", "trades": 42}
        await client.publish("backtest.demo", "backtest.completed", done)
        await client.flush(timeout=10)
        received = 0
        async for event in sub:
            print(event.offset, event.type, event.data)
            received += 1
            if received == 6:
                break
        stats = client.stats()
        print("acknowledged:", stats.acknowledged, "queued:", stats.queued, "dead:", len(client.dead_letters()))


if __name__ == "__main__":
    asyncio.run(main())
