"""The Python sync e2e client (threads, no event loop): same role and protocol as
client_async.py."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Dict, List, Tuple

from common import Args, Record, by_type, now_ms, pos, read_control, status

from courier_client import CourierClient, CourierError, EventToPublish, Gap, PublishResult


def main() -> None:
    args = Args(sys.argv)
    rec = Record(args.out)
    go, stop = threading.Event(), threading.Event()
    read_control(lambda l: {"go": go, "stop": stop}[l].set() if l in ("go", "stop") else None)

    def on_gap(g: Gap) -> None:
        rec.write({"k": "gap", "ch": g.channel, "reason": g.reason, "last": pos(g.last), "pos": pos(g.position)})

    client = CourierClient(
        args.url, token=args.token, service_name=f"e2e-{args.name}", on_gap=on_gap,
        on_state_change=lambda s: rec.write({"k": "state", "state": s, "t": time.time() * 1000}),
        **args.client_options(),
    )
    subs = [client.subscribe(ch) for ch in args.scenario["channels"]]
    for s in subs:
        s.ready(timeout=20)
    finished = threading.Event()

    def consume(sub: Any) -> None:
        while not finished.is_set():
            e = sub.next(timeout=0.5)
            if e is not None:
                rec.write({"k": "event", "ch": e.channel, "epoch": e.epoch, "offset": e.offset, "id": e.id})

    threads = [threading.Thread(target=consume, args=(s,), daemon=True) for s in subs]
    for t in threads:
        t.start()
    status("ready")
    go.wait()

    def lane(ticks: List[Tuple[float, List[Tuple[int, str, str]]]], start: float) -> None:
        """Blocking publishes of one event type: when a call is held up (Retry-After, a
        restart, its bucket), the next call sends every tick that fell due meanwhile."""
        k = 0
        while k < len(ticks):
            time.sleep(max(0.0, start + ticks[k][0] - time.monotonic()))
            elapsed = time.monotonic() - start
            due = k + 1
            while due < len(ticks) and ticks[due][0] <= elapsed:
                due += 1
            group = [e for _, g in ticks[k:due] for e in g]
            k = due
            sent = now_ms()
            events = [EventToPublish(ch, ty, {"client": args.name, "seq": seq}, idempotency_key=f"{args.name}-{seq}")
                      for seq, ch, ty in group]
            results = client.publish_many(events, return_exceptions=True)
            t = now_ms()
            for (seq, ch, _), r in zip(group, results):
                i = f"{args.name}-{seq}"
                if isinstance(r, PublishResult):
                    rec.write({"k": "ack", "id": i, "ch": ch, "epoch": r.epoch, "offset": r.offset, "dup": r.duplicate,
                               "attempts": r.attempts, "sent": sent, "t": t})
                else:
                    assert isinstance(r, CourierError), r
                    rec.write({"k": "dead", "id": i, "ch": ch, "code": r.code, "message": str(r), "attempts": None,
                               "sent": sent, "t": t})

    # One thread per event type, so a type held back by its bucket does not hold up the
    # calls of the others (a sync caller mixing types would do the same).
    lanes: Dict[str, List[Tuple[float, List[Tuple[int, str, str]]]]] = {}
    for at_s, group in args.schedule():
        for ty, part in by_type(group).items():
            lanes.setdefault(ty, []).append((at_s, part))
    start = time.monotonic()
    workers = [threading.Thread(target=lane, args=(ticks, start), daemon=True) for ticks in lanes.values()]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    client.flush(timeout=120)
    for d in client.dead_letters():
        rec.write({"k": "dead_letter", "id": d.id, "ch": d.channel, "code": d.code, "message": d.message, "attempts": d.attempts})
    status("published")

    stop.wait()
    while time.monotonic() - rec.last_activity < 2.0:
        time.sleep(0.1)
    st = client.stats()
    rec.write({"k": "summary", "stats": {"reconnects": st.reconnects, "gaps": st.gaps, "duplicates_dropped": st.duplicates_dropped,
                                         "rate_limit_waits": st.rate_limit_waits, "retries": st.retries, "dead": st.dead,
                                         "acknowledged": st.acknowledged}})
    finished.set()
    for s in subs:
        s.close()
    client.close(timeout=10)
    rec.close()
    status("done")


if __name__ == "__main__":
    main()
