"""Plain value types returned by the clients."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Literal, Mapping, Optional, Tuple, Union

from .events import JsonValue, Metadata

__all__ = [
    "Priority",
    "PublishResult",
    "StreamPosition",
    "ReceivedEvent",
    "Gap",
    "DeadLetter",
    "ClientStats",
    "EventToPublish",
]

Priority = Literal["high", "normal", "low"]
"""How urgently an event is sent: high before normal before low."""


@dataclass(frozen=True)
class PublishResult:
    """The server's acknowledgement of one event."""

    id: str
    """The event id (its idempotency key)."""
    channel: str
    epoch: str
    """The channel history's epoch."""
    offset: int
    """The event's offset in the channel's history."""
    duplicate: bool
    """True when the server had already accepted this id (it was not delivered twice)."""
    attempts: int
    """How many times it was sent."""


@dataclass(frozen=True)
class StreamPosition:
    """A place in a channel's history; pass it as ``since`` to resume after it."""

    epoch: str
    offset: int


@dataclass(frozen=True)
class ReceivedEvent:
    """An event delivered on a subscribed channel (never a duplicate, in offset order)."""

    id: str
    type: str
    channel: str
    data: Any
    """The event's data, parsed from JSON (a dict for catalogue types)."""
    metadata: Metadata
    epoch: str
    offset: int

    @property
    def position(self) -> StreamPosition:
        """Where this event sits in the channel's history."""
        return StreamPosition(self.epoch, self.offset)


@dataclass(frozen=True)
class Gap:
    """Events on ``channel`` the server no longer holds, reported once; delivery goes on
    with the event after ``position``.

    Missing: within one epoch, offsets ``last.offset + 1 ..= position.offset``; after an
    epoch change, the old epoch's events after ``last`` and the new epoch's offsets
    ``1 ..= position.offset`` (none when ``position.offset`` is 0)."""

    channel: str
    reason: str
    """``history_unavailable``, ``epoch_changed`` or ``offset_skipped``."""
    last: Optional[StreamPosition]
    """The last position delivered before the gap."""
    position: StreamPosition
    """The last missing position: delivery continues right after it."""


@dataclass(frozen=True)
class DeadLetter:
    """An event the client gave up on, with the reason."""

    id: str
    channel: str
    event_type: str
    data: Any
    code: str
    """Why, e.g. ``INVALID_EVENT``, ``FORBIDDEN_CHANNEL``, ``TRANSPORT``."""
    message: str
    field: Optional[str]
    status: Optional[int]
    attempts: int


@dataclass(frozen=True)
class ClientStats:
    """Counters of a client (queue gauges are as of the call)."""

    queued_high: int
    queued_normal: int
    queued_low: int
    in_flight: int
    retrying: int
    """Queued events waiting to be sent again after a retryable failure."""
    retries: int
    dead: int
    """Events given up (see ``dead_letters()``)."""
    acknowledged: int
    reconnects: int
    rate_limit_waits: int
    """Times sending or reconnecting was held back by a server-announced limit."""
    events_received: int
    duplicates_dropped: int
    gaps: int
    heartbeat_timeouts: int

    @property
    def queued(self) -> Dict[str, int]:
        """Queued events per priority."""
        return {"high": self.queued_high, "normal": self.queued_normal, "low": self.queued_low}


@dataclass(frozen=True)
class EventToPublish:
    """One event for ``publish_many``."""

    channel: str
    event_type: str
    data: JsonValue
    priority: Priority = "normal"
    idempotency_key: Optional[str] = None
    metadata: Optional[Metadata] = None
    retry: bool = True


def _position(p: Optional[Tuple[str, int]]) -> Optional[StreamPosition]:
    return StreamPosition(p[0], p[1]) if p is not None else None


def _metadata(meta: Tuple[int, str, Optional[str], Optional[str]]) -> Metadata:
    m: Metadata = {"timestamp": meta[0], "source": meta[1]}
    if meta[2] is not None:
        m["correlation_id"] = meta[2]
    if meta[3] is not None:
        m["user_id"] = meta[3]
    return m


def _received(item: Tuple[Any, ...]) -> ReceivedEvent:
    (_, (eid, etype, channel, data), meta, epoch, offset) = item
    return ReceivedEvent(eid, etype, channel, json.loads(data), _metadata(meta), epoch, offset)


def _dead_letter(d: Mapping[str, Any]) -> DeadLetter:
    try:
        data = json.loads(d["data"])
    except ValueError:
        data = d["data"]
    return DeadLetter(
        id=d["id"],
        channel=d["channel"],
        event_type=d["event_type"],
        data=data,
        code=d["code"],
        message=d["message"],
        field=d["field"],
        status=d["status"],
        attempts=d["attempts"],
    )


EventLike = Union[EventToPublish, Mapping[str, Any], Tuple[str, str, JsonValue]]
