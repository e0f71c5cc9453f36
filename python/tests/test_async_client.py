"""AsyncCourierClient against the real reference server."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import List

import pytest

from courier_client import (
    AsyncCourierClient,
    CourierError,
    EventToPublish,
    ForbiddenChannelError,
    RateLimitedError,
    UsageError,
    ValidationError,
)

from conftest import (
    LIMITED_BURST,
    LIMITED_REFILL_S,
    LIMITED_TYPE,
    UNLIMITED_TYPE,
    Server,
    assert_none_refused,
    make_token,
)


def progress(bid: str, percent: float) -> dict:
    return {"backtest_id": bid, "percent": percent}


async def take(sub, n: int, timeout: float = 10.0) -> list:
    out = []

    async def run() -> None:
        async for event in sub:
            out.append(event)
            if len(out) == n:
                return

    await asyncio.wait_for(run(), timeout)
    return out


async def nothing_more(sub, within: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(sub.__anext__(), within)
        return False
    except asyncio.TimeoutError:
        return True


async def test_publish_and_receive(server: Server, token: str) -> None:
    async with AsyncCourierClient(server.url, token=token, service_name="backtester") as client:
        sub = client.subscribe("backtest.a1")
        await sub.ready(timeout=10)
        acks = [await client.publish("backtest.a1", "backtest.progress", progress("a1", p)) for p in (10, 20, 30)]
        assert [a.offset for a in acks] == [1, 2, 3]
        assert all(not a.duplicate and a.attempts == 1 and a.channel == "backtest.a1" for a in acks)
        many = await client.publish_many(
            [EventToPublish("backtest.a1", "backtest.progress", progress("a1", 40), priority="high")]
            + [("backtest.a1", "backtest.progress", progress("a1", p)) for p in (50, 60)]
        )
        assert len(many) == 3
        events = await take(sub, 6)
        assert [e.offset for e in events] == [1, 2, 3, 4, 5, 6]
        assert events[0].data == progress("a1", 10)
        assert events[0].type == "backtest.progress"
        assert events[0].metadata["source"] == "backtester"
        assert events[0].id == acks[0].id
        assert sub.position is not None and sub.position.offset == 6
        stats = client.stats()
        assert stats.acknowledged == 6 and stats.dead == 0
        assert stats.queued == {"high": 0, "normal": 0, "low": 0}


async def test_invalid_input_fails_before_any_request(server: Server, token: str) -> None:
    async with AsyncCourierClient(server.url, token=token) as client:
        with pytest.raises(ValidationError) as e:
            await client.publish("backtest.a2", "backtest.progress", progress("a2", 150))
        assert e.value.field == "data.percent" and e.value.reason == "out_of_range"
        assert isinstance(e.value, ValueError) and isinstance(e.value, CourierError)
        with pytest.raises(ValidationError) as e:
            await client.publish("Not A Channel!", "backtest.progress", progress("a2", 1))
        assert e.value.field == "channel"
        with pytest.raises(ValidationError) as e:
            await client.publish("backtest.a2", "trade.executed", {"trade_id": "t", "symbol": "X", "side": "buy", "quantity": 1, "price": "1"})
        assert e.value.field == "data.quantity"
        with pytest.raises(ValidationError):
            await client.publish("backtest.a2", "custom.thing", {"x": {1, 2}})  # not JSON
        with pytest.raises(ValidationError):
            await client.publish("backtest.a2", "custom.thing", {}, priority="urgent")  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            await client.publish_many([("backtest.a2", "custom.ok", {}), ("backtest.a2", "Bad Type", {})])
        await client.flush(timeout=5)
    assert server.requests("/publish/batch") == [], "nothing may reach the server"


async def test_429_retry_after_is_honoured(server: Server, token: str) -> None:
    server.fault("fail", {"status": 429, "count": 1, "retry_after_secs": 2})
    async with AsyncCourierClient(server.url, token=token) as client:
        ack = await client.publish("backtest.a3", "backtest.progress", progress("a3", 1), timeout=20)
        assert ack.attempts == 2
        assert client.stats().rate_limit_waits >= 1
    log = server.requests("/publish/batch")
    refused = next(r for r in log if r["event"] == "finish" and r["status"] == 429)
    later = [r for r in log if r["event"] == "start" and r["at"] > refused["at"]]
    assert later, log
    # From the server's own clock: no request came before the Retry-After deadline.
    assert later[0]["at"] - refused["at"] >= 2.0 - 0.005, log


async def test_429_without_retry_raises_rate_limited_with_retry_after(server: Server, token: str) -> None:
    server.fault("fail", {"status": 429, "count": 1, "retry_after_secs": 3})
    async with AsyncCourierClient(server.url, token=token) as client:
        with pytest.raises(RateLimitedError) as e:
            await client.publish("backtest.a4", "custom.payment", {"amount": "1"}, retry=False)
        assert e.value.retry_after == 3.0
        assert e.value.status == 429
        dead = client.dead_letters()
        assert [d.code for d in dead] == ["RATE_LIMIT_EXCEEDED"]
        assert dead[0].data == {"amount": "1"}


async def test_503s_are_retried_with_the_same_id_and_delivered_once(server: Server, token: str) -> None:
    async with AsyncCourierClient(server.url, token=token) as client:
        sub = client.subscribe("backtest.a5")
        await sub.ready(timeout=10)
        server.fault("fail", {"status": 503, "count": 2})
        ack = await client.publish("backtest.a5", "backtest.progress", progress("a5", 5), idempotency_key="run-7.step-1", timeout=20)
        assert ack.id == "run-7.step-1" and ack.attempts == 3 and not ack.duplicate
        [event] = await take(sub, 1)
        assert event.id == "run-7.step-1"
        assert await nothing_more(sub)
        # The same key again is acknowledged as a duplicate and not delivered twice.
        again = await client.publish("backtest.a5", "backtest.progress", progress("a5", 5), idempotency_key="run-7.step-1")
        assert again.duplicate and again.offset == ack.offset
        assert await nothing_more(sub)
        assert client.stats().retries >= 2


async def test_dropped_connections_resume_without_loss_or_duplicates(server: Server, token: str) -> None:
    states: List[str] = []
    async with AsyncCourierClient(server.url, token=token, on_state_change=states.append) as client:
        sub = client.subscribe("backtest.a6")
        await sub.ready(timeout=10)

        async def publish(n: int) -> None:
            for i in range(n):
                await client.publish("backtest.a6", "backtest.progress", progress("a6", i))

        await publish(3)
        got = await take(sub, 3)
        server.fault("drop")
        await publish(4)
        server.fault("drop")
        await publish(3)
        got += await take(sub, 7)
        assert [e.offset for e in got] == list(range(1, 11))
        assert len({e.id for e in got}) == 10
        assert await nothing_more(sub)
        assert sub.gaps == []
        assert client.stats().reconnects >= 1
    assert "connected" in states and "disconnected" in states and states[-1] == "closed"


async def test_expired_token_asks_the_callable_again_and_the_stream_continues(server: Server) -> None:
    calls: List[int] = []

    async def get_token() -> str:
        calls.append(1)
        await asyncio.sleep(0)
        return make_token(ttl=2 if len(calls) == 1 else 3600)

    async with AsyncCourierClient(server.url, token=get_token) as client:
        sub = client.subscribe("backtest.a7")
        await sub.ready(timeout=10)
        await client.publish("backtest.a7", "backtest.progress", progress("a7", 1))
        first = await take(sub, 1)
        await asyncio.sleep(3.2)  # the first token is now expired
        await client.publish("backtest.a7", "backtest.progress", progress("a7", 2))
        second = await take(sub, 1)
        assert [e.offset for e in first + second] == [1, 2]
        assert len(calls) >= 2


async def test_forbidden_publish_is_a_dead_letter_with_its_reason(server: Server) -> None:
    user = make_token(sub="u1", role="user")
    async with AsyncCourierClient(server.url, token=user) as client:
        with pytest.raises(ForbiddenChannelError) as e:
            await client.publish("backtest.a8", "backtest.progress", progress("a8", 1))
        assert e.value.status == 403
        [dead] = client.dead_letters()
        assert dead.code == "FORBIDDEN_CHANNEL" and dead.channel == "backtest.a8" and dead.attempts == 1
        sub = client.subscribe("backtest.a8")
        with pytest.raises(ForbiddenChannelError):
            await take(sub, 1)


async def test_logs_go_to_the_courier_client_logger(server: Server, token: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="courier_client")
    async with AsyncCourierClient(server.url, token=token) as client:
        await client.publish("backtest.a9", "custom.thing", {"k": 1})
    await asyncio.sleep(0.1)
    records = [r for r in caplog.records if r.name == "courier_client"]
    assert any("batch" in r.getMessage() for r in records), [r.getMessage() for r in records]


async def test_a_slow_subscription_is_paused_and_resumed_without_loss(server: Server, token: str) -> None:
    # At most 8 unread events are held; the other 192 come back from history as the
    # application reads.
    async with AsyncCourierClient(server.url, token=token, subscription_buffer=8) as client:
        sub = client.subscribe("backtest.a-slow")
        await sub.ready(timeout=10)
        await client.publish_many([("backtest.a-slow", "backtest.progress", progress("slow", i % 100)) for i in range(200)])
        await asyncio.sleep(0.2)
        got = await take(sub, 200)
        assert [e.offset for e in got] == list(range(1, 201))
        assert sub.gaps == []
        assert await nothing_more(sub)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
async def test_subscription_buffer_must_be_a_positive_int(server: Server, token: str, bad: object) -> None:
    with pytest.raises(ValueError, match="subscription_buffer"):
        AsyncCourierClient(server.url, token=token, subscription_buffer=bad)


async def test_a_cancelled_publish_withdraws_its_event_if_it_was_not_sent(server: Server) -> None:
    # One request at a time, the token held back: the events wait in the queue (the core
    # sends nothing before it has a token); the second is withdrawn when its publish is
    # cancelled, the first stays.
    gate = asyncio.Event()

    async def get_token() -> str:
        await gate.wait()
        return make_token()

    async with AsyncCourierClient(server.url, token=get_token, max_in_flight=1, max_batch_events=1) as client:
        first = asyncio.create_task(client.publish("backtest.a-cancel", "backtest.progress", progress("c", 1)))
        await asyncio.sleep(0.1)
        second = asyncio.create_task(client.publish("backtest.a-cancel", "backtest.progress", progress("c", 2)))
        await asyncio.sleep(0.1)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert client.stats().queued_normal == 1
        with pytest.raises(CourierError, match="no acknowledgement"):
            await client.publish("backtest.a-cancel", "backtest.progress", progress("c", 3), timeout=0.2)
        assert client.stats().queued_normal == 1, "a timed-out unsent publish is withdrawn too"
        gate.set()
        assert (await first).offset == 1
        fourth = await client.publish("backtest.a-cancel", "backtest.progress", progress("c", 4))
        assert fourth.offset == 2, "the withdrawn events never took an offset"
        assert client.stats().acknowledged == 2


# --- the client-side limiter against the server's default limits --------------------------
# Margins: "at once" is asserted as a fraction of the bucket's refill interval (a client
# that waited for the bucket at all would take at least one interval), "when it refills"
# with 1.5 s of slack for a loaded machine.


async def test_a_limited_burst_goes_out_at_once_and_an_unlimited_type_is_not_held_behind_it(server: Server) -> None:
    sub = "py-async-burst"
    user = make_token(sub=sub, role="user", publish=["backtest.*"], tier="standard")
    async with AsyncCourierClient(server.url, token=user) as client:
        started = time.monotonic()
        for i in range(LIMITED_BURST["standard"]):
            ack = await client.publish("backtest.limits", LIMITED_TYPE, {"amount": str(i)})
            assert ack.attempts == 1
        burst = time.monotonic() - started
        assert client.stats().rate_limit_waits == 0, "the whole burst went out without a wait"
        # Any wait for the deposit bucket lasts a refill interval (12 s).
        assert burst < LIMITED_REFILL_S["standard"] / 2, f"5 publishes took {burst:.2f} s"
        # The deposit bucket is now empty for 12 s; the fallback bucket is almost full.
        started = time.monotonic()
        ack = await client.publish("backtest.limits", UNLIMITED_TYPE, {"n": 1})
        took = time.monotonic() - started
        assert took < 1.0, f"an unlimited type waited {took:.2f} s behind the deposit bucket"
        assert ack.attempts == 1 and client.stats().rate_limit_waits == 0
    assert_none_refused(server.publish_requests(sub))


async def test_an_exhausted_bucket_holds_its_event_until_it_refills_not_later(server: Server) -> None:
    # Premium: 25 deposits back to back, then one every 2.4 s (standard would take 12 s).
    sub = "py-async-refill"
    user = make_token(sub=sub, role="user", publish=["backtest.*"], tier="premium")
    async with AsyncCourierClient(server.url, token=user) as client:
        for i in range(LIMITED_BURST["premium"]):
            await client.publish("backtest.limits", LIMITED_TYPE, {"amount": str(i)})
        assert client.stats().rate_limit_waits == 0, "the whole burst went out without a wait"
        ack = await client.publish("backtest.limits", LIMITED_TYPE, {"amount": "held"}, timeout=30)
        acked_at = time.time()
        assert ack.attempts == 1, "sent once: when the bucket had refilled"
        assert client.stats().rate_limit_waits >= 1, "the client held it"
    records = server.publish_requests(sub)
    assert_none_refused(records)
    assert len(records) == LIMITED_BURST["premium"] + 1, "one request per event, none repeated"
    # The server's bucket gives one back a refill interval after the burst's first event,
    # as long as each burst event came within an interval of the one before (it did).
    refill = records[0]["at_ms"] / 1000 + LIMITED_REFILL_S["premium"]
    assert records[-1]["at_ms"] / 1000 >= refill - 0.05, "not sent before the refill"
    assert acked_at <= refill + 1.5, f"acked {acked_at - refill:.2f} s after the refill"


async def test_a_ws_url_is_accepted(server: Server, token: str) -> None:
    for url in (f"ws://{server.addr}", f"ws://{server.addr}/ws"):
        async with AsyncCourierClient(url, token=token) as client:
            channel = "backtest.a-ws1" if url.endswith("/ws") else "backtest.a-ws0"
            sub = client.subscribe(channel)
            await sub.ready(timeout=10)
            ack = await client.publish(channel, "backtest.progress", progress("ws", 1))
            assert [e.offset for e in await take(sub, 1)] == [ack.offset]


async def test_two_subscriptions_on_one_channel_both_receive(server: Server, token: str) -> None:
    async with AsyncCourierClient(server.url, token=token) as client:
        first = client.subscribe("backtest.a-twice")
        await first.ready(timeout=10)
        second = client.subscribe("backtest.a-twice")
        await second.ready(timeout=10)
        await client.publish_many([("backtest.a-twice", "backtest.progress", progress("t", p)) for p in (1, 2, 3)])
        assert [e.offset for e in await take(first, 3)] == [1, 2, 3]
        assert [e.offset for e in await take(second, 3)] == [1, 2, 3]
        assert first.position is not None
        with pytest.raises(UsageError) as e:
            client.subscribe("backtest.a-twice", since=(first.position.epoch, 1))
        assert e.value.code == "ALREADY_SUBSCRIBED"
        assert client.stats().channels == 1


def json_bytes(events: list) -> int:
    """The bytes of the events' `data` as compact JSON: a lower bound of what their frames carried."""
    return sum(len(json.dumps(e.data, separators=(",", ":")).encode()) for e in events)


async def test_stats_count_the_websocket_bytes_on_the_wire_across_reconnects(server: Server, token: str) -> None:
    # The server runs its defaults (compression on); the native client does not offer deflate,
    # so the wire carries at least the JSON.
    async with AsyncCourierClient(server.url, token=token) as client:
        stats = client.stats()
        assert (stats.wire_bytes_received, stats.wire_bytes_sent) == (0, 0), "no socket yet"
        sub = client.subscribe("backtest.wire")
        await sub.ready(timeout=10)
        ready = client.stats()
        assert ready.wire_bytes_received is not None and ready.wire_bytes_received > 0
        assert ready.wire_bytes_sent is not None and ready.wire_bytes_sent > 0

        async def publish(start: int) -> None:
            for i in range(start, start + 20):
                await client.publish("backtest.wire", "backtest.progress", progress("wire-bytes-wire-bytes", i))

        await publish(0)
        payload = json_bytes(await take(sub, 20))
        first = client.stats().wire_bytes_received
        assert first is not None and first >= ready.wire_bytes_received + payload

        server.fault("drop")
        await publish(20)
        payload = json_bytes(await take(sub, 20))
        after = client.stats()
        assert after.reconnects >= 1
        assert after.wire_bytes_received is not None and after.wire_bytes_sent is not None
        assert after.wire_bytes_received >= first + payload, "cumulative across the reconnect"
        assert after.wire_bytes_sent > ready.wire_bytes_sent, "the new upgrade and resubscribe"
