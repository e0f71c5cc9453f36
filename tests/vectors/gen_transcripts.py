#!/usr/bin/env python3
"""Writes transcripts.json, the connection state-machine vectors. Edit here, run, commit both."""
import json
CFG = {"client_name": "test/1", "heartbeat_grace_ms": 500, "connect_timeout_ms": 3000,
       "backoff": {"min_delay_ms": 300, "base_delay_ms": 300, "max_delay_ms": 300, "jitter": "full", "healthy_after_ms": 10000}}
def connected(ping=1000, epoch="E1"):
    return {"op": "connected", "session": "s1", "epoch": epoch, "ping_interval_ms": ping,
            "limits": {"max_payload_bytes": 102400, "max_frame_bytes": 131072, "max_subscriptions": 1024}}
def event(offset, epoch="E1", channel="backtest.a", pct=None):
    ev = {"id": f"ev{offset}", "type": "backtest.progress", "channel": channel,
          "data": {"backtest_id": "a", "percent": pct if pct is not None else offset},
          "metadata": {"timestamp": 1700000000000, "source": "svc"}}
    return {"op": "event", "epoch": epoch, "offset": offset, "event": ev}
def delivered(offset, epoch="E1", channel="backtest.a"):
    f = event(offset, epoch, channel); del f["op"]; return {"event": f}
def step(at, inp, expect, timeout=...):
    s = {"at_ms": at, "input": inp, "expect": expect}
    if timeout is not ...: s["next_timeout_ms"] = timeout
    return s
SUB = {"subscribe": {"channel": "backtest.a"}}
def handshake(t=0, token="tok", ping=1000, first=True, sub_id=1, since=None):
    steps = []
    if first:
        steps.append(step(t, SUB, []))
        steps.append(step(t, "connect", [{"state": "connecting"}, {"fetch_token": {"refresh": False}}], None))
        steps.append(step(t + 1, {"token": token}, ["open_transport"], t + 1 + 3000))
    steps.append(step(t + 5, "transport_open", [{"send": {"op": "connect", "token": token, "client": "test/1"}}]))
    sub = {"op": "subscribe", "id": sub_id, "channel": "backtest.a"}
    if since: sub["since"] = since
    steps.append(step(t + 10, {"text": connected(ping)}, [{"state": "connected"}, {"send": sub}], t + 10 + ping + 500))
    return steps
cases = []
c1 = handshake() + [
    step(12, {"text": {"op": "subscribed", "id": 1, "channel": "backtest.a", "recovered": True, "epoch": "E1", "offset": 0}},
         [{"subscribed": {"channel": "backtest.a", "recovered": True, "position": {"epoch": "E1", "offset": 0}}}]),
    step(13, {"text": event(1)}, [delivered(1)]),
    step(14, {"text": event(2)}, [delivered(2)], 14 + 1500),
    step(15, {"text": {"op": "ping"}}, [{"send": {"op": "pong"}}], 15 + 1500),
    step(16, {"text": event(2)}, []),
]
cases.append({"name": "connect and subscribe", "description": "first-frame auth, subscribe from the live head, events delivered in order, ping answered, a repeated offset dropped", "steps": c1})
base = c1[:-1]
drop = [step(100, {"transport_closed": {"code": 1006, "reason": "gone"}}, [{"state": "disconnected"}], 400)]
def reconnect_at(t, since, sub_id=2):
    return [step(t, "timeout", [{"state": "connecting"}, "open_transport"])] + handshake(t, first=False, sub_id=sub_id, since=since)[0:0] + [
        step(t + 5, "transport_open", [{"send": {"op": "connect", "token": "tok", "client": "test/1"}}]),
        step(t + 10, {"text": connected()}, [{"state": "connected"}, {"send": {"op": "subscribe", "id": sub_id, "channel": "backtest.a", "since": since}}])]
c2 = base + drop + reconnect_at(400, {"epoch": "E1", "offset": 2}) + [
    step(412, {"text": {"op": "subscribed", "id": 2, "channel": "backtest.a", "recovered": True, "epoch": "E1", "offset": 4}},
         [{"subscribed": {"channel": "backtest.a", "recovered": True, "position": {"epoch": "E1", "offset": 4}}}]),
    step(413, {"text": event(3)}, [delivered(3)]),
    step(414, {"text": event(4)}, [delivered(4)]),
    step(415, {"text": event(4)}, []),
    step(416, {"text": event(5)}, [delivered(5)]),
]
cases.append({"name": "drop and resume with nothing missed", "description": "1006 reconnects after a jittered delay, resubscribes with since, replayed events continue the sequence and a duplicate is dropped", "steps": c2})
def subscribed(recovered, epoch, offset, replay_from=None, sub_id=2):
    f = {"op": "subscribed", "id": sub_id, "channel": "backtest.a", "recovered": recovered, "epoch": epoch, "offset": offset}
    if replay_from is not None: f["replay_from"] = replay_from
    return {"text": f}
def out_subscribed(recovered, epoch, offset):
    return {"subscribed": {"channel": "backtest.a", "recovered": recovered, "position": {"epoch": epoch, "offset": offset}}}
def out_gap(last, position, reason):
    return {"gap": {"channel": "backtest.a", "last": {"epoch": last[0], "offset": last[1]},
                    "position": {"epoch": position[0], "offset": position[1]}, "reason": reason}}
resumed = base + drop + reconnect_at(400, {"epoch": "E1", "offset": 2})
c3 = resumed + [
    step(412, subscribed(False, "E2", 0, 1),
         [out_subscribed(False, "E2", 0), out_gap(("E1", 2), ("E2", 0), "epoch_changed")]),
    step(413, {"text": event(1, "E2")}, [delivered(1, "E2")]),
]
cases.append({"name": "epoch change reports a gap", "description": "the server restarted without history and holds nothing yet (replay_from 1, offset 0): the new epoch is reported as one gap and the stream goes on", "steps": c3})
c3b = resumed + [
    step(412, subscribed(False, "E2", 3, 1),
         [out_subscribed(False, "E2", 3), out_gap(("E1", 2), ("E2", 0), "epoch_changed")]),
    step(413, {"text": event(1, "E2")}, [delivered(1, "E2")]),
    step(414, {"text": event(2, "E2")}, [delivered(2, "E2")]),
    step(415, {"text": event(3, "E2")}, [delivered(3, "E2")]),
    step(416, {"text": event(4, "E2")}, [delivered(4, "E2")]),
]
cases.append({"name": "resume after an epoch change replays the new epoch", "description": "the server restarted and took events 1..3 of its new epoch while the client was away: replay_from 1, one epoch_changed gap naming only the old epoch's tail (position E2:0), then the replayed 1..3 and live 4, each once", "steps": c3b})
c3c = resumed + [
    step(412, subscribed(False, "E2", 6, 4),
         [out_subscribed(False, "E2", 6), out_gap(("E1", 2), ("E2", 3), "epoch_changed")]),
    step(413, {"text": event(4, "E2")}, [delivered(4, "E2")]),
    step(414, {"text": event(5, "E2")}, [delivered(5, "E2")]),
    step(415, {"text": event(6, "E2")}, [delivered(6, "E2")]),
    step(416, {"text": event(7, "E2")}, [delivered(7, "E2")]),
]
cases.append({"name": "epoch change with a trimmed new epoch", "description": "the new epoch's oldest held event is 4 (replay_from 4): one epoch_changed gap whose position E2:3 says offsets 1..3 of the new epoch are missing too; 4..6 replayed, 7 live", "steps": c3c})
c3d = resumed + [
    step(412, subscribed(False, "E1", 20, 15),
         [out_subscribed(False, "E1", 20), out_gap(("E1", 2), ("E1", 14), "history_unavailable")]),
    step(413, {"text": event(14)}, []),
    step(414, {"text": event(15)}, [delivered(15)]),
    step(415, {"text": event(16)}, [delivered(16)]),
]
cases.append({"name": "history unavailable replays what is left", "description": "same epoch but history was trimmed past since (replay_from 15 > 3): one history_unavailable gap naming 3..14 (position E1:14), then the replay from 15; an event at the position is a duplicate", "steps": c3d})
c3e = resumed + [
    step(412, subscribed(False, "E2", 5),
         [out_subscribed(False, "E2", 5), out_gap(("E1", 2), ("E2", 5), "epoch_changed")]),
    step(413, {"text": event(5, "E2")}, []),
    step(414, {"text": event(6, "E2")}, [delivered(6, "E2")]),
]
cases.append({"name": "old server without replay_from", "description": "a server that predates replay_from replays nothing when it cannot recover: the client continues from its latest offset (position E2:5), as before", "steps": c3e})
c3f = resumed + [
    step(412, subscribed(True, "E1", 4, 3), [out_subscribed(True, "E1", 4)]),
    step(413, {"text": event(2)}, []),
    step(414, {"text": event(3)}, [delivered(3)]),
    step(415, {"text": event(4)}, [delivered(4)]),
    step(416, {"text": event(3)}, []),
    step(417, {"text": event(4)}, []),
    step(418, {"text": event(5)}, [delivered(5)]),
]
cases.append({"name": "duplicate overlap dropped", "description": "a recovered resume (replay_from 3): anything at or below the last delivered offset, replayed again or overlapping between replay and live, is dropped; no gap", "steps": c3f})
c3g = resumed + [
    step(412, subscribed(False, "E2", 3, 10),
         [out_subscribed(False, "E2", 3), out_gap(("E1", 2), ("E2", 3), "epoch_changed")]),
    step(413, {"text": event(4, "E2")}, [delivered(4, "E2")]),
]
c1b = handshake() + [
    step(12, subscribed(True, "E1", 7, 8, sub_id=1), [out_subscribed(True, "E1", 7)]),
    step(13, {"text": event(7)}, []),
    step(14, {"text": event(8)}, [delivered(8)]),
]
cases.append({"name": "first subscribe starts at replay_from", "description": "no since: the server announces replay_from = offset + 1; the subscription starts there (position E1:7) without a gap", "steps": c1b})
cases.append({"name": "replay_from beyond the latest offset is clamped", "description": "a server cannot replay past its latest offset: replay_from is taken as at most offset + 1, so live events are never dropped as duplicates", "steps": c3g})
c4 = handshake(ping=10000) + [
    step(12, {"text": {"op": "error", "id": 1, "code": "RATE_LIMIT_EXCEEDED", "message": "slow down", "retry_after_ms": 2000}}, [], 2012),
    step(2011, "timeout", []),
    step(2012, "timeout", [{"send": {"op": "subscribe", "id": 2, "channel": "backtest.a"}}]),
    step(2020, {"text": {"op": "error", "code": "RATE_LIMIT_EXCEEDED", "message": "too many connections per second", "retry_after_ms": 5000}},
         [{"error": {"code": "RATE_LIMIT_EXCEEDED", "retry_after_ms": 5000}}]),
    step(2021, {"transport_closed": {"code": 4029, "reason": "rate limited"}}, [{"state": "disconnected"}], 7020),
    step(7019, "timeout", []),
    step(7020, "timeout", [{"state": "connecting"}, "open_transport"]),
]
cases.append({"name": "rate limit exceeded", "description": "a refused subscribe is retried exactly when retry_after_ms has passed; a connection-level refusal holds the reconnect until its delay even when the backoff is shorter", "steps": c4})
c5 = handshake(ping=10000) + [
    step(20, {"text": {"op": "error", "code": "TOKEN_EXPIRED", "message": "token expired"}},
         [{"fetch_token": {"refresh": True}}, {"error": {"code": "TOKEN_EXPIRED"}}]),
    step(21, {"transport_closed": {"code": 4002, "reason": "token expired"}}, [{"state": "connecting"}]),
    step(25, {"token": "tok2"}, ["open_transport"]),
    step(26, "transport_open", [{"send": {"op": "connect", "token": "tok2", "client": "test/1"}}]),
    step(30, {"text": connected(10000)}, [{"state": "connected"}, {"send": {"op": "subscribe", "id": 2, "channel": "backtest.a"}}]),
    step(40, {"text": {"op": "error", "code": "TOKEN_EXPIRED", "message": "token expired"}},
         [{"fetch_token": {"refresh": True}}, {"error": {"code": "TOKEN_EXPIRED"}}]),
    step(41, {"text": {"op": "error", "code": "TOKEN_EXPIRED", "message": "token expired"}},
         [{"error": {"code": "TOKEN_EXPIRED"}}]),
    step(45, {"token": "tok3"}, [{"send": {"op": "refresh", "id": 3, "token": "tok3"}}]),
]
cases.append({"name": "token expired then refresh", "description": "TOKEN_EXPIRED asks the provider once (single flight); close 4002 reconnects with the new token; while connected the new token goes out as refresh", "steps": c5})
c6 = handshake() + [
    step(1509, "timeout", []),
    step(1510, "timeout", [{"error": {"code": "TRANSPORT"}}, {"close_transport": {"code": 4030, "reason": "heartbeat timeout"}}, {"state": "disconnected"}]),
    step(1511, {"transport_closed": {"code": 1006, "reason": "late report of the old socket"}}, []),
]
cases.append({"name": "heartbeat timeout", "description": "no frame for ping_interval + grace: the socket is replaced and a reconnect scheduled", "steps": c6})
c7 = handshake()[:3] + [
    step(5, "transport_open", [{"send": {"op": "connect", "token": "tok", "client": "test/1"}}]),
    step(8, {"text": {"op": "error", "code": "CONNECTION_LIMIT_EXCEEDED", "message": "5 connections per user", "limit_type": "user"}},
         [{"error": {"code": "CONNECTION_LIMIT_EXCEEDED"}}]),
    step(9, {"transport_closed": {"code": 1008, "reason": "connection limit"}}, [{"error": {"code": "CONNECTION_LIMIT_EXCEEDED"}}, {"state": "closed"}], None),
    step(100000, "timeout", []),
    step(100001, "connect", []),
]
cases.append({"name": "terminal 1008", "description": "a policy-violation close is terminal: reported with the server's reason, never reconnected", "steps": c7})
c8 = handshake() + [
    step(20, "close", [{"close_transport": {"code": 1000, "reason": "client closed"}}, {"state": "closed"}], None),
    step(21, {"transport_closed": {"code": 1000, "reason": ""}}, []),
]
cases.append({"name": "client close", "description": "close() closes the socket with 1000 and stops", "steps": c8})
c9 = [step(0, "connect", [{"state": "connecting"}, {"fetch_token": {"refresh": False}}], None),
      step(1, {"token_failed": "auth service down"}, [{"error": {"code": "TRANSPORT"}}, {"state": "disconnected"}], 301),
      step(301, "timeout", [{"state": "connecting"}, {"fetch_token": {"refresh": False}}])]
cases.append({"name": "token provider failure", "description": "a failing token provider is retried after backoff", "steps": c9})
doc = {"description": "Connection state-machine transcripts. Each case starts a Connection with `config` and `seed`; each step applies `input` at `at_ms` (milliseconds after the start) and expects exactly the outputs `expect`, in order. `send` outputs are compared as parsed JSON. A `text` input given as an object is serialised to JSON text first. `next_timeout_ms` (when present) is poll_timeout() after the step, in ms after the start, or null. The backoff is pinned to 300 ms (min = base = max) so reconnect times are exact; jitter has its own vectors in backoff.json.",
       "cases": [dict(c, config=CFG, seed=42) for c in cases]}
json.dump(doc, open(__import__("os").path.join(__import__("os").path.dirname(__file__), "transcripts.json"), "w"), indent=1)
