"""Issue #11: the `kill` scenario (scenarios/kill.json) — a memory-backed server at its default
settings, killed with SIGKILL and restarted on the same port twice mid-stream while every
client publishes and subscribes.

What the product promises, and what is asserted per client and channel:
- every acknowledged event that the server still held when the subscriber came back is
  delivered exactly once, in order: after each restart the new epoch is replayed from its
  first event (nothing is trimmed at these sizes, so the gap's new position is offset 0) and
  the last epoch is delivered up to its last acknowledged event;
- exactly one `epoch_changed` gap per restart, and the events missing are exactly those it
  names: the old epoch's events after the gap's `last`;
- no event twice within an epoch. Across a kill the same id may be delivered twice: a copy the
  old server stored (and delivered) but whose acknowledgement died with it, and the copy the
  client's retry stored on the fresh server (whose idempotency window is empty) and had
  acknowledged. The old copy then sits at a position nobody acknowledged and its id is
  acknowledged in a later epoch; anything else delivered at an unacknowledged position fails.
- no request before a Retry-After (whole request, or per bucket), measured at the server."""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List, Tuple

import pytest

from harness import (Run, acks_by_position, breaks, check_bucket_retry_after, check_publish_outcomes,
                     check_whole_request_retry_after, delivered, epochs, kinds, run_scenario)

from conftest import load_scenario, log

SCN = load_scenario("kill")
CLIENTS: List[str] = SCN["clients"]
CHANNELS: List[str] = SCN["channels"]
KILLS = [a for a in SCN["chaos"] if a["action"] in ("kill", "restart")]


@pytest.fixture(scope="module")
def run(server_bin: str) -> Run:
    return run_scenario(server_bin, "kill")


@pytest.mark.parametrize("client", CLIENTS)
def test_publishes_are_acknowledged_or_dead_lettered(run: Run, client: str) -> None:
    acked, dead = check_publish_outcomes(run, client, allow_dead=True)
    by_epoch = Counter(a["epoch"] for a in kinds(run.records[client], "ack"))
    retried = sum(1 for a in kinds(run.records[client], "ack") if (a.get("attempts") or 1) > 1)
    log(f"kill {client}: {len(acked)} acknowledged ({dict(by_epoch)}), {retried} after a retry, {len(dead)} "
        f"dead-lettered {dict(Counter(d['code'] for d in dead.values()))}, published in "
        f"{run.durations.get(client, 0):.1f} s")


@pytest.mark.parametrize("client", CLIENTS)
def test_every_held_acknowledged_event_is_delivered_once_and_gaps_name_the_rest(run: Run, client: str) -> None:
    assert client not in run.problems, run.problems[client]
    recs = run.records[client]
    by_pos = acks_by_position(run)
    eps = epochs(run)
    assert len(eps) == len(KILLS) + 1, f"expected {len(KILLS) + 1} epochs, the acknowledgements show {eps}"
    ack_epoch: Dict[str, str] = {}
    for rr in run.records.values():
        for a in kinds(rr, "ack"):
            ack_epoch[a["id"]] = a["epoch"]
    dead_ids = {d["id"] for rr in run.records.values() for d in kinds(rr, "dead")}
    hist = SCN["server_history_per_channel"]
    total = 0
    lost: Dict[int, int] = Counter()
    copies = 0
    for ch in CHANNELS:
        where = f"{client} on {ch}"
        events, gaps = delivered(recs, ch)
        total += len(events)
        unknown = [e for e in events if e["epoch"] not in eps]
        assert not unknown, f"{where}: events of an epoch no publisher was acknowledged in: {unknown[:3]}"
        order = [eps.index(e["epoch"]) for e in events]
        assert order == sorted(order), f"{where}: epochs interleaved (order not kept)"
        assert len(gaps) == len(KILLS), (
            f"{where}: expected exactly one gap per restart ({len(KILLS)}), got {len(gaps)}: {gaps}")
        for i, g in enumerate(gaps):
            assert g["reason"] == "epoch_changed", f"{where}: restart {i + 1}'s gap says {g['reason']}: {g}"
            assert g["last"] is not None and g["last"]["epoch"] == eps[i] and g["pos"]["epoch"] == eps[i + 1], (
                f"{where}: gap {i + 1} should lead from epoch {eps[i]} to {eps[i + 1]}: {g}")
        for i, ep in enumerate(eps):
            offs = [e["offset"] for e in events if e["epoch"] == ep]
            acked = sorted(o for (c, e2, o) in by_pos if c == ch and e2 == ep)
            assert not acked or acked[-1] < hist, f"{where}: epoch {ep} outgrew the history ({acked[-1]}); resize the scenario"
            if i == 0:
                start = 1
            else:
                prev = gaps[i - 1]
                # Nothing of this epoch was trimmed when the subscriber came back, so the
                # server replays it from its first event: the gap names none of it.
                assert prev["pos"]["offset"] == 0, (
                    f"{where}: after restart {i}, delivery resumed at {ep}:{prev['pos']['offset'] + 1}, not at its first "
                    f"event: the new epoch's offsets 1..{prev['pos']['offset']} "
                    f"({sum(1 for o in acked if o <= prev['pos']['offset'])} acknowledged) were held by the server and skipped")
                start = 1
            assert offs == list(range(start, start + len(offs))), (
                f"{where}: epoch {ep} delivered out of order, with holes or twice: first breaks {breaks(offs)}")
            end = offs[-1] if offs else start - 1
            if i < len(eps) - 1:
                g = gaps[i]
                assert g["last"]["offset"] == end, (
                    f"{where}: gap {i + 1} names {ep}:{g['last']['offset']} as the last delivered, the last delivered "
                    f"was {ep}:{end}")
                lost[i] += sum(1 for o in acked if o > end)
            else:
                assert end == (acked[-1] if acked else 0), (
                    f"{where}: the last server holds {ep} up to {acked[-1] if acked else 0} (acknowledged), delivered up to "
                    f"{end}: lost {sum(1 for o in acked if o > end)} acknowledged events it still held")
        # The acknowledged events not delivered are exactly those the gaps name.
        got = {(e["epoch"], e["offset"]) for e in events}
        missing = sorted(((eps.index(ep), o) for (c, ep, o) in by_pos if c == ch and (ep, o) not in got))
        unnamed = [(eps[i], o) for i, o in missing if i >= len(gaps) or o <= gaps[i]["last"]["offset"]]
        assert not unnamed, f"{where}: acknowledged events missing and named by no gap: {unnamed[:10]}"
        # Ids: the acknowledged one at each acknowledged position; at a position nobody
        # acknowledged, only an old copy of an event acknowledged (or dead-lettered) later.
        seen: Dict[Tuple[str, str], int] = {}
        for e in events:
            key = (ch, e["epoch"], e["offset"])
            if key in by_pos:
                assert by_pos[key] == e["id"], f"{where}: delivered {e['id']} at {key[1:]}, acknowledged there: {by_pos[key]}"
            else:
                later = ack_epoch.get(e["id"])
                assert e["id"] in dead_ids or (later is not None and eps.index(later) > eps.index(e["epoch"])), (
                    f"{where}: {e['id']} delivered at {key[1:]}, where no publisher was acknowledged, and its "
                    f"acknowledgement is at {later}: not an old copy of a retried event")
                copies += 1
            k = (e["epoch"], e["id"])
            assert k not in seen, f"{where}: {e['id']} delivered twice in epoch {e['epoch']} (offsets {seen[k]} and {e['offset']})"
            seen[k] = e["offset"]
        senders = {e["id"].rsplit("-", 1)[0] for e in events if e["epoch"] == eps[-1]}
        assert senders == set(CLIENTS), f"{where}: the last epoch has no events from {set(CLIENTS) - senders}"
    log(f"kill {client}: received {total} events on {len(CHANNELS)} channels; acknowledged events lost with the old "
        f"epoch (named by the gaps) per restart: {[lost[i] for i in range(len(KILLS))]}; old copies of retried events: "
        f"{copies}")


def test_kills_landed_mid_stream(run: Run) -> None:
    assert not run.problems, "\n".join(run.problems.values())
    assert len(run.restarts) == len(KILLS)
    acks: List[Dict[str, Any]] = [a for recs in run.records.values() for a in kinds(recs, "ack")]
    per_epoch = Counter(a["epoch"] for a in acks)
    eps = epochs(run)
    shares = [per_epoch[e] / len(acks) for e in eps]
    log(f"kill: {len(acks)} acknowledged, per epoch {[per_epoch[e] for e in eps]}; restarts "
        f"{[(round((x['signal_ms'] - run.go_ms) / 1000, 1), round(x['up_ms'] - x['signal_ms'])) for x in run.restarts]} "
        f"(s after go, ms down)")
    assert all(s >= 0.15 for s in shares), f"a kill did not land mid-stream: shares per epoch {shares}"
    assert all(x["signal_ms"] < run.publish_window[1] for x in run.restarts)


def test_no_request_before_retry_after(run: Run) -> None:
    assert not run.problems, "\n".join(run.problems.values())
    whole = check_whole_request_retry_after(run)
    refusals = check_bucket_retry_after(run)
    log(f"kill: whole-request Retry-After answers {dict(whole)}, per-bucket refusals {dict(refusals)}; 0 early requests")
