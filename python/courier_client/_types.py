"""Plain value types returned by the clients."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Literal, Mapping, Optional, Tuple, Union, overload

from . import events as _events
from .events import CustomEventType, JsonValue, Metadata, Priority, PublishItem

__all__ = [
    "Priority",
    "PublishResult",
    "StreamPosition",
    "ReceivedEvent",
    "HistoryPage",
    "Gap",
    "DeadLetter",
    "ClientStats",
    "EventToPublish",
]


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
class HistoryPage:
    """One page of a channel's history (the replay API), from ``history(...).pages()``."""

    channel: str
    epoch: str
    """The history's epoch; the events' offsets belong to it."""
    latest: int
    """The channel's latest offset when the page was read (0 when it never had an event)."""
    events: Tuple[ReceivedEvent, ...]
    """The events, in the query's direction: the same ``ReceivedEvent`` a subscription yields."""
    next: Optional[str]
    """The cursor of the next page (``history(channel, cursor=...)`` continues there), ``None``
    when this page reached the end in its direction."""


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
    """Counters of a client (gauges are as of the call): the fields of the core's
    ``ClientStats``, by the same names in every SDK."""

    queued_high: int
    """High-priority events waiting to be sent (first attempts and retries)."""
    queued_normal: int
    queued_low: int
    in_flight: int
    """Events in batches awaiting an answer."""
    retrying: int
    """Queued events waiting to be sent again after a retryable failure."""
    retries: int
    """Events sent again after a retryable failure, in all."""
    dead: int
    """Events given up (see ``dead_letters()``)."""
    acknowledged: int
    budget_exhausted: int
    """Times retries waited for the retry budget."""
    rate_limit_waits: int
    """Times sending or reconnecting was held back by a server-announced limit."""
    reconnects: int
    events_received: int
    duplicates_dropped: int
    gaps: int
    heartbeat_timeouts: int
    channels: int
    """Channels subscribed (paused ones included)."""
    paused_channels: int
    """Channels paused because a subscription fell behind (see ``subscription_buffer``)."""
    pauses: int
    """Times a channel was paused, in all."""
    token_fetches: int
    """Token provider calls, in all."""
    wire_bytes_received: Optional[int]
    """Bytes read from the WebSocket's TCP connection (the upgrade, frame headers, payloads
    as they crossed the wire; TLS records for ``wss``), summed over every connection of the
    client, reconnects included. Excludes the HTTP requests of publishing and history. The
    client does not offer permessage-deflate, so it is above the JSON received. ``None``
    where not measured (never here: the native client always counts)."""
    wire_bytes_sent: Optional[int]
    """Bytes written to the WebSocket's TCP connection, counted like ``wire_bytes_received``."""

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

    if TYPE_CHECKING:  # the dataclass's __init__, typed by event type as ``publish`` is
        # BEGIN EventToPublish overloads: generated by python/gen_events.py from the catalogue, do not edit
        @overload
        def __init__(
            self, channel: str, event_type: Literal["backtest.completed"], data: _events.BacktestCompleted,
            priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
            retry: bool = ...,
        ) -> None: ...
        @overload
        def __init__(
            self, channel: str, event_type: Literal["backtest.failed"], data: _events.BacktestFailed,
            priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
            retry: bool = ...,
        ) -> None: ...
        @overload
        def __init__(
            self, channel: str, event_type: Literal["backtest.progress"], data: _events.BacktestProgress,
            priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
            retry: bool = ...,
        ) -> None: ...
        @overload
        def __init__(
            self, channel: str, event_type: Literal["backtest.started"], data: _events.BacktestStarted,
            priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
            retry: bool = ...,
        ) -> None: ...
        @overload
        def __init__(
            self, channel: str, event_type: Literal["forge.job.completed"], data: _events.ForgeJobCompleted,
            priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
            retry: bool = ...,
        ) -> None: ...
        @overload
        def __init__(
            self, channel: str, event_type: Literal["forge.job.failed"], data: _events.ForgeJobFailed,
            priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
            retry: bool = ...,
        ) -> None: ...
        @overload
        def __init__(
            self, channel: str, event_type: Literal["forge.job.progress"], data: _events.ForgeJobProgress,
            priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
            retry: bool = ...,
        ) -> None: ...
        @overload
        def __init__(
            self, channel: str, event_type: Literal["forge.job.started"], data: _events.ForgeJobStarted,
            priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
            retry: bool = ...,
        ) -> None: ...
        @overload
        def __init__(
            self, channel: str, event_type: Literal["order.cancelled"], data: _events.OrderCancelled,
            priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
            retry: bool = ...,
        ) -> None: ...
        @overload
        def __init__(
            self, channel: str, event_type: Literal["order.filled"], data: _events.OrderFilled,
            priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
            retry: bool = ...,
        ) -> None: ...
        @overload
        def __init__(
            self, channel: str, event_type: Literal["order.placed"], data: _events.OrderPlaced,
            priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
            retry: bool = ...,
        ) -> None: ...
        @overload
        def __init__(
            self, channel: str, event_type: Literal["position.updated"], data: _events.PositionUpdated,
            priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
            retry: bool = ...,
        ) -> None: ...
        @overload
        def __init__(
            self, channel: str, event_type: Literal["strategy.generation.completed"], data: _events.StrategyGenerationCompleted,
            priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
            retry: bool = ...,
        ) -> None: ...
        @overload
        def __init__(
            self, channel: str, event_type: Literal["strategy.generation.failed"], data: _events.StrategyGenerationFailed,
            priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
            retry: bool = ...,
        ) -> None: ...
        @overload
        def __init__(
            self, channel: str, event_type: Literal["strategy.generation.progress"], data: _events.StrategyGenerationProgress,
            priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
            retry: bool = ...,
        ) -> None: ...
        @overload
        def __init__(
            self, channel: str, event_type: Literal["strategy.generation.started"], data: _events.StrategyGenerationStarted,
            priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
            retry: bool = ...,
        ) -> None: ...
        @overload
        def __init__(
            self, channel: str, event_type: Literal["trade.executed"], data: _events.TradeExecuted,
            priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
            retry: bool = ...,
        ) -> None: ...
        @overload
        def __init__(
            self, channel: str, event_type: _events.CustomEventType, data: JsonValue,
            priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
            retry: bool = ...,
        ) -> None: ...
        # END EventToPublish overloads
        def __init__(self, *args: Any, **kwargs: Any) -> None: ...


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


def _page(item: Tuple[Any, ...]) -> Optional[HistoryPage]:
    """A native page tuple: ``("page", channel, epoch, latest, [event tuples], next)`` or
    ``("end", None)``."""
    if item[0] == "end":
        return None
    (_, channel, epoch, latest, events, nxt) = item
    return HistoryPage(channel, epoch, latest, tuple(_received(e) for e in events), nxt)


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


EventLike = Union[EventToPublish, PublishItem, Tuple[str, CustomEventType, JsonValue]]
"""A ``publish_many`` item: an ``EventToPublish``, a dict (a catalogue type with its data, see
``events.PublishItem``) or a ``(channel, CustomEventType(...), data)`` tuple. Type checkers give a
tuple no context to pick a catalogue type's data by its event type, so catalogue events are typed
as dicts; at run time any ``(channel, event_type, data)`` tuple is accepted."""
