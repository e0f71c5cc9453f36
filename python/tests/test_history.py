"""history() of both clients against the real reference server: pages both ways, the same
``ReceivedEvent`` a subscription yields, cursors, ``since``, and typed errors."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import pytest

from courier_client import (
    AsyncCourierClient,
    CourierClient,
    ForbiddenChannelError,
    HistoryPage,
    ValidationError,
)

from conftest import Server, make_token


def progress(bid: str, percent: float) -> dict:
    return {"backtest_id": bid, "percent": percent}


async def test_async_history_pages_events_like_a_subscription(server: Server, token: str) -> None:
    async with AsyncCourierClient(server.url, token=token, service_name="hist") as client:
        sub = client.subscribe("hist.py")
        await sub.ready(timeout=10)
        await client.publish_many([("hist.py", "backtest.progress", progress("h", p)) for p in range(25)])
        live = []

        async def take() -> None:
            async for e in sub:
                live.append(e)
                if len(live) == 25:
                    return

        await asyncio.wait_for(take(), 10)
        # Pages of 10 forwards: 10, 10, 5; each page's `next` continues, the last has none.
        pages = [p async for p in client.history("hist.py", limit=10).pages()]
        assert [len(p.events) for p in pages] == [10, 10, 5]
        assert all(isinstance(p, HistoryPage) for p in pages)
        assert [p.next is None for p in pages] == [False, False, True]
        assert pages[0].latest == 25 and pages[0].epoch == live[0].epoch
        # The same values a subscription yields, in the same order.
        assert [e for p in pages for e in p.events] == live
        # Events one at a time, backwards.
        back = [e.offset async for e in client.history("hist.py", direction="backward", limit=7)]
        assert back == list(range(25, 0, -1))
        # `before`, `after` and a cursor from a page.
        assert [e.offset async for e in client.history("hist.py", before=4)] == [3, 2, 1]
        assert [e.offset async for e in client.history("hist.py", after=22)] == [23, 24, 25]
        cursor = pages[1].next
        assert cursor is not None
        assert [e.offset async for e in client.history("hist.py", cursor=cursor, limit=10)] == list(range(21, 26))
        # `since` as Unix ms or an aware datetime.
        cut = int(time.time() * 1000) + 50
        await asyncio.sleep(0.1)
        await client.publish("hist.py", "backtest.progress", progress("h", 99))
        assert [e.offset async for e in client.history("hist.py", since=cut)] == [26]
        when = datetime.fromtimestamp(cut / 1000, tz=timezone.utc)
        assert [e.offset async for e in client.history("hist.py", since=when)] == [26]


async def test_async_history_errors_are_typed(server: Server, token: str) -> None:
    async with AsyncCourierClient(server.url, token=token) as client:
        # Checked before any request, naming the argument.
        for kwargs, field in [
            ({"limit": 0}, "limit"),
            ({"limit": 1001}, "limit"),
            ({"limit": 2**40}, "limit"),
            ({"after": -1}, "after"),
            ({"before": 2**64}, "before"),
            ({"after": "3"}, "after"),
            ({"after": 1, "before": 5}, "before"),
            ({"after": 1, "direction": "backward"}, "direction"),
            ({"direction": "up"}, "direction"),
            ({"since": datetime(2026, 1, 1)}, "since"),
        ]:
            with pytest.raises(ValidationError) as err:
                client.history("hist.e", **kwargs)  # type: ignore[arg-type]
            assert err.value.field == field, (kwargs, err.value)
        with pytest.raises(ValidationError):
            client.history("bad..channel")
        # A cursor the server did not write: refused with the parameter named.
        with pytest.raises(Exception) as err:
            [e async for e in client.history("hist.e", cursor="not-a-cursor")]
        assert getattr(err.value, "field", None) == "cursor"
    reader = make_token("reader", role="user", channels=["other.*"])
    async with AsyncCourierClient(server.url, token=reader) as client:
        with pytest.raises(ForbiddenChannelError) as forbidden:
            [e async for e in client.history("hist.e")]
        assert forbidden.value.code == "FORBIDDEN_CHANNEL"
        assert forbidden.value.status == 403


def test_sync_history_iterates_events_and_pages(server: Server, token: str) -> None:
    with CourierClient(server.url, token=token, service_name="hist") as client:
        for p in range(12):
            client.publish("hist.sync", "backtest.progress", progress("s", p))
        events = list(client.history("hist.sync", limit=5))
        assert [e.offset for e in events] == list(range(1, 13))
        assert events[3].data == progress("s", 3) and events[3].type == "backtest.progress"
        pages = list(client.history("hist.sync", direction="backward", limit=5).pages())
        assert [[e.offset for e in p.events] for p in pages] == [
            [12, 11, 10, 9, 8],
            [7, 6, 5, 4, 3],
            [2, 1],
        ]
        with pytest.raises(ValidationError):
            client.history("hist.sync", limit=-1)
    reader = make_token("reader", role="user", channels=["other.*"])
    with CourierClient(server.url, token=reader) as client:
        with pytest.raises(ForbiddenChannelError):
            list(client.history("hist.sync"))
