"""Issue #6 part 3: the `chaos` scenario (scenarios/chaos.json) run at once by every client —
Rust native, Python async, Python sync, Node and the browser — publishing to and subscribing
from the same channels while the server drops every connection, answers bursts of 429 and
503, and restarts once (in-memory history: the restart loses it). The server's rate limiter
is off here: every 429 is injected (test_limits.py runs the limiter at its defaults)."""

from __future__ import annotations

from collections import Counter
from typing import List

import pytest

from harness import Run, acks_by_position, check_publish_outcomes, check_whole_request_retry_after, epochs, kinds, run_scenario

from conftest import SCENARIO, log

CLIENTS: List[str] = SCENARIO["clients"]
CHANNELS: List[str] = SCENARIO["channels"]
N = sum(s["events"] for s in SCENARIO["streams"])


@pytest.fixture(scope="module")
def run(server_bin: str) -> Run:
    return run_scenario(server_bin, "chaos")


@pytest.mark.parametrize("client", CLIENTS)
def test_publishes_are_acknowledged_or_dead_lettered(run: Run, client: str) -> None:
    acked, dead = check_publish_outcomes(run, client, allow_dead=True)
    log(f"{client}: {len(acked)} acknowledged, {len(dead)} dead-lettered "
        f"{dict(Counter(d['code'] for d in dead.values()))}, published in {run.durations.get(client, 0):.1f} s")


@pytest.mark.parametrize("client", CLIENTS)
def test_delivery_per_channel_survives_chaos(run: Run, client: str) -> None:
    """Per channel: nothing lost while history covered the outages, nothing twice, in order,
    and exactly one gap (`epoch_changed`, at the restart)."""
    assert client not in run.problems, run.problems[client]
    recs = run.records[client]
    by_pos = acks_by_position(run)
    eps = epochs(run)
    assert len(eps) == 2, f"expected two epochs (before and after the restart), the acknowledgements show {eps}"
    old, new = eps
    dead_ids = {d["id"] for rr in run.records.values() for d in kinds(rr, "dead")}
    total = 0
    for ch in CHANNELS:
        events = [e for e in kinds(recs, "event") if e["ch"] == ch]
        gaps = [g for g in kinds(recs, "gap") if g["ch"] == ch]
        total += len(events)
        where = f"{client} on {ch}"
        ids = Counter(e["id"] for e in events)
        dups = [i for i, c in ids.items() if c > 1]
        assert not dups, f"{where}: events delivered twice: {dups[:10]}"
        assert not [e for e in events if e["id"] in dead_ids], f"{where}: a dead-lettered event was delivered"
        for e in events:
            assert by_pos.get((ch, e["epoch"], e["offset"])) == e["id"], (
                f"{where}: delivered {e['id']} at {e['epoch']}:{e['offset']}, acknowledged there: "
                f"{by_pos.get((ch, e['epoch'], e['offset']))}")
        seq = [e["epoch"] for e in events]
        assert seq == sorted(seq, key=eps.index), f"{where}: epochs interleaved (order not kept)"
        assert len(gaps) == 1, f"{where}: expected exactly one gap (the restart), got {gaps}"
        gap = gaps[0]
        assert gap["reason"] == "epoch_changed", f"{where}: the restart's gap says {gap['reason']}"
        assert gap["last"] is not None and gap["last"]["epoch"] == old and gap["pos"]["epoch"] == new, f"{where}: {gap}"
        before = [e["offset"] for e in events if e["epoch"] == old]
        after = [e["offset"] for e in events if e["epoch"] == new]
        assert before == list(range(1, len(before) + 1)), (
            f"{where}: offsets before the restart are not 1..n without holes: "
            f"first breaks {[(a, b) for a, b in zip(before, before[1:]) if b != a + 1][:5]}")
        assert gap["last"]["offset"] == (before[-1] if before else 0), f"{where}: the gap's `last` is not the last delivered"
        start = gap["pos"]["offset"] + 1
        assert after == list(range(start, start + len(after))), (
            f"{where}: offsets after the restart are not contiguous from {start}: "
            f"first breaks {[(a, b) for a, b in zip(after, after[1:]) if b != a + 1][:5]}")
        acked_new = max((o for (c, ep, o) in by_pos if c == ch and ep == new), default=0)
        assert (after[-1] if after else gap["pos"]["offset"]) == acked_new, (
            f"{where}: the last event acknowledged after the restart is offset {acked_new}, delivered up to "
            f"{after[-1] if after else None}: lost events that history covered")
        senders = {e["id"].rsplit("-", 1)[0] for e in events}
        assert senders == set(CLIENTS), f"{where}: cross-language delivery misses publishers {set(CLIENTS) - senders}"
    summary = kinds(recs, "summary")
    log(f"{client}: received {total} events on {len(CHANNELS)} channels, "
        f"stats {summary[0]['stats'] if summary else None}")


def test_stream_is_big_enough_and_the_chaos_landed_mid_stream(run: Run) -> None:
    assert not run.problems, "\n".join(run.problems.values())
    acked = sum(len(kinds(recs, "ack")) for recs in run.records.values())
    assert acked >= 20_000 * 0.95, f"only {acked} events acknowledged; the scenario needs a stream of 20,000"
    assert len(CLIENTS) * N >= 20_000
    first_ack_epochs = epochs(run)
    acks_after = sum(1 for recs in run.records.values() for a in kinds(recs, "ack") if a["epoch"] == first_ack_epochs[-1])
    assert 0.2 * acked < acks_after < 0.8 * acked, f"the restart did not land mid-stream: {acks_after} of {acked} after it"
    drops = [t for t in run.timeline if t["action"]["action"] == "drop"]
    # A client may be between sockets when a drop comes (backing off after the previous
    # fault, its upgrade refused by an injected 503): each drop must cut all but at most one
    # client, and at least four drops every client.
    cut = [t["result"]["dropped"] for t in drops]
    assert all(n >= len(CLIENTS) - 1 for n in cut) and sum(n >= len(CLIENTS) for n in cut) >= 4, (
        f"the drops should cut the clients' WebSockets: {cut}")
    injected = Counter((q["status"], q["path"].startswith("/ws")) for q in run.requests if q["status"] in (429, 503))
    log(f"chaos: {acked} acknowledged; injected answers (status, on /ws): {dict(injected)}")
    assert injected[(429, False)] > 0 and injected[(503, False)] > 0, "no publish met a 429 and a 503"


def test_no_client_sends_before_retry_after(run: Run) -> None:
    """Measured at the server: per token `sub`, no request arrives before the previous
    429/503's arrival plus its Retry-After. Each client has one publish request in flight at a
    time (scenarios/chaos.json), so every later request was sent after the answer was read."""
    assert not run.problems, "\n".join(run.problems.values())
    checked = check_whole_request_retry_after(run)
    for client in CLIENTS:
        assert checked[run.sub(client)] > 0, (
            f"{client} never got a Retry-After on a publish: the compliance check would be empty for it ({dict(checked)})")
    log(f"retry-after: answers with Retry-After per client: {dict(checked)}, 0 early requests")
