"""Issue #11: the `limits` scenario (scenarios/limits.json) — the server's rate limiter on at
its defaults, every client a standard-tier publisher mixing limited types (`deposit.e2e`,
`trade.e2e`) with unlimited ones (`e2e.tick`, `e2e.note`). The deposit bucket is spent by the
orchestrator just before `go`, so each client's first deposit is refused per event.

Checks: every publish acknowledged; every acknowledged event delivered exactly once, in order,
per channel to every client; publishes keep their order within a type; unlimited types are
never held behind a limited bucket (ack latency); a limited type's wait ends when its bucket
refills; and, at the server, no request carries an event of a bucket before that bucket's
Retry-After (nor any request before a whole-request 429's)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Dict, List, Tuple

import pytest

from harness import (Run, acks_by_position, breaks, check_bucket_retry_after, check_publish_outcomes,
                     check_whole_request_retry_after, delivered, epochs, kinds, run_scenario)

from conftest import load_scenario, log

SCN = load_scenario("limits")
CLIENTS: List[str] = SCN["clients"]
CHANNELS: List[str] = SCN["channels"]
LIMITED: Dict[str, Dict[str, Any]] = SCN["limited"]
UNLIMITED = sorted({s["type"] for s in SCN["streams"]} - set(LIMITED))


@pytest.fixture(scope="module")
def run(server_bin: str) -> Run:
    return run_scenario(server_bin, "limits")


def pct(xs: List[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


@pytest.mark.parametrize("client", CLIENTS)
def test_every_publish_is_acknowledged(run: Run, client: str) -> None:
    """No faults here: a limit delays a publish, it never fails it."""
    acked, _ = check_publish_outcomes(run, client, allow_dead=False)
    log(f"limits {client}: {len(acked)} acknowledged, published in {run.durations.get(client, 0):.1f} s")


@pytest.mark.parametrize("client", CLIENTS)
def test_every_acknowledged_event_is_delivered_once_in_order(run: Run, client: str) -> None:
    assert client not in run.problems, run.problems[client]
    recs = run.records[client]
    by_pos = acks_by_position(run)
    eps = epochs(run)
    assert len(eps) == 1, f"one server, one epoch expected; the acknowledgements show {eps}"
    total = 0
    for ch in CHANNELS:
        where = f"{client} on {ch}"
        events, gaps = delivered(recs, ch)
        total += len(events)
        assert not gaps, f"{where}: gaps without any outage: {gaps[:3]}"
        acked = sorted(o for (c, _, o) in by_pos if c == ch)
        assert acked == list(range(1, len(acked) + 1)), (
            f"{where}: the server's offsets for acknowledged events have holes: {breaks(acked)}")
        offsets = [e["offset"] for e in events]
        assert offsets == acked, (
            f"{where}: delivered {len(offsets)} events, {len(acked)} acknowledged; "
            f"first breaks {breaks(offsets)}, missing {sorted(set(acked) - set(offsets))[:10]}, "
            f"twice {[o for o, n in Counter(offsets).items() if n > 1][:10]}")
        wrong = [(e["offset"], e["id"], by_pos.get((ch, e["epoch"], e["offset"]))) for e in events
                 if by_pos.get((ch, e["epoch"], e["offset"])) != e["id"]]
        assert not wrong, f"{where}: delivered ids differ from those acknowledged at their offsets: {wrong[:5]}"
        senders = {e["id"].rsplit("-", 1)[0] for e in events}
        assert senders == set(CLIENTS), f"{where}: no events from {set(CLIENTS) - senders}"
    log(f"limits {client}: received {total} events on {len(CHANNELS)} channels")


@pytest.mark.parametrize("client", CLIENTS)
def test_publish_order_is_kept_within_a_type(run: Run, client: str) -> None:
    """FIFO within a bucket: per type and channel, the server's offsets follow the publish order."""
    assert client not in run.problems, run.problems[client]
    types = {i: ty for i, (_, ty) in run.expected_ids(client).items()}
    seqs: Dict[Tuple[str, str], List[Tuple[int, int]]] = defaultdict(list)
    for a in kinds(run.records[client], "ack"):
        seqs[(types[a["id"]], a["ch"])].append((int(a["id"].rsplit("-", 1)[1]), a["offset"]))
    for (ty, ch), pairs in sorted(seqs.items()):
        pairs.sort()
        back = [(p, q) for p, q in zip(pairs, pairs[1:]) if q[1] <= p[1]]
        assert not back, f"{client}: {ty} on {ch} overtaken within its type ((seq, offset) pairs): {back[:5]}"


@pytest.mark.parametrize("client", CLIENTS)
def test_unlimited_types_are_not_held_back(run: Run, client: str) -> None:
    """An event of a type no limit reaches is acknowledged within `max_unlimited_ack_ms` of
    being handed to the client, while the deposit bucket is blocked (Retry-After, 12 s) and
    trade's tail is spaced 1.2 s apart."""
    assert client not in run.problems, run.problems[client]
    bound = SCN["max_unlimited_ack_ms"]
    types = {i: ty for i, (_, ty) in run.expected_ids(client).items()}
    lat = [(a["t"] - a["sent"], a["id"], types[a["id"]], a["sent"] - run.go_ms)
           for a in kinds(run.records[client], "ack") if types[a["id"]] in UNLIMITED]
    assert lat, f"{client}: no acknowledged events of {UNLIMITED}"
    ms = [x[0] for x in lat]
    log(f"limits {client}: unlimited ack latency over {len(ms)} events: p50 {pct(ms, 0.5):.1f} ms, "
        f"p99 {pct(ms, 0.99):.1f} ms, max {max(ms):.1f} ms")
    slow = sorted(lat, reverse=True)[:5]
    assert max(ms) <= bound, (
        f"{client}: unlimited events held back: the slowest (latency ms, id, type, handed over ms after go): "
        f"{[(round(x[0]), x[1], x[2], round(x[3])) for x in slow]} (bound {bound} ms)")


def refusal_story(run: Run, client: str, bucket: str) -> str:
    """Each per-event refusal of `bucket` for `client` (ms after go, retry_after_ms) and when
    the next request carrying that bucket arrived."""
    reqs = sorted((q for q in run.requests if q["sub"] == run.sub(client) and bucket in (q.get("buckets") or [])),
                  key=lambda q: q["at_ms"])
    out = []
    for i, q in enumerate(reqs):
        for ref in q.get("refused") or []:
            if ref["bucket"] == bucket:
                nxt = f"{reqs[i + 1]['at_ms'] - run.go_ms:.0f}" if i + 1 < len(reqs) else "none"
                out.append(f"refused at +{q['at_ms'] - run.go_ms:.0f} ms (retry_after_ms {ref['retry_after_ms']}), "
                           f"next request with {bucket} at +{nxt} ms")
    return "; ".join(dict.fromkeys(out)) or f"no refusal of {bucket}"


@pytest.mark.parametrize("client", CLIENTS)
def test_limited_wait_ends_when_the_bucket_refills(run: Run, client: str) -> None:
    """The last event of a limited type cannot be accepted before its bucket lets it through
    (the limiter is on) and is acknowledged within `refill_slack_ms` of that (the client does
    not wait longer than the bucket needs)."""
    assert client not in run.problems, run.problems[client]
    slack = SCN["refill_slack_ms"]
    types = {i: ty for i, (_, ty) in run.expected_ids(client).items()}
    acks = kinds(run.records[client], "ack")
    for ty, lim in LIMITED.items():
        interval = lim["window_s"] * 1000 / lim["quota"]
        mine = [a for a in acks if types[a["id"]] == ty]
        n = sum(1 for _, ty2 in run.expected_ids(client).values() if ty2 == ty)
        assert len(mine) == n, f"{client}: {len(mine)} of {n} {ty} events acknowledged"
        pre = [p for p in run.pre if p["client"] == client and p["type"] == ty]
        spent = sum(len(p["results"]) for p in pre)
        cells = spent + n - lim["burst"]
        if pre:
            earliest = min(p["at_ms"] for p in pre) + max(0, cells) * interval
            latest = max(p["done_ms"] for p in pre) + max(0, cells) * interval + slack
        else:
            first_sent = min(a["sent"] for a in mine)
            earliest = first_sent + max(0, cells) * interval
            latest = first_sent + max(0, cells) * interval + slack
        last = max(a["t"] for a in mine)
        log(f"limits {client}: last {ty} acknowledged {(last - run.go_ms) / 1000:.1f} s after go; bucket allows it "
            f"from {(earliest - run.go_ms) / 1000:.1f} s, limit {(latest - run.go_ms) / 1000:.1f} s")
        assert last >= earliest - 50, (
            f"{client}: the last {ty} was acknowledged {(earliest - last) / 1000:.1f} s before its bucket "
            f"({lim['bucket']}, {lim['quota']}/{lim['window_s']} s, burst {lim['burst']}) could accept it: is the limiter on?")
        assert last <= latest, (
            f"{client}: the last {ty} was acknowledged {(last - latest + slack) / 1000:.1f} s after its bucket "
            f"({lim['bucket']}) allowed it (slack {slack} ms): the client waited for nothing. "
            f"Server record: {refusal_story(run, client, lim['bucket'])}")


def test_no_request_before_retry_after(run: Run) -> None:
    """At the server: no request carries an event of bucket B before B's per-event refusal
    plus its retry_after_ms, and none arrives before a whole-request 429/503's Retry-After.
    Every client meets at least one deposit refusal (the orchestrator spent its bucket)."""
    assert not run.problems, "\n".join(run.problems.values())
    for p in run.pre:
        statuses = Counter(x["status"] for x in p["results"] or [])
        assert statuses == Counter({"accepted": len(p["results"])}), (
            f"spending {p['client']}'s {p['type']} bucket before go: {p['results']}")
    whole = check_whole_request_retry_after(run)
    refusals = check_bucket_retry_after(run)
    for ty, lim in LIMITED.items():
        if not any(p["type"] == ty for p in SCN.get("pre_exhaust", [])):
            continue
        for client in CLIENTS:
            assert refusals[(run.sub(client), lim["bucket"])] > 0, (
                f"{client} never had a {ty} refused although its bucket was spent before go: the per-bucket "
                f"Retry-After check is empty for it ({dict(refusals)})")
    log(f"limits: per-event refusals (sub, bucket): {dict(refusals)}; whole-request Retry-After answers: "
        f"{dict(whole)}; 0 early requests")
