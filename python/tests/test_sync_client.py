"""CourierClient (blocking) against the real reference server: the same scenarios, plus
Ctrl-C, the GIL and threads."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import List

import pytest

from courier_client import CourierClient, CourierTimeoutError, UsageError, ValidationError

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


def take(sub, n: int, timeout: float = 10.0) -> list:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(out)} of {n} events arrived"
        e = sub.next(timeout=left)
        if e is not None:
            out.append(e)
    return out


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_publish_and_receive(server: Server, token: str) -> None:
    with CourierClient(server.url, token=token, service_name="sync-svc") as client:
        sub = client.subscribe("backtest.s1")
        sub.ready(timeout=10)
        acks = [client.publish("backtest.s1", "backtest.progress", progress("s1", p)) for p in (1, 2)]
        results = client.publish_many([("backtest.s1", "backtest.progress", progress("s1", p)) for p in (3, 4, 5)])
        assert [a.offset for a in acks] + [r.offset for r in results] == [1, 2, 3, 4, 5]  # type: ignore[union-attr]
        events = take(sub, 5)
        assert [e.offset for e in events] == [1, 2, 3, 4, 5]
        assert events[4].data == progress("s1", 5) and events[0].metadata["source"] == "sync-svc"
        client.flush(timeout=5)
        assert client.stats().acknowledged == 5


def test_invalid_input_fails_before_any_request(server: Server, token: str) -> None:
    with CourierClient(server.url, token=token) as client:
        with pytest.raises(ValidationError) as e:
            client.publish("backtest.s2", "backtest.progress", {"percent": 5})
        assert e.value.field == "data.backtest_id" and e.value.reason == "missing"
        with pytest.raises(ValueError):
            client.publish("backtest.s2", "Bad Type", {})
    assert server.requests("/publish/batch") == []


def test_429_retry_after_is_honoured(server: Server, token: str) -> None:
    server.fault("fail", {"status": 429, "count": 1, "retry_after_secs": 1})
    with CourierClient(server.url, token=token) as client:
        ack = client.publish("backtest.s3", "backtest.progress", progress("s3", 1), timeout=20)
        assert ack.attempts == 2
    log = server.requests("/publish/batch")
    refused = next(r for r in log if r["event"] == "finish" and r["status"] == 429)
    later = [r for r in log if r["event"] == "start" and r["at"] > refused["at"]]
    assert later[0]["at"] - refused["at"] >= 1.0 - 0.005, log


def test_503s_are_retried_with_the_same_id_and_delivered_once(server: Server, token: str) -> None:
    with CourierClient(server.url, token=token) as client:
        sub = client.subscribe("backtest.s4")
        sub.ready(timeout=10)
        server.fault("fail", {"status": 503, "count": 3})
        ack = client.publish("backtest.s4", "backtest.progress", progress("s4", 1), timeout=20)
        assert ack.attempts == 4
        [event] = take(sub, 1)
        assert event.id == ack.id
        assert sub.next(timeout=0.3) is None, "delivered once"


def test_dropped_connections_resume_without_loss_or_duplicates(server: Server, token: str) -> None:
    with CourierClient(server.url, token=token) as client:
        sub = client.subscribe("backtest.s5")
        sub.ready(timeout=10)
        for i in range(2):
            client.publish("backtest.s5", "backtest.progress", progress("s5", i))
        got = take(sub, 2)
        server.fault("drop")
        for i in range(5):
            client.publish("backtest.s5", "backtest.progress", progress("s5", i))
        got += take(sub, 5)
        assert [e.offset for e in got] == list(range(1, 8))
        assert sub.next(timeout=0.3) is None
        assert client.stats().reconnects >= 1


def test_expired_token_asks_the_callable_again(server: Server) -> None:
    calls: List[int] = []

    def get_token() -> str:
        calls.append(1)
        return make_token(ttl=2 if len(calls) == 1 else 3600)

    with CourierClient(server.url, token=get_token) as client:
        sub = client.subscribe("backtest.s6")
        sub.ready(timeout=10)
        time.sleep(3.2)
        client.publish("backtest.s6", "backtest.progress", progress("s6", 1))
        [event] = take(sub, 1)
        assert event.offset == 1
        assert len(calls) >= 2


def test_close_leaves_no_threads_behind(server: Server, token: str) -> None:
    before = threads()
    client = CourierClient(server.url, token=token)
    sub = client.subscribe("backtest.s7")
    sub.ready(timeout=10)
    client.publish("backtest.s7", "custom.thing", {"a": 1})
    assert threads() > before
    client.close()
    deadline = time.monotonic() + 5
    while threads() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threads() == before


def test_ctrl_c_interrupts_a_blocking_call(server: Server, token: str) -> None:
    with CourierClient(server.url, token=token) as client:
        sub = client.subscribe("backtest.s8")
        sub.ready(timeout=10)
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        started = time.monotonic()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            sub.next()  # would block forever
        assert time.monotonic() - started < 2.0


def test_the_gil_is_released_while_waiting(server: Server, token: str) -> None:
    with CourierClient(server.url, token=token) as client:
        sub = client.subscribe("backtest.s9")
        sub.ready(timeout=10)
        waiter = threading.Thread(target=sub.next, kwargs={"timeout": 1.0})
        waiter.start()
        time.sleep(0.05)
        started = time.monotonic()
        count = 0
        while time.monotonic() - started < 0.3:
            count += 1
        waiter.join()
        # With the GIL held by the waiting thread this loop would barely run.
        assert count > 10_000


def test_timeouts_are_timeout_errors(server: Server, token: str) -> None:
    server.fault("delay", {"delay_ms": 1500, "count": 1})
    with CourierClient(server.url, token=token) as client:
        with pytest.raises(TimeoutError) as e:
            client.publish("backtest.s10", "custom.thing", {}, timeout=0.2)
        assert isinstance(e.value, CourierTimeoutError)


def test_a_timed_out_publish_withdraws_its_event_if_it_was_not_sent(server: Server) -> None:
    gate = threading.Event()

    def get_token() -> str:
        gate.wait(10)
        return make_token()

    with CourierClient(server.url, token=get_token, max_in_flight=1, max_batch_events=1) as client:
        first: List[int] = []
        t = threading.Thread(
            target=lambda: first.append(client.publish("backtest.s-cancel", "backtest.progress", {"backtest_id": "c", "percent": 1}).offset)
        )
        t.start()
        time.sleep(0.1)
        with pytest.raises(CourierTimeoutError):
            client.publish("backtest.s-cancel", "backtest.progress", {"backtest_id": "c", "percent": 2}, timeout=0.2)
        # The core sends nothing before it has a token: the first still waits in the queue.
        assert client.stats().queued_normal == 1, "the second withdrawn"
        gate.set()
        t.join(10)
        assert first == [1]
        again = client.publish("backtest.s-cancel", "backtest.progress", {"backtest_id": "c", "percent": 3})
        assert again.offset == 2, "the withdrawn event never took an offset"


# --- the client-side limiter against the server's default limits --------------------------
# The same scenarios as the async suite (margins explained there).


def test_a_limited_burst_goes_out_at_once_and_an_unlimited_type_is_not_held_behind_it(server: Server) -> None:
    sub = "py-sync-burst"
    user = make_token(sub=sub, role="user", publish=["backtest.*"], tier="standard")
    with CourierClient(server.url, token=user) as client:
        started = time.monotonic()
        for i in range(LIMITED_BURST["standard"]):
            ack = client.publish("backtest.limits", LIMITED_TYPE, {"amount": str(i)})
            assert ack.attempts == 1
        burst = time.monotonic() - started
        assert client.stats().rate_limit_waits == 0, "the whole burst went out without a wait"
        assert burst < LIMITED_REFILL_S["standard"] / 2, f"5 publishes took {burst:.2f} s"
        started = time.monotonic()
        ack = client.publish("backtest.limits", UNLIMITED_TYPE, {"n": 1})
        took = time.monotonic() - started
        assert took < 1.0, f"an unlimited type waited {took:.2f} s behind the deposit bucket"
        assert ack.attempts == 1 and client.stats().rate_limit_waits == 0
    assert_none_refused(server.publish_requests(sub))


def test_an_exhausted_bucket_holds_its_event_until_it_refills_not_later(server: Server) -> None:
    sub = "py-sync-refill"
    user = make_token(sub=sub, role="user", publish=["backtest.*"], tier="premium")
    with CourierClient(server.url, token=user) as client:
        for i in range(LIMITED_BURST["premium"]):
            client.publish("backtest.limits", LIMITED_TYPE, {"amount": str(i)})
        assert client.stats().rate_limit_waits == 0, "the whole burst went out without a wait"
        ack = client.publish("backtest.limits", LIMITED_TYPE, {"amount": "held"}, timeout=30)
        acked_at = time.time()
        assert ack.attempts == 1, "sent once: when the bucket had refilled"
        assert client.stats().rate_limit_waits >= 1, "the client held it"
    records = server.publish_requests(sub)
    assert_none_refused(records)
    assert len(records) == LIMITED_BURST["premium"] + 1, "one request per event, none repeated"
    refill = records[0]["at_ms"] / 1000 + LIMITED_REFILL_S["premium"]
    assert records[-1]["at_ms"] / 1000 >= refill - 0.05, "not sent before the refill"
    assert acked_at <= refill + 1.5, f"acked {acked_at - refill:.2f} s after the refill"


def test_a_ws_url_is_accepted(server: Server, token: str) -> None:
    with CourierClient(f"ws://{server.addr}/ws", token=token) as client:
        sub = client.subscribe("backtest.s-ws")
        sub.ready(timeout=10)
        ack = client.publish("backtest.s-ws", "backtest.progress", progress("ws", 1))
        assert [e.offset for e in take(sub, 1)] == [ack.offset]


def test_two_subscriptions_on_one_channel_both_receive(server: Server, token: str) -> None:
    with CourierClient(server.url, token=token) as client:
        first = client.subscribe("backtest.s-twice")
        first.ready(timeout=10)
        second = client.subscribe("backtest.s-twice")
        second.ready(timeout=10)
        client.publish_many([("backtest.s-twice", "backtest.progress", progress("t", p)) for p in (1, 2)])
        assert [e.offset for e in take(first, 2)] == [1, 2]
        assert [e.offset for e in take(second, 2)] == [1, 2]
        assert first.position is not None
        with pytest.raises(UsageError) as e:
            client.subscribe("backtest.s-twice", since=(first.position.epoch, 1))
        assert e.value.code == "ALREADY_SUBSCRIBED"
        # One leaving keeps the channel for the other.
        first.close()
        client.publish("backtest.s-twice", "backtest.progress", progress("t", 3))
        assert [e.offset for e in take(second, 1)] == [3]


def test_stats_count_the_websocket_bytes_on_the_wire_across_reconnects(server: Server, token: str) -> None:
    # Server defaults (compression on); the native client does not offer deflate.
    with CourierClient(server.url, token=token) as client:
        assert (client.stats().wire_bytes_received, client.stats().wire_bytes_sent) == (0, 0)
        sub = client.subscribe("backtest.s-wire")
        sub.ready(timeout=10)
        ready = client.stats().wire_bytes_received
        assert ready is not None and ready > 0
        for i in range(20):
            client.publish("backtest.s-wire", "backtest.progress", progress("s-wire", i))
        payload = sum(len(json.dumps(e.data, separators=(",", ":"))) for e in take(sub, 20))
        first = client.stats().wire_bytes_received
        assert first is not None and first >= ready + payload
        server.fault("drop")
        for i in range(20):
            client.publish("backtest.s-wire", "backtest.progress", progress("s-wire", i))
        payload = sum(len(json.dumps(e.data, separators=(",", ":"))) for e in take(sub, 20))
        after = client.stats()
        assert after.reconnects >= 1
        assert after.wire_bytes_received is not None and after.wire_bytes_received >= first + payload
