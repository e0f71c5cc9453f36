"""Issue #6 part 2: the example dashboard in headless Chromium. A Python backtest publishes
to it; progress reaches 100 %, the trades appear, and the badge shows the reconnect after the
server drops every connection mid-run. The screenshot is kept in tests/artifacts/e2e/."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

from conftest import ARTIFACTS, NODE, PYTHON, ROOT, SCENARIO, Server, free_port, log, token


def test_dashboard_shows_progress_trades_and_the_reconnect(server_bin: str) -> None:
    server = Server(server_bin, free_port(), SCENARIO["server_env"], "dashboard-server")
    server.start()
    shot = os.path.join(ARTIFACTS, "dashboard.png")
    if os.path.exists(shot):
        os.remove(shot)
    viewer = token("dashboard-viewer", role="user", channels=["backtest.*"])
    serve = subprocess.Popen([NODE, os.path.join(ROOT, "examples", "browser-dashboard", "serve.mjs"), "--ws", server.ws_url,
                              "--token", viewer, "--channel", "backtest.e2e-dashboard"], stdout=subprocess.PIPE, cwd=ROOT)
    driver = None
    publisher = None
    try:
        assert serve.stdout is not None
        line = serve.stdout.readline().decode()
        assert line.startswith("dashboard at "), f"serve.mjs said {line!r}"
        url = line.split()[-1]
        driver = subprocess.Popen([NODE, os.path.join(ROOT, "tests", "e2e", "dashboard.mjs"), url, server.url, shot],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        assert driver.stdout is not None
        ready = driver.stdout.readline().decode().strip()
        assert ready == "ready", f"the dashboard did not connect: {ready!r} {driver.stderr.read().decode() if ready == '' else ''}"
        t = time.monotonic()
        publisher = subprocess.run(
            [PYTHON, os.path.join(ROOT, "examples", "python-publisher", "publisher.py"), "--url", server.url,
             "--token", token("dashboard-backtester"), "--channel", "backtest.e2e-dashboard", "--runs", "1", "--step-ms", "80"],
            capture_output=True, timeout=90, cwd=ROOT,
        )
        assert publisher.returncode == 0, publisher.stderr.decode()[-2000:]
        m = re.search(r"done, (\d+) trades; acknowledged (\d+), dead letters (\d+)", publisher.stdout.decode())
        assert m, publisher.stdout.decode()
        trades, acked, dead = map(int, m.groups())
        dropped = driver.stdout.readline().decode().strip()
        result = json.loads(driver.stdout.readline().decode() or "{}")
        driver.wait(timeout=30)
    finally:
        for p in (driver, serve):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        server.stop()
    log(f"dashboard: backtest with {trades} trades ({acked} events acknowledged, {dead} dead) in "
        f"{time.monotonic() - t:.1f} s; {dropped}; page shows {result}")
    assert "failed" not in result, f"the dashboard did not get there: {result}"
    assert dropped.startswith("dropped ") and int(dropped.split()[1]) >= 1, f"the drop cut nothing: {dropped!r}"
    assert dead == 0, f"the publisher dead-lettered {dead} events"
    assert result["percents"] == [100.0] and result["done"] == 1, f"progress did not reach 100 %: {result}"
    assert result["trade_count"] == trades and result["trade_rows"] == min(trades, 25), (
        f"the publisher executed {trades} trades, the page shows {result['trade_count']} ({result['trade_rows']} rows)")
    assert result["badge"]["state"] == "connected" and result["badge"]["reconnects"] >= 1, (
        f"the badge does not show the reconnect: {result['badge']}")
    assert "reconnected" in result["badge"]["text"], result["badge"]
    assert result["stats"]["gaps"] == 0 and result["stats"]["reconnects"] >= 1, result["stats"]
    assert not result["errors"], f"the page logged errors: {result['errors']}"
    assert os.path.getsize(shot) > 10_000, "the screenshot is missing or empty"
