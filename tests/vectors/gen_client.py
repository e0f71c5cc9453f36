#!/usr/bin/env python3
"""Writes client.json, the client-level transcripts (courier_core::client::Client), and
endpoints.json (the URL forms every SDK accepts). Expectations are written here by hand from
the rules in docs/behaviour.md; edit here, run, commit both."""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
WALL = 1_700_000_000_000
BACKOFF = {"min_delay_ms": 300, "base_delay_ms": 300, "max_delay_ms": 300, "jitter": "full",
           "healthy_after_ms": 10000}
CFG = {
    "service_name": "svc",
    "connection": {"client_name": "test/1", "heartbeat_grace_ms": 500, "connect_timeout_ms": 3000,
                   "backoff": BACKOFF},
    "queue": {"linger_ms": 0, "backoff": BACKOFF},
    "subscription_buffer": None,
}


def connected(ping=1000, epoch="E1"):
    return {"op": "connected", "session": "s1", "epoch": epoch, "ping_interval_ms": ping,
            "limits": {"max_payload_bytes": 102400, "max_frame_bytes": 131072, "max_subscriptions": 1024}}


def event(offset, channel="backtest.a", epoch="E1"):
    ev = {"id": f"ev{offset}", "type": "backtest.progress", "channel": channel,
          "data": {"backtest_id": "a", "percent": offset},
          "metadata": {"timestamp": WALL, "source": "svc"}}
    return {"op": "event", "epoch": epoch, "offset": offset, "event": ev}


def got(listener, offset, channel="backtest.a", epoch="E1"):
    return {"event": {"listener": listener, "channel": channel, "epoch": epoch, "offset": offset,
                      "id": f"ev{offset}"}}


def subscribed_frame(sub_id, offset=0, channel="backtest.a", recovered=True, replay_from=None):
    f = {"op": "subscribed", "id": sub_id, "channel": channel, "recovered": recovered, "epoch": "E1",
         "offset": offset}
    if replay_from is not None:
        f["replay_from"] = replay_from
    return f


def subscribed(listener, offset=0, channel="backtest.a", recovered=True):
    return {"subscribed": {"listener": listener, "channel": channel, "recovered": recovered,
                           "position": {"epoch": "E1", "offset": offset}}}


def step(at, inp, expect, **extra):
    s = {"at_ms": at, "input": inp, "expect": expect}
    s.update(extra)
    return s


def accepted(event_id, offset, channel="backtest.a"):
    return {"id": event_id, "status": "accepted", "channel": channel, "epoch": "E1", "offset": offset}


def batch(n, token, events):
    return {"send_batch": {"batch": n, "token": token, "events": events}}


def stamped(event_id, at_ms, channel="backtest.a", source="svc", type_="backtest.progress"):
    return {"id": event_id, "channel": channel, "type": type_, "source": source, "timestamp": WALL + at_ms}


def first_subscription():
    """Subscribe to backtest.a on a fresh client, which connects: token, socket, `connect`,
    `connected`, `subscribe` (request id 1)."""
    return [
        step(0, {"subscribe": {"channel": "backtest.a"}},
             [{"listener": 1}, {"state": "connecting"}, {"fetch_token": {"refresh": False}}]),
        step(1, {"token": "tok"}, ["open_socket"]),
        step(2, "socket_open", [{"send": {"op": "connect", "token": "tok", "client": "test/1"}}]),
        step(3, {"frame": connected()},
             [{"state": "connected"}, {"send": {"op": "subscribe", "id": 1, "channel": "backtest.a"}}]),
    ]


PROGRESS = {"backtest_id": "a", "percent": 1}

cases = []

# 1. One token for both halves, connect on subscribe, stamping.
cases.append({
    "name": "one token shared by the WebSocket and HTTP, refreshed once",
    "description": "the first subscription connects; a publish while the token is being fetched waits for the "
                   "same answer (one provider call); the event is stamped with the service name and the wall "
                   "time; an HTTP 401 TOKEN_EXPIRED refreshes the token once and the batch goes again with the "
                   "new one; the WebSocket later closed with 4002 reconnects with that new token without "
                   "asking the provider again",
    "config": CFG, "seed": 7, "wall_now_unix_ms": WALL,
    "steps": [
        step(0, {"subscribe": {"channel": "backtest.a"}},
             [{"listener": 1}, {"state": "connecting"}, {"fetch_token": {"refresh": False}}]),
        step(0, {"publish": {"channel": "backtest.a", "type": "backtest.progress", "data": PROGRESS, "id": "p1"}},
             [{"ticket": 1}], stats={"token_fetches": 1}),
        step(1, {"token": "tok"},
             ["open_socket", batch(1, "tok", [stamped("p1", 0)])]),
        step(2, "socket_open", [{"send": {"op": "connect", "token": "tok", "client": "test/1"}}]),
        step(3, {"frame": connected()},
             [{"state": "connected"}, {"send": {"op": "subscribe", "id": 1, "channel": "backtest.a"}}]),
        step(4, {"frame": subscribed_frame(1)}, [subscribed(1)]),
        step(5, {"respond": {"batch": 1, "results": [accepted("p1", 1)]}},
             [{"published": {"ticket": 1, "offset": 1, "duplicate": False, "attempts": 1}}]),
        step(6, {"publish": {"channel": "backtest.a", "type": "backtest.progress", "data": PROGRESS, "id": "p2"}},
             [{"ticket": 2}, batch(2, "tok", [stamped("p2", 6)])]),
        step(7, {"respond": {"batch": 2, "status": 401,
                             "error": {"code": "TOKEN_EXPIRED", "message": "token expired"}}},
             [{"fetch_token": {"refresh": True}}]),
        step(8, {"token": "tok2"}, [batch(3, "tok2", [stamped("p2", 6)])]),
        step(9, {"respond": {"batch": 3, "results": [accepted("p2", 2)]}},
             [{"published": {"ticket": 2, "offset": 2, "duplicate": False, "attempts": 2}}]),
        step(10, {"socket_closed": {"code": 4002, "reason": "token expired"}},
             [{"state": "connecting"}, "open_socket"]),
        step(11, "socket_open", [{"send": {"op": "connect", "token": "tok2", "client": "test/1"}}],
             stats={"token_fetches": 2, "acknowledged": 2, "retries": 1}),
    ],
})

# 2. Subscribing twice.
cases.append({
    "name": "subscribing twice adds a listener on the same server subscription",
    "description": "a second listener on a live channel is told at once where the channel stands and gets every "
                   "event from then on; a `since` other than the current position is refused with "
                   "ALREADY_SUBSCRIBED; the server subscription ends with the last listener",
    "config": CFG, "seed": 7, "wall_now_unix_ms": WALL,
    "steps": [
        *first_subscription(),
        step(4, {"frame": subscribed_frame(1, offset=5)}, [subscribed(1, offset=5)]),
        step(5, {"frame": event(6)}, [got(1, 6)]),
        step(6, {"subscribe": {"channel": "backtest.a"}}, [{"listener": 2}, subscribed(2, offset=5)]),
        step(7, {"subscribe": {"channel": "backtest.a", "since": {"epoch": "E1", "offset": 2}}},
             [{"rejected": "ALREADY_SUBSCRIBED"}]),
        step(8, {"subscribe": {"channel": "backtest.a", "since": {"epoch": "E1", "offset": 6}}},
             [{"listener": 3}, subscribed(3, offset=5)]),
        step(9, {"frame": event(7)}, [got(1, 7), got(2, 7), got(3, 7)], stats={"channels": 1, "events_received": 2}),
        step(10, {"unsubscribe": 1}, [{"unsubscribed": True}]),
        step(11, {"unsubscribe": 2}, [{"unsubscribed": True}]),
        step(12, {"unsubscribe": 3},
             [{"unsubscribed": True}, {"send": {"op": "unsubscribe", "id": 2, "channel": "backtest.a"}}]),
        step(13, {"unsubscribe": 3}, [{"unsubscribed": False}], stats={"channels": 0}),
    ],
})

# 3. Flow control: pause and resume keep the position.
flow = dict(CFG, subscription_buffer=4)
cases.append({
    "name": "a listener that falls behind pauses its channel; resuming loses and repeats nothing",
    "description": "with subscription_buffer 4, the fourth unread event pauses the channel (unsubscribe, position "
                   "kept); an event already on the wire is dropped; once the listener is down to half (2 unread) "
                   "the channel resubscribes after its last event and the server's replay fills the hole",
    "config": flow, "seed": 7, "wall_now_unix_ms": WALL,
    "steps": [
        *first_subscription(),
        step(4, {"frame": subscribed_frame(1)}, [subscribed(1)]),
        step(5, {"frame": event(1)}, [got(1, 1)]),
        step(5, {"frame": event(2)}, [got(1, 2)]),
        step(5, {"frame": event(3)}, [got(1, 3)]),
        step(6, {"frame": event(4)},
             [got(1, 4), {"send": {"op": "unsubscribe", "id": 2, "channel": "backtest.a"}}],
             stats={"paused_channels": 1, "pauses": 1}),
        step(7, {"frame": event(5)}, []),
        step(8, {"consumed": {"listener": 1, "count": 1}}, []),
        step(8, {"consumed": {"listener": 1, "count": 1}},
             [{"send": {"op": "subscribe", "id": 3, "channel": "backtest.a", "since": {"epoch": "E1", "offset": 4}}}],
             stats={"paused_channels": 0}),
        step(9, {"frame": subscribed_frame(3, offset=5, replay_from=5)}, [subscribed(1, offset=5)]),
        step(10, {"frame": event(5)}, [got(1, 5)]),
        step(11, {"frame": event(5)}, [], stats={"events_received": 5, "duplicates_dropped": 1, "pauses": 1}),
    ],
})

# 4. Close while publishing; invalid data refused before sending.
cases.append({
    "name": "close while publishing, and invalid data refused before anything is sent",
    "description": "catalogue data is checked before queueing (nothing sent); close closes the socket at once, "
                   "refuses new work with CLOSED, and still delivers what was queued",
    "config": CFG, "seed": 7, "wall_now_unix_ms": WALL,
    "steps": [
        step(0, {"publish": {"channel": "backtest.a", "type": "backtest.progress", "data": {"percnt": 1}, "id": "bad"}},
             [{"rejected": "INVALID_EVENT", "field": "data.backtest_id"}]),
        step(0, {"publish": {"channel": "Bad Channel!", "type": "backtest.progress", "data": PROGRESS}},
             [{"rejected": "INVALID_EVENT", "field": "channel"}]),
        step(1, {"publish": {"channel": "backtest.a", "type": "backtest.progress", "data": PROGRESS, "id": "p1",
                             "metadata": {"source": "other", "timestamp": 5}}},
             [{"ticket": 1}, {"fetch_token": {"refresh": False}}]),
        step(2, {"token": "tok"}, [batch(1, "tok", [stamped("p1", 0, source="other") | {"timestamp": 5}])]),
        step(3, {"subscribe": {"channel": "backtest.b"}},
             [{"listener": 1}, {"state": "connecting"}, "open_socket"]),
        step(4, "close", [{"close_socket": {"code": 1000, "reason": "client closed"}}, {"state": "closed"}]),
        step(5, {"publish": {"channel": "backtest.a", "type": "backtest.progress", "data": PROGRESS}},
             [{"rejected": "CLOSED", "field": None}]),
        step(5, {"subscribe": {"channel": "backtest.c"}}, [{"rejected": "CLOSED"}]),
        step(6, {"respond": {"batch": 1, "results": [accepted("p1", 1)]}},
             [{"published": {"ticket": 1, "offset": 1, "duplicate": False, "attempts": 1}}],
             stats={"acknowledged": 1}),
    ],
})

# 5. A token provider that fails.
cases.append({
    "name": "a failing token provider fails the attempt, never hangs",
    "description": "the provider's error fails the waiting batch like a failed request (backoff, then a new "
                   "provider call); the WebSocket reports the error and reconnects after its backoff",
    "config": CFG, "seed": 7, "wall_now_unix_ms": WALL,
    "steps": [
        step(0, {"publish": {"channel": "backtest.a", "type": "backtest.progress", "data": PROGRESS, "id": "p1"}},
             [{"ticket": 1}, {"fetch_token": {"refresh": False}}]),
        step(1, {"token_error": "vault down"}, [], next_timeout_ms=301),
        step(301, "timeout", [{"fetch_token": {"refresh": False}}]),
        step(302, {"token": "tok"}, [batch(2, "tok", [stamped("p1", 0)])],
             stats={"retries": 1, "token_fetches": 2}),
    ],
})

with open(os.path.join(HERE, "client.json"), "w") as f:
    json.dump({
        "description": "Client-level transcripts: one courier_core::client::Client per case, started with `config` "
                       "and `seed`, the wall clock at `wall_now_unix_ms`. Each step applies `input` at `at_ms` and "
                       "expects exactly the outputs `expect`, in order: a command's own result first "
                       "(`listener`, `ticket`, `rejected` with the error code, `unsubscribed`), then what the "
                       "client asks of its driver and tells its application. `send` frames compare as JSON; a "
                       "`send_batch` lists each event's id, channel, type, metadata.source and timestamp. "
                       "`stats` (when present) names counters of stats() after the step; `next_timeout_ms` is "
                       "poll_timeout() after the step (ms after the start, rounded up). Backoff is pinned to "
                       "300 ms.",
        "cases": cases,
    }, f, indent=1, ensure_ascii=False)
    f.write("\n")

URLS = [
    ("http://127.0.0.1:8766", {"ws_url": "ws://127.0.0.1:8766/ws", "http_base": "http://127.0.0.1:8766"}),
    ("http://127.0.0.1:8766/", {"ws_url": "ws://127.0.0.1:8766/ws", "http_base": "http://127.0.0.1:8766"}),
    ("https://rt.example.com/courier", {"ws_url": "wss://rt.example.com/courier/ws",
                                        "http_base": "https://rt.example.com/courier"}),
    ("ws://localhost:8766", {"ws_url": "ws://localhost:8766/ws", "http_base": "http://localhost:8766"}),
    ("ws://localhost:8766/ws", {"ws_url": "ws://localhost:8766/ws", "http_base": "http://localhost:8766"}),
    ("wss://rt.example.com/courier/ws/", {"ws_url": "wss://rt.example.com/courier/ws",
                                          "http_base": "https://rt.example.com/courier"}),
    ("HTTP://Host:1", {"ws_url": "ws://Host:1/ws", "http_base": "http://Host:1"}),
    ("ftp://host", {"error": "url"}),
    ("localhost:8766", {"error": "url"}),
    ("http://", {"error": "url"}),
    ("http://host:8766/?token=x", {"error": "url"}),
    ("", {"error": "url"}),
]
with open(os.path.join(HERE, "endpoints.json"), "w") as f:
    json.dump({
        "description": "The server URL forms every SDK accepts (courier_core::client::Endpoints::parse): "
                   "http(s):// and ws(s):// alike, an optional path prefix and trailing /ws. `expect` is the "
                   "WebSocket URL and HTTP base, or the field of the validation error.",
        "cases": [{"url": u, "expect": e} for u, e in URLS],
    }, f, indent=1, ensure_ascii=False)
    f.write("\n")
