#!/usr/bin/env python3
"""Writes queue.json, the publish-queue vectors (per-bucket limits, linger). Edit here, run,
commit both. The expectations are worked out by hand below (comments give the arithmetic);
never copy them from the core's output."""
import json
import os

# The reference server's default table for a standard-tier user (issue 11, CONTRACT §2).
# T = ceil(w/q): user 100 ms, deposit 12 000 ms, strategy 6 000 ms, fallback 200 ms.
POLICY = ", ".join([
    '"user";q=600;w=60;burst=600',
    '"type:candles";q=100;w=60;burst=100',
    '"type:deposit";q=5;w=60;burst=5',
    '"type:payment";q=5;w=60;burst=5',
    '"type:strategy";q=10;w=60;burst=10',
    '"type:subscription";q=5;w=60;burst=5',
    '"type:trade";q=50;w=60;burst=50',
    '"fallback";q=300;w=60;burst=300',
])
# Backoff pinned to 300 ms, as in transcripts.json.
BACKOFF = {"min_delay_ms": 300, "base_delay_ms": 300, "max_delay_ms": 300, "jitter": "full"}


def step(at, inp, sent=(), completed=(), timeout=..., waits=None):
    s = {"at_ms": at, "input": inp, "sent": [{"batch": b, "events": list(ev)} for b, ev in sent],
         "completed": list(completed)}
    if timeout is not ...:
        s["next_timeout_ms"] = timeout
    if waits is not None:
        s["rate_limit_waits"] = waits
    return s


def push(id_, type_, **kw):
    return {"push": dict({"id": id_, "type": type_}, **kw)}


def respond(batch, results=None, status=200, headers=(), **kw):
    r = {"batch": batch, "status": status, "headers": [list(h) for h in headers]}
    if results is not None:
        r["results"] = results
    r.update(kw)
    return {"respond": r}


def ok(*ids):
    return [{"id": i, "status": "accepted", "channel": "global", "epoch": "E1", "offset": n + 1}
            for n, i in enumerate(ids)]


def done(id_, status="accepted", attempts=1):
    return {"id": id_, "status": status, "attempts": attempts}


def table(remaining):
    return [("RateLimit-Policy", POLICY), ("RateLimit", remaining)]


def warm_up():
    """w1 (a custom type) goes at once, its answer teaches the table."""
    return [
        step(0, push("w1", "custom.warmup"), sent=[(1, ["w1"])], timeout=None),
        step(10, respond(1, ok("w1"), headers=table('"user";r=599;t=1, "fallback";r=299;t=1')),
             completed=[done("w1")], timeout=None),
    ]


cases = []

# 1. The deposit burst and the hold that ends exactly when the bucket refills.
#    d1 at 20 (nothing in flight: at once). d2..d6 pushed at 20 while batch 2 is in flight:
#    linger until 22, then d2..d5 (4 more cells: 5 in all). deposit TAT after d1..d5:
#    12 020, 24 020, 36 020, 48 020, 60 020; τ = 4·12 000 = 48 000, so d6 is admitted at
#    60 020 − 48 000 = 12 020 (= 20 + 12 000, one emission interval after the first).
#    c1 (custom.x, bucket fallback) at 100 goes at once though d6 is older.
c = warm_up() + [
    step(20, push("d1", "deposit.made"), sent=[(2, ["d1"])], timeout=None),
    step(20, push("d2", "deposit.made"), timeout=22),
    step(20, push("d3", "deposit.made")),
    step(20, push("d4", "deposit.made")),
    step(20, push("d5", "deposit.made")),
    step(20, push("d6", "deposit.made"), timeout=22, waits=0),
    step(22, "timeout", sent=[(3, ["d2", "d3", "d4", "d5"])], timeout=12020, waits=1),
    # The server saw d1 only: r=4. Raise to 30 + 0·T changes nothing; no lowering while
    # batch 3 is in flight.
    step(30, respond(2, ok("d1"), headers=table('"user";r=598;t=1, "type:deposit";r=4;t=12')),
         completed=[done("d1")], timeout=12020),
    # r=0 after d2..d5: raise to 35 + 4·12 000 = 48 035 and lower to 35 + 5·12 000 = 60 035
    # both leave TAT = 60 020: the wait still ends at 12 020.
    step(35, respond(3, ok("d2", "d3", "d4", "d5"),
                     headers=table('"user";r=594;t=1, "type:deposit";r=0;t=60')),
         completed=[done(i) for i in ["d2", "d3", "d4", "d5"]], timeout=12020),
    step(100, push("c1", "custom.x"), sent=[(4, ["c1"])], timeout=12020, waits=1),
    step(110, respond(4, ok("c1"), headers=table('"user";r=594;t=1, "fallback";r=298;t=1')),
         completed=[done("c1")], timeout=12020),
    step(12019, "timeout", timeout=12020),
    step(12020, "timeout", sent=[(5, ["d6"])], timeout=None, waits=1),
    step(12030, respond(5, ok("d6"), headers=table('"user";r=594;t=1, "type:deposit";r=0;t=60')),
         completed=[done("d6")], timeout=None),
]
cases.append({"name": "deposit burst, sixth held until the bucket refills, other types go at once",
              "description": "a burst of 5 deposit.made goes without a limiter wait (d1 at once, d2..d5 after the linger because d1 is in flight); the 6th waits exactly one emission interval (12 000 ms) after the first; a custom type pushed during the hold goes at once; syncing from r changes nothing when the client's count is right",
              "config": {"linger_ms": 2, "backoff": BACKOFF}, "steps": c})

# 2. A per-event RATE_LIMIT_EXCEEDED naming its bucket holds that bucket only.
#    Another client drained deposit: d1 (TAT 12 020) is refused at 30 with retry_after
#    5 000 → type:deposit blocked until 5 030 and TAT raised to 5 030 + 48 000 = 53 030
#    (one cell free at 5 030). No backoff. c1 goes at once at 40. d2 pushed at 100 waits.
#    At 5 030 the retry of d1 (older ticket) takes the cell: TAT 65 030, so d2 waits until
#    65 030 − 48 000 = 17 030.
c = warm_up() + [
    step(20, push("d1", "deposit.made"), sent=[(2, ["d1"])], timeout=None),
    step(30, respond(2, [{"id": "d1", "status": "rejected",
                          "error": {"code": "RATE_LIMIT_EXCEEDED", "message": "deposit limit",
                                    "retry_after_ms": 5000, "limit_type": "type:deposit"}}],
                     headers=table('"user";r=599;t=1, "type:deposit";r=0;t=60')),
         timeout=5030, waits=1),
    step(40, push("c1", "custom.x"), sent=[(3, ["c1"])], timeout=5030),
    step(50, respond(3, ok("c1"), headers=table('"user";r=598;t=1, "fallback";r=298;t=1')),
         completed=[done("c1")], timeout=5030),
    step(100, push("d2", "deposit.made"), timeout=5030, waits=1),
    step(5029, "timeout", timeout=5030),
    step(5030, "timeout", sent=[(4, ["d1"])], timeout=17030, waits=2),
    step(5040, respond(4, ok("d1"), headers=table('"user";r=597;t=1, "type:deposit";r=0;t=60')),
         completed=[done("d1", attempts=2)], timeout=17030),
    step(17030, "timeout", sent=[(5, ["d2"])], timeout=None),
]
cases.append({"name": "per-event rate limit holds only the bucket it names",
              "description": "a batch item rejected RATE_LIMIT_EXCEEDED with limit_type type:deposit and retry_after_ms 5000 holds deposit events until then (and frees one cell then, not a burst); a custom type goes at once meanwhile; no backoff for the retry",
              "config": {"linger_ms": 2, "backoff": BACKOFF}, "steps": c})

# 3. A whole-request 429 (no bucket) holds everything: Retry-After 3 s beats the body's
#    2 500 ms and the 300 ms backoff → nothing before 10 + 3 000 = 3 010.
c = [
    step(0, push("w1", "custom.warmup"), sent=[(1, ["w1"])], timeout=None),
    step(10, respond(1, status=429, headers=[("Retry-After", "3")],
                     error={"code": "RATE_LIMIT_EXCEEDED", "message": "slow down",
                            "retry_after_ms": 2500}),
         timeout=3010, waits=1),
    step(20, push("c1", "custom.x"), timeout=3010),
    step(20, push("d1", "deposit.made"), timeout=3010, waits=1),
    step(3009, "timeout", timeout=3010),
    step(3010, "timeout", sent=[(2, ["w1", "c1", "d1"])], timeout=None),
    step(3020, respond(2, ok("w1", "c1", "d1")),
         completed=[done("w1", attempts=2), done("c1"), done("d1")], timeout=None),
]
cases.append({"name": "whole-request 429 holds everything",
              "description": "a 429 for the whole request with Retry-After (a proxy, fault injection) holds every bucket until then, whatever the body says; then the retry and the events pushed meanwhile go together",
              "config": {"linger_ms": 2, "backoff": BACKOFF}, "steps": c})

# 4. Linger only while something is in flight (no rate-limit headers at all).
c = [
    step(0, push("e1", "custom.x"), sent=[(1, ["e1"])], timeout=None),
    step(1, push("e2", "custom.x"), timeout=6),
    step(2, push("e3", "custom.x"), timeout=6),
    # The answer frees the pipe: what lingers goes at once, not at 6.
    step(4, respond(1, ok("e1")), sent=[(2, ["e2", "e3"])], completed=[done("e1")], timeout=None),
    step(10, push("e4", "custom.x"), timeout=15),
    step(10, push("e5", "custom.x"), timeout=15),
    # A full batch (max_batch_events 3) goes at once.
    step(10, push("e6", "custom.x"), sent=[(3, ["e4", "e5", "e6"])], timeout=None),
    step(11, push("e7", "custom.x"), timeout=16),
    step(16, "timeout", sent=[(4, ["e7"])], timeout=None),
    step(17, respond(2, ok("e2", "e3")), completed=[done("e2"), done("e3")], timeout=None),
    step(17, respond(3, ok("e4", "e5", "e6")), completed=[done(i) for i in ["e4", "e5", "e6"]]),
    step(17, respond(4, ok("e7")), completed=[done("e7")], timeout=None, waits=0),
]
cases.append({"name": "sent at once when nothing is in flight, batched while something is",
              "description": "with linger_ms 5: a fresh event goes at once when no batch is in flight; while one is, events wait up to linger_ms after the oldest was pushed, or until a batch is full, or until the pipe is free again",
              "config": {"linger_ms": 5, "max_batch_events": 3, "backoff": BACKOFF}, "steps": c})

# 5. Sync up: the server says strategy (T = 6 000, b = 10, τ = 54 000) has r=2 left after s1
#    (another client used 7). TAT raised from 6 020 to 30 + (10−2−1)·6 000 = 42 030.
#    s2 at 40: TAT 48 030. s3, s4 at 42: 54 030, 60 030 (60 030 − 54 000 = 6 030 > 42: s5 held
#    until 6 030). Without the sync s5 would have gone at 42.
c = warm_up() + [
    step(20, push("s1", "strategy.signal"), sent=[(2, ["s1"])], timeout=None),
    step(30, respond(2, ok("s1"), headers=table('"user";r=598;t=1, "type:strategy";r=2;t=60')),
         completed=[done("s1")], timeout=None),
    step(40, push("s2", "strategy.signal"), sent=[(3, ["s2"])], timeout=None),
    step(40, push("s3", "strategy.signal"), timeout=42),
    step(40, push("s4", "strategy.signal"), timeout=42),
    step(40, push("s5", "strategy.signal"), timeout=42),
    step(42, "timeout", sent=[(4, ["s3", "s4"])], timeout=6030, waits=1),
    step(6030, "timeout", sent=[(5, ["s5"])], timeout=None),
]
cases.append({"name": "sync up from r",
              "description": "RateLimit r lower than the client counted (another client of the same user) raises the bucket's TAT to now + (b-r-1)*T: the client then holds the events the server would refuse",
              "config": {"linger_ms": 2, "backoff": BACKOFF}, "steps": c})

# 6. Sync down: s1 is charged twice (lost answer, retry with s2..s5): TAT 36 020 after the
#    retry batch, but the server charged 5 (r=5). Nothing else in flight → lower to
#    340 + 5·6 000 = 30 340. s6 at 400 → 36 340; s7..s10 at 410 → 42 340, 48 340, 54 340,
#    60 340 (54 340 − 54 000 = 340 ≤ 410): all go. Without the sync, s10 would wait until
#    60 020 − 54 000 = 6 020.
c = warm_up() + [
    step(20, push("s1", "strategy.signal"), sent=[(2, ["s1"])], timeout=None),
    step(20, push("s2", "strategy.signal"), timeout=None),
    step(20, push("s3", "strategy.signal")),
    step(20, push("s4", "strategy.signal")),
    step(20, push("s5", "strategy.signal"), timeout=None),
    step(30, respond(2, failed="connection reset"), timeout=330),
    step(330, "timeout", sent=[(3, ["s1", "s2", "s3", "s4", "s5"])], timeout=None),
    step(340, respond(3, ok("s1", "s2", "s3", "s4", "s5"),
                      headers=table('"user";r=594;t=1, "type:strategy";r=5;t=30')),
         completed=[done("s1", attempts=2)] + [done(i) for i in ["s2", "s3", "s4", "s5"]],
         timeout=None),
    step(400, push("s6", "strategy.signal"), sent=[(4, ["s6"])], timeout=None),
    step(400, push("s7", "strategy.signal")),
    step(400, push("s8", "strategy.signal")),
    step(400, push("s9", "strategy.signal")),
    step(400, push("s10", "strategy.signal"), timeout=None),
    step(410, respond(4, ok("s6"), headers=table('"user";r=593;t=1, "type:strategy";r=4;t=37')),
         sent=[(5, ["s7", "s8", "s9", "s10"])], completed=[done("s6")], timeout=None, waits=0),
]
cases.append({"name": "sync down from r when nothing else is in flight",
              "description": "an event charged twice by the client (a lost answer, then a retry) but once by the server: the RateLimit r of the retry's answer lowers the bucket's TAT to now + (b-r)*T because no other batch is in flight, so the next burst is not held",
              "config": {"linger_ms": 0, "max_in_flight": 1, "backoff": BACKOFF}, "steps": c})

# 7. Refunds: of d2..d5, d2 is a duplicate and d3 invalid: the server charged d4, d5 only.
#    Client TAT after d1..d5: 60 020; the two refunds give 36 020 (no lowering: batch 2 is
#    still in flight). At 42, d6 is admitted (36 020 − 48 000 ≤ 42; TAT 48 020), d7 too
#    (48 020 − 48 000 = 20 ≤ 42; TAT 60 020), and d8 waits until 60 020 − 48 000 = 12 020.
#    Without the refunds none would go: TAT 60 020 holds d6 until 12 020.
c = warm_up() + [
    step(20, push("d1", "deposit.made"), sent=[(2, ["d1"])], timeout=None),
    step(20, push("d2", "deposit.made"), timeout=22),
    step(20, push("d3", "deposit.made")),
    step(20, push("d4", "deposit.made")),
    step(20, push("d5", "deposit.made"), timeout=22),
    step(22, "timeout", sent=[(3, ["d2", "d3", "d4", "d5"])], timeout=None),
    step(30, respond(3, [
        {"id": "d2", "status": "duplicate", "channel": "global", "epoch": "E1", "offset": 7},
        {"id": "d3", "status": "rejected", "error": {"code": "INVALID_EVENT", "message": "bad",
                                                     "field": "data.amount"}},
        {"id": "d4", "status": "accepted", "channel": "global", "epoch": "E1", "offset": 8},
        {"id": "d5", "status": "accepted", "channel": "global", "epoch": "E1", "offset": 9},
    ], headers=table('"user";r=596;t=1, "type:deposit";r=2;t=36')),
        completed=[done("d2", "duplicate"), {"id": "d3", "error": "INVALID_EVENT"}, done("d4"),
                   done("d5")], timeout=None),
    step(40, push("d6", "deposit.made"), timeout=42),
    step(40, push("d7", "deposit.made")),
    step(40, push("d8", "deposit.made"), timeout=42),
    step(42, "timeout", sent=[(4, ["d6", "d7"])], timeout=12020, waits=1),
]
cases.append({"name": "duplicates and invalid events give their cells back",
              "description": "an event answered duplicate, or rejected with a code other than RATE_LIMIT_EXCEEDED, was not charged by the server: the client refunds its cells (TAT -= T), even while another batch is in flight",
              "config": {"linger_ms": 2, "backoff": BACKOFF}, "steps": c})

# 8. A server without named policies: one anonymous bucket, burst = quota.
#    "2;w=1": T = 500, b = 2, τ = 500. e2, e3 at 20: TAT 520, 1 020; e4 admitted at
#    1 020 − 500 = 520. Then remaining 0 with a 2 s reset blocks it until 30 + 2 000.
c = [
    step(0, push("e1", "custom.x"), sent=[(1, ["e1"])], timeout=None),
    step(10, respond(1, ok("e1"), headers=[("RateLimit-Policy", "2;w=1")]),
         completed=[done("e1")], timeout=None),
    step(20, push("e2", "custom.x"), sent=[(2, ["e2"])]),
    step(20, push("e3", "custom.x"), sent=[(3, ["e3"])]),
    step(20, push("e4", "custom.x"), timeout=520, waits=1),
    step(30, respond(2, ok("e2"), headers=[("X-RateLimit-Remaining", "0"),
                                           ("X-RateLimit-Reset", "2")]),
         completed=[done("e2")], timeout=2030),
    step(520, "timeout", timeout=2030),
    step(2030, "timeout", sent=[(4, ["e4"])], timeout=None, waits=2),
]
cases.append({"name": "server without named policies",
              "description": "an unnamed RateLimit-Policy gives one anonymous bucket for every event with burst = quota (never 1); remaining 0 holds it until the reset",
              "config": {"linger_ms": 0, "max_batch_events": 1, "backoff": BACKOFF}, "steps": c})

# 9. Priorities and holds: held high-priority deposits do not hold back a low-priority
#    custom event (another bucket), and deposits keep their order. d1 at 20 (TAT 12 020);
#    at 22 d2..d5 fill the bucket (TAT 60 020), c1 rides along, d6 and d7 wait:
#    d6 until 12 020 (TAT then 72 020), d7 until 72 020 − 48 000 = 24 020.
c = warm_up() + [
    step(20, push("d1", "deposit.made", priority="high"), sent=[(2, ["d1"])], timeout=None),
    step(20, push("d2", "deposit.made", priority="high"), timeout=22),
    step(20, push("d3", "deposit.made", priority="high")),
    step(20, push("d4", "deposit.made", priority="high")),
    step(20, push("d5", "deposit.made", priority="high")),
    step(20, push("d6", "deposit.made", priority="high")),
    step(20, push("c1", "custom.x", priority="low")),
    step(20, push("d7", "deposit.made", priority="high"), timeout=22),
    step(22, "timeout", sent=[(3, ["d2", "d3", "d4", "d5", "c1"])], timeout=12020, waits=1),
    step(12020, "timeout", sent=[(4, ["d6"])], timeout=24020, waits=2),
    step(24020, "timeout", sent=[(5, ["d7"])], timeout=None, waits=2),
]
cases.append({"name": "held urgent events do not hold back other buckets",
              "description": "high-priority deposit events held by their bucket stay in place and keep their order; a low-priority event of another bucket goes in the meantime",
              "config": {"linger_ms": 2, "backoff": BACKOFF}, "steps": c})

# 10. A retry is routed by the table its refusal taught: d1 went before any table was known;
#     its refusal (limit_type type:deposit, retry_after 4 000) comes with the table, so the
#     retry waits for the deposit bucket until 10 + 4 000, while c1 goes at once.
c = [
    step(0, push("d1", "deposit.made"), sent=[(1, ["d1"])], timeout=None),
    step(10, respond(1, [{"id": "d1", "status": "rejected",
                          "error": {"code": "RATE_LIMIT_EXCEEDED", "message": "deposit limit",
                                    "retry_after_ms": 4000, "limit_type": "type:deposit"}}],
                     headers=table('"user";r=599;t=1, "type:deposit";r=0;t=60')),
         timeout=4010, waits=1),
    step(20, push("c1", "custom.x"), sent=[(2, ["c1"])], timeout=4010),
    step(4009, "timeout", timeout=4010),
    step(4010, "timeout", sent=[(3, ["d1"])], timeout=None),
]
cases.append({"name": "a retry is routed by the table its refusal taught",
              "description": "an event sent before the table was known and refused by its bucket waits for that bucket when retried, not for nothing and not for everything",
              "config": {"linger_ms": 2, "backoff": BACKOFF}, "steps": c})

doc = {
    "description": "Publish-queue transcripts on simulated time (per-bucket rate limits, linger). Each case builds PublishQueue::new(config, seed, start); each step applies `input` at `at_ms` (ms after the start), then drains poll_transmit(now) (every batch handed out is sent at once; `sent` lists them in order as {batch: BatchId, events: [event ids]}) and poll_completion (`completed`, in order: {id, status: accepted|duplicate, attempts} or {id, error: CODE}; messages are not compared). Inputs: {push: {id, type, channel = global, data = {}, priority = normal, retry = true}}; {respond: {batch, status = 200, headers: [[name, value]], results: [...] | error: {...} (body {\"error\": ...}) | body: text | failed: message (transport failure)}} with the wall clock at wall_now_unix_ms (default 1700000000000) + at_ms; \"timeout\" (handle_timeout); \"close\". Optional expectations, compared only when present: `next_timeout_ms` (poll_timeout() in ms after the start, rounded up, or null), `rate_limit_waits` (stats), `rejected` (the error code of a refused push). Backoff is pinned to 300 ms.",
    "cases": [dict(c, seed=7) for c in cases],
}
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "queue.json"), "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
