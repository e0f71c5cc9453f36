"""The Python sync e2e client (threads, no event loop): same role and protocol as
client_async.py."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from common import Args, Record, pos, read_control, status

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

    event_type = args.scenario["event_type"]
    tick_s = args.scenario["publish_tick_ms"] / 1000
    schedule = args.schedule()
    start = time.monotonic()
    tick = 0
    # Blocking publishes: when a call is held up (Retry-After, a restart), the next call
    # sends every group that fell due meanwhile.
    while tick < len(schedule):
        due = min(len(schedule), max(tick + 1, int((time.monotonic() - start) / tick_s) + 1))
        group = [e for g in schedule[tick:due] for e in g]
        tick = due
        events = [EventToPublish(ch, event_type, {"client": args.name, "seq": seq}, idempotency_key=i) for seq, ch, i in group]
        results = client.publish_many(events, return_exceptions=True)
        for (_, ch, i), r in zip(group, results):
            if isinstance(r, PublishResult):
                rec.write({"k": "ack", "id": i, "ch": ch, "epoch": r.epoch, "offset": r.offset, "dup": r.duplicate, "attempts": r.attempts})
            else:
                assert isinstance(r, CourierError), r
                rec.write({"k": "dead", "id": i, "ch": ch, "code": r.code, "message": str(r), "attempts": None})
        time.sleep(max(0.0, start + tick * tick_s - time.monotonic()))
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
