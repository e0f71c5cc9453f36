"""A simulated backtest publishing typed events to Courier.

`backtest.started`, then `backtest.progress` from 0 to 100 % with `trade.executed` events
along the way, then `backtest.completed`. The SDK batches, retries with the same idempotency
ids, honours Retry-After and reconnects; this script only says what happened.

    python publisher.py --url http://127.0.0.1:8766 --token "$JWT" [--runs N] [--step-ms 120]
"""

from __future__ import annotations

import argparse
import random
import time

from courier_client import CourierClient, CourierError
from courier_client.events import BacktestCompleted, BacktestProgress, BacktestStarted, TradeExecuted

SYMBOLS = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN"]


def run_backtest(client: CourierClient, channel: str, backtest_id: str, step_ms: int, rng: random.Random) -> int:
    started: BacktestStarted = {"backtest_id": backtest_id, "strategy_id": "momentum-v2", "symbols": SYMBOLS}
    client.publish(channel, "backtest.started", started, priority="high")
    trades = 0
    for step in range(0, 51):
        percent = step * 2.0
        progress: BacktestProgress = {
            "backtest_id": backtest_id,
            "percent": percent,
            "processed": step,
            "total": 50,
            "message": f"simulating day {step + 1} of 51",
        }
        client.publish(channel, "backtest.progress", progress)
        if rng.random() < 0.35:
            trades += 1
            trade: TradeExecuted = {
                "trade_id": f"{backtest_id}-t{trades}",
                "symbol": rng.choice(SYMBOLS),
                "side": rng.choice(["buy", "sell"]),
                "quantity": str(rng.randint(1, 50) * 10),
                "price": f"{rng.uniform(50, 900):.2f}",
                "executed_at": int(time.time() * 1000),
                "backtest_id": backtest_id,
            }
            client.publish(channel, "trade.executed", trade)
        time.sleep(step_ms / 1000)
    done: BacktestCompleted = {
        "backtest_id": backtest_id,
        "total_return": f"{rng.uniform(-0.05, 0.3):.4f}",
        "sharpe_ratio": round(rng.uniform(0.2, 2.5), 2),
        "trades": trades,
    }
    client.publish(channel, "backtest.completed", done, priority="high")
    return trades


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8766", help="the server's HTTP base URL")
    parser.add_argument("--token", required=True, help="a service JWT (courier-server token --role service)")
    parser.add_argument("--channel", default="backtest.demo")
    parser.add_argument("--runs", type=int, default=1, help="backtests to run, 0 for forever")
    parser.add_argument("--step-ms", type=int, default=120, help="pause between progress steps")
    args = parser.parse_args()
    rng = random.Random()
    with CourierClient(args.url, token=args.token, service_name="backtester") as client:
        run = 0
        while args.runs == 0 or run < args.runs:
            run += 1
            backtest_id = f"bt-{int(time.time())}-{run}"
            try:
                trades = run_backtest(client, args.channel, backtest_id, args.step_ms, rng)
            except CourierError as e:
                print(f"publisher: {e.code}: {e}")
                raise SystemExit(1)
            client.flush(timeout=30)
            stats = client.stats()
            print(
                f"publisher: {backtest_id} done, {trades} trades; acknowledged {stats.acknowledged}, "
                f"dead letters {len(client.dead_letters())}",
                flush=True,
            )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        # Ctrl-C: leaving the `with` block above already closed the client.
        print("publisher: stopped", flush=True)
