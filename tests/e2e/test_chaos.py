"""Issue #6 part 3: the one scenario (scenario.json) run at once by every client — Rust
native, Python async, Python sync, Node and the browser — publishing to and subscribing from
the same channels while the server drops every connection, answers bursts of 429 and 503,
and restarts once (in-memory history: the restart loses it)."""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from typing import Any, Dict, List, Optional, Tuple

import pytest

from conftest import (ARTIFACTS, SCENARIO, SCENARIO_PATH, ClientProc, Server, client_argv, free_port, log,
                      read_jsonl, token)

CLIENTS: List[str] = SCENARIO["clients"]
CHANNELS: List[str] = SCENARIO["channels"]
N = SCENARIO["events_per_client"]


class Run:
    """Everything one chaos run produced."""

    def __init__(self) -> None:
        self.records: Dict[str, List[Dict[str, Any]]] = {}
        self.problems: Dict[str, str] = {}
        self.requests: List[Dict[str, Any]] = []
        self.timeline: List[Dict[str, Any]] = []
        self.restart: Dict[str, float] = {}
        self.publish_window: Tuple[float, float] = (0.0, 0.0)
        self.durations: Dict[str, float] = {}


@pytest.fixture(scope="module")
def run(server_bin: str) -> Run:
    r = Run()
    server = Server(server_bin, free_port(), SCENARIO["server_env"], "chaos-server")
    server.start()
    procs: Dict[str, ClientProc] = {}
    t_begin = time.monotonic()
    try:
        for name in CLIENTS:
            out = os.path.join(ARTIFACTS, f"chaos-{name}.jsonl")
            procs[name] = ClientProc(name, client_argv(name, server.url, server.ws_url, token(f"e2e-{name}"), out,
                                                        SCENARIO_PATH), out)
        for name, p in procs.items():
            if not p.wait_for("ready", 90):
                r.problems[name] = f"{name} never said `ready`; stderr:\n{p.stderr_tail()}"
        log(f"chaos: clients ready in {time.monotonic() - t_begin:.1f} s: {sorted(set(procs) - set(r.problems))}")
        for p in procs.values():
            p.send("go")
        t0 = time.monotonic()
        go_ms = time.time() * 1000
        for action in SCENARIO["chaos"]:
            time.sleep(max(0.0, t0 + action["at_s"] - time.monotonic()))
            at = time.time() * 1000
            if action["action"] == "drop":
                res = server.fault("drop")
            elif action["action"] == "fail":
                res = server.fault("fail", {k: v for k, v in action.items() if k in ("status", "count", "retry_after_secs")})
            elif action["action"] == "restart":
                r.requests += server.requests()
                res = server.restart()
                r.restart = res
            else:
                raise AssertionError(f"unknown chaos action {action}")
            r.timeline.append({"at_ms": at, "action": action, "result": res})
            log(f"chaos: t={action['at_s']:>5} s {action['action']} {res}")
        for name, p in procs.items():
            if name not in r.problems and not p.wait_for("published", 150):
                r.problems[name] = f"{name} did not finish publishing within 150 s; stderr:\n{p.stderr_tail()}"
        r.publish_window = (go_ms, time.time() * 1000)
        log(f"chaos: everyone published {time.monotonic() - t0:.1f} s after go")
        r.requests += server.requests()
        for p in procs.values():
            p.send("stop")
        for name, p in procs.items():
            if name not in r.problems and not p.wait_for("done", 60):
                r.problems[name] = f"{name} did not finish within 60 s of `stop`; stderr:\n{p.stderr_tail()}"
            r.durations[name] = (p.seen.get("published", 0) - go_ms) / 1000
    finally:
        for p in procs.values():
            p.kill()
        if server.proc is not None:
            server.stop()
    for name, p in procs.items():
        r.records[name] = read_jsonl(p.out)
    with open(os.path.join(ARTIFACTS, "chaos-requests.json"), "w") as f:
        json.dump({"timeline": r.timeline, "restart": r.restart, "requests": r.requests}, f)
    log(f"chaos: whole run {time.monotonic() - t_begin:.1f} s")
    return r


def kinds(recs: List[Dict[str, Any]], k: str) -> List[Dict[str, Any]]:
    return [x for x in recs if x["k"] == k]


def acks_by_position(run: Run) -> Dict[Tuple[str, str, int], str]:
    """(channel, epoch, offset) -> event id, from every publisher's acknowledgements."""
    out: Dict[Tuple[str, str, int], str] = {}
    for recs in run.records.values():
        for a in kinds(recs, "ack"):
            key = (a["ch"], a["epoch"], a["offset"])
            assert out.get(key, a["id"]) == a["id"], f"two events acknowledged at {key}: {out[key]} and {a['id']}"
            out[key] = a["id"]
    return out


def epochs(run: Run) -> List[str]:
    """The epochs in the order the server had them, from the acknowledgements."""
    first: Dict[str, float] = {}
    for recs in run.records.values():
        for i, a in enumerate(kinds(recs, "ack")):
            first.setdefault(a["epoch"], i)
    eps = sorted({a["epoch"] for recs in run.records.values() for a in kinds(recs, "ack")},
                 key=lambda e: min(i for recs in run.records.values() for i, a in enumerate(kinds(recs, "ack")) if a["epoch"] == e))
    return eps


@pytest.mark.parametrize("client", CLIENTS)
def test_publishes_are_acknowledged_or_dead_lettered(run: Run, client: str) -> None:
    assert client not in run.problems, run.problems[client]
    recs = run.records[client]
    acked = Counter(a["id"] for a in kinds(recs, "ack"))
    dead = {d["id"]: d for d in kinds(recs, "dead")}
    expected = {f"{client}-{i}" for i in range(N)}
    twice = [i for i, c in acked.items() if c > 1]
    assert not twice, f"{client}: events acknowledged twice: {twice[:10]}"
    assert not (set(acked) & set(dead)), f"{client}: events both acknowledged and dead: {sorted(set(acked) & set(dead))[:10]}"
    missing = expected - set(acked) - set(dead)
    assert not missing, f"{client}: {len(missing)} publishes have no outcome (neither ack nor dead letter): {sorted(missing)[:10]}"
    assert set(acked) | set(dead) == expected, f"{client}: outcomes for ids it never published"
    no_reason = [d for d in dead.values() if not d.get("code") or not d.get("message")]
    assert not no_reason, f"{client}: dead letters without a reason: {no_reason[:5]}"
    letters = {d["id"]: d for d in kinds(recs, "dead_letter")}
    assert set(letters) == set(dead), (
        f"{client}: the dead-letter list ({len(letters)}) differs from the failed publishes ({len(dead)})")
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
    time (scenario.json), so every later request was sent after the answer was read."""
    assert not run.problems, "\n".join(run.problems.values())
    by_sub: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for q in run.requests:
        if q["sub"]:
            by_sub[q["sub"]].append(q)
    violations = []
    checked: Counter = Counter()
    for sub, reqs in by_sub.items():
        reqs.sort(key=lambda q: q["at_ms"])
        not_before: Optional[float] = None
        cause: Optional[Dict[str, Any]] = None
        for q in reqs:
            if not_before is not None and q["at_ms"] < not_before:
                violations.append(f"{sub}: {q['path']} at {q['at_ms']:.1f} is {not_before - q['at_ms']:.1f} ms before "
                                  f"the Retry-After ({cause['retry_after']} s) of the {cause['status']} at {cause['at_ms']:.1f}")
            if q["retry_after_ms"] is not None and q["status"] in (429, 503):
                checked[sub] += 1
                until = q["at_ms"] + q["retry_after_ms"]
                if not_before is None or until > not_before:
                    not_before, cause = until, q
    assert not violations, "requests sent before their Retry-After passed:\n" + "\n".join(violations[:20])
    for client in CLIENTS:
        assert checked[f"e2e-{client}"] > 0, (
            f"{client} never got a Retry-After on a publish: the compliance check would be empty for it ({dict(checked)})")
    log(f"retry-after: answers with Retry-After per client: {dict(checked)}, 0 early requests")
