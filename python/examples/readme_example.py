"""The README's Python example: run with COURIER_URL and COURIER_TOKEN set."""

import os

from courier_client import CourierClient

jwt = os.environ["COURIER_TOKEN"]
url = os.environ.get("COURIER_URL", "http://127.0.0.1:8766")

with CourierClient(url, token=jwt, service_name="backtester") as client:
    ack = client.publish("backtest.abc", "backtest.progress", {"backtest_id": "abc", "percent": 42.5})
    print(ack.offset)
