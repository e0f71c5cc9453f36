"""The README's quickstart (python/README.md, the first block; tests/e2e/test_quickstarts.py
checks they are the same): run with COURIER_URL and COURIER_TOKEN set."""

import os

from courier_client import CourierClient

url = os.environ.get("COURIER_URL", "http://127.0.0.1:8766")
token = os.environ["COURIER_TOKEN"]
with CourierClient(url, token=token, service_name="backtester") as client:
    with client.subscribe("backtest.abc") as sub:
        sub.ready()  # confirmed by the server: what is published from now on arrives
        client.publish("backtest.abc", "backtest.progress", {"backtest_id": "abc", "percent": 42.5})
        event = next(sub)
        print("received", event.type, event.data)
