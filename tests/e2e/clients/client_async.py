"""The Python asyncio e2e client: `client_async.py SCENARIO NAME URL TOKEN OUT.jsonl`.

Subscribes to every channel, prints `ready`; on `go` (stdin) publishes its share on the
scenario's schedule (one `publish_many` per tick and event type), prints `published` once everything is acknowledged or dead-lettered; on `stop`
waits for the stream to go quiet, prints `done`."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, List

from common import Args, Record, by_type, now_ms, pos, read_control, status

from courier_client import AsyncCourierClient, CourierError, EventToPublish, Gap, PublishResult


async def main() -> None:
    args = Args(sys.argv)
    rec = Record(args.out)
    loop = asyncio.get_running_loop()
    go, stop = asyncio.Event(), asyncio.Event()
    read_control(lambda l: loop.call_soon_threadsafe({"go": go, "stop": stop}[l].set) if l in ("go", "stop") else None)

    def on_gap(g: Gap) -> None:
        rec.write({"k": "gap", "ch": g.channel, "reason": g.reason, "last": pos(g.last), "pos": pos(g.position)})

    client = AsyncCourierClient(
        args.url, token=args.token, service_name=f"e2e-{args.name}", on_gap=on_gap,
        on_state_change=lambda s: rec.write({"k": "state", "state": s, "t": time.time() * 1000}),
        **args.client_options(),
    )
    subs = [client.subscribe(ch) for ch in args.scenario["channels"]]
    for s in subs:
        await s.ready(timeout=20)

    async def consume(sub: Any) -> None:
        async for e in sub:
            rec.write({"k": "event", "ch": e.channel, "epoch": e.epoch, "offset": e.offset, "id": e.id})

    consumers = [asyncio.ensure_future(consume(s)) for s in subs]
    status("ready")
    await go.wait()

    async def publish(group: List[Any]) -> None:
        sent = now_ms()
        events = [EventToPublish(ch, ty, {"client": args.name, "seq": seq}, idempotency_key=f"{args.name}-{seq}")
                  for seq, ch, ty in group]
        results = await client.publish_many(events, return_exceptions=True)
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

    # One publish_many per tick and type: an event's acknowledgement time is not held up by
    # another type's bucket in the same call.
    start = time.monotonic()
    tasks = []
    for at_s, group in args.schedule():
        await asyncio.sleep(max(0.0, start + at_s - time.monotonic()))
        for part in by_type(group).values():
            tasks.append(asyncio.ensure_future(publish(part)))
    await asyncio.gather(*tasks)
    await client.flush(timeout=120)
    for d in client.dead_letters():
        rec.write({"k": "dead_letter", "id": d.id, "ch": d.channel, "code": d.code, "message": d.message, "attempts": d.attempts})
    status("published")

    await stop.wait()
    while time.monotonic() - rec.last_activity < 2.0:
        await asyncio.sleep(0.1)
    st = client.stats()
    rec.write({"k": "summary", "stats": {"reconnects": st.reconnects, "gaps": st.gaps, "duplicates_dropped": st.duplicates_dropped,
                                         "rate_limit_waits": st.rate_limit_waits, "retries": st.retries, "dead": st.dead,
                                         "acknowledged": st.acknowledged}})
    for s in subs:
        s.close()
    await client.close(timeout=10)
    for c in consumers:
        c.cancel()
    rec.close()
    status("done")


if __name__ == "__main__":
    asyncio.run(main())
