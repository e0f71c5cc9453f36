"""Runs one scenario of scenarios/*.json with every client at once, and the checks several
scenarios share.

A scenario names its channels, clients, token claims, publish streams, client options, the
server's environment and a chaos schedule. The orchestrator resolves the streams into one
publish schedule (`schedule`: ticks of `{at_ms, events: [[seq, channel, type], ...]}`, ids
`NAME-SEQ`) written with the rest of the scenario to tests/artifacts/e2e/NAME-scenario.json,
which is the file the clients read: no client computes a schedule of its own."""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from typing import Any, Dict, List, Optional, Tuple

from conftest import ARTIFACTS, ClientProc, Server, client_argv, free_port, load_scenario, log, read_jsonl, token

Pos = Tuple[str, str, int]  # (channel, epoch, offset)


def build_schedule(scn: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every stream `{type, events, rate_per_s, start_s?, channels?}` paced in ticks of
    `publish_tick_ms` (a tick holds the events with index < round((tick + 1) * per_tick)),
    or handed over at once at `start_s` when `rate_per_s` is null; merged by time, then by
    stream order, and numbered in that order."""
    tick_ms = scn["publish_tick_ms"]
    by_time: Dict[float, List[Tuple[int, str, str]]] = defaultdict(list)
    for si, st in enumerate(scn["streams"]):
        n = st["events"]
        chans = st.get("channels", scn["channels"])
        start_ms = float(st.get("start_s", 0)) * 1000
        rate = st.get("rate_per_s")
        if not rate:
            by_time[start_ms] += [(si, chans[j % len(chans)], st["type"]) for j in range(n)]
            continue
        per_tick = rate * tick_ms / 1000
        j = tick = 0
        while j < n:
            due = min(n, round((tick + 1) * per_tick))
            if due > j:
                by_time[start_ms + tick * tick_ms] += [(si, chans[k % len(chans)], st["type"]) for k in range(j, due)]
                j = due
            tick += 1
    out = []
    seq = 0
    for at in sorted(by_time):
        group = []
        for _, ch, ty in sorted(by_time[at], key=lambda e: e[0]):  # stable: stream order, then index
            group.append([seq, ch, ty])
            seq += 1
        out.append({"at_ms": at, "events": group})
    return out


class Run:
    """Everything one run of a scenario produced."""

    def __init__(self, scn: Dict[str, Any]) -> None:
        self.scenario = scn
        self.name: str = scn["name"]
        self.clients: List[str] = scn["clients"]
        self.schedule: List[Dict[str, Any]] = scn["schedule"]
        self.records: Dict[str, List[Dict[str, Any]]] = {}
        self.problems: Dict[str, str] = {}
        self.requests: List[Dict[str, Any]] = []
        self.timeline: List[Dict[str, Any]] = []
        self.restarts: List[Dict[str, float]] = []
        self.pre: List[Dict[str, Any]] = []
        self.go_ms: float = 0.0
        self.publish_window: Tuple[float, float] = (0.0, 0.0)
        self.durations: Dict[str, float] = {}
        self.whole_s: float = 0.0

    def events(self) -> List[Tuple[int, str, str]]:
        """(seq, channel, type) of every event a client publishes."""
        return [(e[0], e[1], e[2]) for t in self.schedule for e in t["events"]]

    def expected_ids(self, client: str) -> Dict[str, Tuple[str, str]]:
        """id -> (channel, type) of what `client` publishes."""
        return {f"{client}-{seq}": (ch, ty) for seq, ch, ty in self.events()}

    def sub(self, client: str) -> str:
        return f"e2e-{self.name}-{client}"


def run_scenario(server_bin: str, name: str) -> Run:
    scn = load_scenario(name)
    scn["schedule"] = build_schedule(scn)
    path = os.path.join(ARTIFACTS, f"{name}-scenario.json")
    with open(path, "w") as f:
        json.dump(scn, f)
    r = Run(scn)
    claims = scn.get("token", {})
    server = Server(server_bin, free_port(), scn["server_env"], f"{name}-server")
    server.start()
    procs: Dict[str, ClientProc] = {}
    tokens = {c: token(r.sub(c), role=claims.get("role", "service"), tier=claims.get("tier")) for c in r.clients}
    t_begin = time.monotonic()
    try:
        for c in r.clients:
            out = os.path.join(ARTIFACTS, f"{name}-{c}.jsonl")
            procs[c] = ClientProc(f"{name}-{c}", client_argv(c, server.url, server.ws_url, tokens[c], out, path), out)
        for c, p in procs.items():
            if not p.wait_for("ready", 90):
                r.problems[c] = f"{c} never said `ready`; stderr:\n{p.stderr_tail()}"
        log(f"{name}: clients ready in {time.monotonic() - t_begin:.1f} s: {sorted(set(procs) - set(r.problems))}")
        for pre in scn.get("pre_exhaust", []):
            # Spends each user's bucket from outside the client (another process of the same
            # user, as far as the client can tell), so its first publish of the type is refused.
            for c in r.clients:
                at = time.time() * 1000
                events = [{"id": f"pre-{name}-{c}-{pre['type']}-{i}", "type": pre["type"], "channel": pre["channel"],
                           "data": {"pre": i}, "metadata": {"timestamp": int(at), "source": "e2e-orchestrator"}}
                          for i in range(pre["events"])]
                res = server.publish_batch(tokens[c], events)
                r.pre.append({"client": c, "type": pre["type"], "at_ms": at, "done_ms": time.time() * 1000,
                              "results": res.get("results")})
        for p in procs.values():
            p.send("go")
        t0 = time.monotonic()
        r.go_ms = time.time() * 1000
        for action in scn["chaos"]:
            time.sleep(max(0.0, t0 + action["at_s"] - time.monotonic()))
            at = time.time() * 1000
            if action["action"] == "drop":
                res = server.fault("drop")
            elif action["action"] == "fail":
                res = server.fault("fail", {k: v for k, v in action.items() if k in ("status", "count", "retry_after_secs")})
            elif action["action"] in ("restart", "kill"):
                r.requests += server.requests()
                res = server.restart(kill=action["action"] == "kill", down_s=float(action.get("down_s", 0)))
                r.restarts.append(res)
            else:
                raise AssertionError(f"unknown chaos action {action}")
            r.timeline.append({"at_ms": at, "action": action, "result": res})
            log(f"{name}: t={action['at_s']:>5} s {action['action']} {res}")
        for c, p in procs.items():
            if c not in r.problems and not p.wait_for("published", 150):
                r.problems[c] = f"{c} did not finish publishing within 150 s; stderr:\n{p.stderr_tail()}"
        r.publish_window = (r.go_ms, time.time() * 1000)
        log(f"{name}: everyone published {time.monotonic() - t0:.1f} s after go")
        r.requests += server.requests()
        for p in procs.values():
            p.send("stop")
        for c, p in procs.items():
            if c not in r.problems and not p.wait_for("done", 60):
                r.problems[c] = f"{c} did not finish within 60 s of `stop`; stderr:\n{p.stderr_tail()}"
            r.durations[c] = (p.seen.get("published", 0) - r.go_ms) / 1000
    finally:
        for p in procs.values():
            p.kill()
        if server.proc is not None:
            server.stop()
    for c, p in procs.items():
        r.records[c] = read_jsonl(p.out)
    with open(os.path.join(ARTIFACTS, f"{name}-requests.json"), "w") as f:
        json.dump({"go_ms": r.go_ms, "timeline": r.timeline, "restarts": r.restarts, "pre": r.pre,
                   "requests": r.requests}, f)
    r.whole_s = time.monotonic() - t_begin
    log(f"{name}: whole run {r.whole_s:.1f} s; publishing took "
        + ", ".join(f"{c} {d:.1f} s" for c, d in r.durations.items()))
    return r


# --- shared checks ------------------------------------------------------------------------


def kinds(recs: List[Dict[str, Any]], k: str) -> List[Dict[str, Any]]:
    return [x for x in recs if x["k"] == k]


def acks_by_position(run: Run) -> Dict[Pos, str]:
    """(channel, epoch, offset) -> event id, from every publisher's acknowledgements."""
    out: Dict[Pos, str] = {}
    for recs in run.records.values():
        for a in kinds(recs, "ack"):
            key = (a["ch"], a["epoch"], a["offset"])
            assert out.get(key, a["id"]) == a["id"], f"two events acknowledged at {key}: {out[key]} and {a['id']}"
            out[key] = a["id"]
    return out


def epochs(run: Run) -> List[str]:
    """The epochs in the order the server had them: by the first acknowledgement in each
    (acknowledgement times when the records carry them, else record order)."""
    first: Dict[str, float] = {}
    for recs in run.records.values():
        for i, a in enumerate(kinds(recs, "ack")):
            t = float(a.get("t", i))
            first[a["epoch"]] = min(first.get(a["epoch"], t), t)
    return sorted(first, key=lambda e: first[e])


def check_publish_outcomes(run: Run, client: str, allow_dead: bool) -> Tuple[Counter, Dict[str, Dict[str, Any]]]:
    """Every publish of `client` acknowledged once or dead-lettered with a reason (and listed
    among the dead letters); with `allow_dead=False`, every publish acknowledged."""
    assert client not in run.problems, run.problems[client]
    recs = run.records[client]
    acked = Counter(a["id"] for a in kinds(recs, "ack"))
    dead = {d["id"]: d for d in kinds(recs, "dead")}
    expected = set(run.expected_ids(client))
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
    if not allow_dead:
        assert not dead, (f"{client}: {len(dead)} publishes dead-lettered where every one should be acknowledged: "
                          f"{[(d['id'], d['code'], d['message']) for d in list(dead.values())[:5]]}")
    return acked, dead


def check_whole_request_retry_after(run: Run) -> Counter:
    """Measured at the server: per token `sub`, no request arrives before a previous
    whole-request 429/503's arrival plus its Retry-After. Each client has one publish request
    in flight at a time, so every later request was sent after the answer was read. Returns
    the number of such answers per sub."""
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
            if not_before is not None and cause is not None and q["at_ms"] < not_before:
                violations.append(f"{sub}: {q['path']} at {q['at_ms']:.1f} is {not_before - q['at_ms']:.1f} ms before "
                                  f"the Retry-After ({cause['retry_after']} s) of the {cause['status']} at {cause['at_ms']:.1f}")
            if q["retry_after_ms"] is not None and q["status"] in (429, 503):
                checked[sub] += 1
                until = q["at_ms"] + q["retry_after_ms"]
                if not_before is None or until > not_before:
                    not_before, cause = until, q
    assert not violations, "requests sent before their Retry-After passed:\n" + "\n".join(violations[:20])
    return checked


def check_bucket_retry_after(run: Run) -> Counter:
    """Measured at the server: per token `sub` and bucket B, no request carrying an event of
    B arrives before a previous refusal of B (`refused: [{bucket, retry_after_ms}]` in the
    request record) plus its retry_after_ms. A refusal by `user` holds every event of that
    user. Returns the refusals per (sub, bucket)."""
    publishes = [q for q in run.requests if q["path"].startswith("/publish") and q["status"] < 400]
    lacking = [q for q in publishes if "buckets" not in q or "refused" not in q]
    assert not lacking, (f"{len(lacking)} of {len(publishes)} publish requests in the server's record have no "
                         f"`buckets`/`refused` (is the server older than the per-bucket record?): {lacking[:2]}")
    by_sub: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for q in run.requests:
        if q["sub"] and q["path"].startswith("/publish"):
            by_sub[q["sub"]].append(q)
    violations = []
    refusals: Counter = Counter()
    for sub, reqs in by_sub.items():
        reqs.sort(key=lambda q: q["at_ms"])
        until: Dict[str, Tuple[float, Dict[str, Any], int]] = {}
        for q in reqs:
            carried = set(q.get("buckets") or [])
            if carried:
                carried.add("user")
            for b in sorted(carried):
                if b in until and q["at_ms"] < until[b][0]:
                    t, cause, ms = until[b]
                    violations.append(
                        f"{sub}: {q['path']} at {q['at_ms']:.1f} carries an event of {b!r} {t - q['at_ms']:.1f} ms before "
                        f"the end of its refusal ({ms} ms) answered to the request at {cause['at_ms']:.1f}")
            for ref in q.get("refused") or []:
                refusals[(sub, ref["bucket"])] += 1
                t = q["at_ms"] + ref["retry_after_ms"]
                if ref["bucket"] not in until or t > until[ref["bucket"]][0]:
                    until[ref["bucket"]] = (t, q, ref["retry_after_ms"])
    assert not violations, (f"{len(violations)} requests carried events of a bucket before its Retry-After:\n"
                            + "\n".join(violations[:20]))
    return refusals


def delivered(recs: List[Dict[str, Any]], ch: str) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    return [e for e in kinds(recs, "event") if e["ch"] == ch], [g for g in kinds(recs, "gap") if g["ch"] == ch]


def breaks(offsets: List[int]) -> List[Tuple[int, int]]:
    return [(a, b) for a, b in zip(offsets, offsets[1:]) if b != a + 1][:5]
