"""The public clients: ``AsyncCourierClient`` (asyncio) and ``CourierClient`` (blocking).

Both are thin: the Rust core decides batching, retries, backoff, Retry-After, rate limits,
reconnects, resume and token refresh; this module only converts values and waits.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from datetime import datetime
from types import TracebackType
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    Iterator,
    List,
    Literal,
    Optional,
    Sequence,
    Tuple,
    Type,
    Union,
    overload,
)

from . import _logging, _native
from . import events as _events
from ._types import (
    ClientStats,
    DeadLetter,
    EventLike,
    EventToPublish,
    Gap,
    HistoryPage,
    Priority,
    PublishResult,
    ReceivedEvent,
    StreamPosition,
    _dead_letter,
    _page,
    _position,
    _received,
)
from .errors import CourierError, CourierTimeoutError, ValidationError
from .events import JsonValue, Metadata

__all__ = [
    "AsyncCourierClient",
    "CourierClient",
    "AsyncSubscription",
    "Subscription",
    "AsyncHistory",
    "History",
    "TokenSource",
]

TokenSource = Union[str, Callable[[], Union[str, Awaitable[str]]]]
"""A JWT, or a callable returning one (or an awaitable of one); called again on expiry."""

StateCallback = Callable[[str], None]
ErrorCallback = Callable[[CourierError], None]
GapCallback = Callable[[Gap], None]
SinceLike = Union[StreamPosition, Tuple[str, int], None]
HistorySince = Union[int, datetime, None]
"""Unix milliseconds, or an aware ``datetime``."""
Direction = Literal["forward", "backward"]


def _since_ms(since: HistorySince) -> Optional[int]:
    if since is None or isinstance(since, int):
        return since
    if since.tzinfo is None:
        raise ValidationError(
            "since: a naive datetime is ambiguous; give one with a timezone (or Unix ms)",
            field="since",
            reason="bad_format",
        )
    return int(since.timestamp() * 1000)


def _history_args(
    after: Optional[int],
    before: Optional[int],
    since: HistorySince,
    cursor: Optional[str],
    direction: Optional[Direction],
    limit: int,
) -> Dict[str, Any]:
    if direction not in (None, "forward", "backward"):
        raise ValidationError(
            f"direction must be 'forward' or 'backward', not {direction!r}", field="direction", reason="bad_format"
        )
    # Types and the offsets' range here; the rest (one start, `limit` 1 to 1000) is the core's.
    for name, value in (("after", after), ("before", before), ("limit", limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValidationError(f"{name} must be a whole number, not {value!r}", field=name, reason="wrong_type")
        if value is not None and not 0 <= value < 2**63:
            raise ValidationError(f"{name} must be 0 to 2**63 - 1, not {value}", field=name, reason="out_of_range")
    if limit >= 2**32:
        raise ValidationError(f"limit must be 1 to 1000, not {limit}", field="limit", reason="out_of_range")
    return {
        "after": after,
        "before": before,
        "since_ms": _since_ms(since),
        "cursor": cursor,
        "backward": None if direction is None else direction == "backward",
        "limit": limit,
    }

_EventArgs = Tuple[str, str, str, str, bool, Optional[str], Optional[str]]


def _event_args(
    channel: str,
    event_type: str,
    data: JsonValue,
    priority: str,
    idempotency_key: Optional[str],
    metadata: Optional[Metadata],
    retry: bool,
) -> _EventArgs:
    try:
        data_json = json.dumps(data, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValidationError(f"data is not JSON-serialisable: {e}", field="data", reason="wrong_type") from None
    meta_json = json.dumps(metadata, separators=(",", ":")) if metadata else None
    return (channel, event_type, data_json, priority, retry, idempotency_key, meta_json)


def _item_args(item: EventLike) -> _EventArgs:
    if isinstance(item, EventToPublish):
        return _event_args(
            item.channel, item.event_type, item.data, item.priority, item.idempotency_key, item.metadata, item.retry
        )
    if isinstance(item, tuple):
        channel, event_type, data = item
        return _event_args(channel, event_type, data, "normal", None, None, True)
    return _event_args(
        item["channel"],
        item["event_type"],
        item.get("data"),
        item.get("priority", "normal"),
        item.get("idempotency_key"),
        item.get("metadata"),
        item.get("retry", True),
    )


def _since(since: SinceLike) -> Optional[Tuple[str, int]]:
    if since is None:
        return None
    if isinstance(since, StreamPosition):
        return (since.epoch, since.offset)
    return (str(since[0]), int(since[1]))


def _options(kw: Dict[str, Any]) -> str:
    """Client options as the JSON the native module reads (unknown names are refused)."""
    queue_keys = {
        "max_queued", "max_batch_events", "max_batch_bytes", "linger_ms", "max_in_flight",
        "max_attempts", "retry_after_cap_ms", "max_payload_bytes", "max_dead_letters",
    }
    conn_keys = {"connect_timeout_ms", "heartbeat_grace_ms", "max_frame_bytes"}
    queue: Dict[str, Any] = {}
    conn: Dict[str, Any] = {}
    out: Dict[str, Any] = {}
    for k, v in kw.items():
        if v is None:
            continue
        if k in queue_keys:
            queue[k] = v
        elif k in conn_keys:
            conn[k] = v
        elif k == "request_timeout":
            out["request_timeout_ms"] = int(float(v) * 1000)
        elif k == "worker_threads":
            out["worker_threads"] = int(v)
        elif k == "subscription_buffer":
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"subscription_buffer must be an int of at least 1, not {v!r}")
            out["subscription_buffer"] = v
        elif k == "backoff":
            conn["backoff"] = v
            queue["backoff"] = v
        else:
            raise TypeError(f"unknown option {k!r}")
    if queue:
        out["queue"] = queue
    if conn:
        out["connection"] = conn
    return json.dumps(out)


def _call_token_sync(token: Callable[[], Union[str, Awaitable[str]]], reply: Any) -> None:
    try:
        result = token()
        if inspect.isawaitable(result):
            awaitable = result

            async def wait() -> str:
                return await awaitable

            result = asyncio.run(wait())
        if not isinstance(result, str):
            reply(None, f"the token provider returned {type(result).__name__}, not str")
        else:
            reply(result, None)
    except BaseException as e:  # noqa: BLE001 - reported to the core, which retries
        reply(None, f"{type(e).__name__}: {e}")


# --- asyncio plumbing -------------------------------------------------------------------


def _resolve(group: List[Tuple["asyncio.Future[Any]", bool, Any]]) -> None:
    for fut, ok, value in group:
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def _dispatch(items: List[Tuple["asyncio.Future[Any]", bool, Any]]) -> None:
    """Called by the native runtime with every outcome ready at once: one wake-up per loop."""
    by_loop: Dict[asyncio.AbstractEventLoop, List[Tuple["asyncio.Future[Any]", bool, Any]]] = {}
    for item in items:
        by_loop.setdefault(item[0].get_loop(), []).append(item)
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, group)
        except RuntimeError:
            pass  # the loop is closed; nobody is waiting any more


class _Base:
    _native: Any
    _closed: bool

    def __init__(self) -> None:
        self._state_callbacks: List[StateCallback] = []
        self._error_callbacks: List[ErrorCallback] = []
        self._closed = False

    def _make_native(
        self,
        base_url: str,
        token: TokenSource,
        service_name: Optional[str],
        options: Dict[str, Any],
        provider: Callable[[bool, Any], None],
        dispatch: Optional[Callable[..., None]],
    ) -> Any:
        _logging.install()
        if isinstance(token, str):
            return _native.NativeClient(
                base_url, token, None, service_name, _options(options), self._on_native_event, dispatch
            )
        if not callable(token):
            raise TypeError("token must be a str or a callable returning one (or an awaitable of one)")
        return _native.NativeClient(
            base_url, None, provider, service_name, _options(options), self._on_native_event, dispatch
        )

    def _on_native_event(self, kind: str, state: Optional[str], error: Optional[CourierError]) -> None:
        raise NotImplementedError

    def _fire(self, kind: str, state: Optional[str], error: Optional[CourierError]) -> None:
        if kind == "state" and state is not None:
            for cb in list(self._state_callbacks):
                cb(state)
        elif kind == "error" and error is not None:
            for on_error in list(self._error_callbacks):
                on_error(error)

    def on_state_change(self, callback: StateCallback) -> None:
        """Calls ``callback(state)`` on every connection state change: ``connecting``,
        ``connected``, ``disconnected`` (a reconnect is scheduled) or ``closed``."""
        self._state_callbacks.append(callback)

    def on_error(self, callback: ErrorCallback) -> None:
        """Calls ``callback(error)`` for connection errors the client recovers from (or not:
        the state then becomes ``closed``)."""
        self._error_callbacks.append(callback)

    @property
    def state(self) -> str:
        """The subscriber connection's state."""
        return str(self._native.state())

    def stats(self) -> ClientStats:
        """Queued events per priority, retrying, dead, acknowledged, reconnects, rate-limit
        waits and more."""
        return ClientStats(**self._native.stats())

    def dead_letters(self) -> List[DeadLetter]:
        """Events the client gave up on, with their reasons (oldest first)."""
        return [_dead_letter(d) for d in self._native.dead_letters()]


# --- asyncio client -----------------------------------------------------------------------


class AsyncSubscription:
    """An ``async for`` iterator of the events of one channel; resumes across reconnects."""

    def __init__(self, native: Any, channel: str, on_gap: Optional[GapCallback]) -> None:
        self._native = native
        self.channel = channel
        self.gaps: List[Gap] = []
        self._on_gap = on_gap
        self._done = False

    def __aiter__(self) -> "AsyncSubscription":
        return self

    async def __anext__(self) -> ReceivedEvent:
        while True:
            if self._done:
                raise StopAsyncIteration
            fut: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
            self._native.next_start(fut)
            item = await fut
            kind = item[0]
            if kind == "event":
                return _received(item)
            if kind == "gap":
                self._gap(item)
            elif kind == "end":
                self._done = True
                if item[1] is not None:
                    raise item[1]
                raise StopAsyncIteration

    def _gap(self, item: Tuple[Any, ...]) -> None:
        last = _position(item[2])
        pos = _position(item[3])
        assert pos is not None
        gap = Gap(self.channel, item[1], last, pos)
        self.gaps.append(gap)
        if self._on_gap is not None:
            self._on_gap(gap)

    async def ready(self, timeout: Optional[float] = None) -> StreamPosition:
        """Waits until the server confirmed the subscription; returns the channel's position
        then (events published after this call are delivered)."""
        fut: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
        self._native.ready_start(fut)
        try:
            epoch, offset = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise CourierTimeoutError(f"subscription not confirmed within {timeout} s", code="TIMEOUT") from None
        return StreamPosition(epoch, offset)

    @property
    def position(self) -> Optional[StreamPosition]:
        """The position of the last event returned."""
        return _position(self._native.position())

    def close(self) -> None:
        """Unsubscribes; iteration ends."""
        self._native.close()

    async def __aenter__(self) -> "AsyncSubscription":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class AsyncHistory:
    """A channel's history through the replay API: ``async for event in ...`` yields the
    events (``ReceivedEvent``, as a subscription does) in the query's direction, fetching pages
    as needed; ``pages()`` yields whole ``HistoryPage``s. Ends at the end of the history in that
    direction; a refusal raises the SDK's exception (``ForbiddenChannelError``,
    ``ValidationError`` with code ``EPOCH_CHANGED`` for a cursor of a lost history, ...)."""

    def __init__(self, native: Any, channel: str) -> None:
        self._native = native
        self.channel = channel
        self._pending: List[ReceivedEvent] = []
        self._done = False

    async def next_page(self) -> Optional[HistoryPage]:
        """The next page, ``None`` once the end was reached."""
        if self._done:
            return None
        fut: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
        self._native.next_start(fut)
        page = _page(await fut)
        if page is None or page.next is None:
            self._done = True
        return page

    async def pages(self) -> AsyncIterator[HistoryPage]:
        """Every page, in order."""
        while True:
            page = await self.next_page()
            if page is None:
                return
            yield page

    def __aiter__(self) -> "AsyncHistory":
        return self

    async def __anext__(self) -> ReceivedEvent:
        while not self._pending:
            page = await self.next_page()
            if page is None:
                raise StopAsyncIteration
            self._pending.extend(reversed(page.events))
        return self._pending.pop()


class AsyncCourierClient(_Base):
    """Publishes and subscribes from asyncio code.

    ``token`` is a JWT or a callable returning one (or an awaitable of one); it is called
    again when the token expires. Options: ``max_queued``, ``max_batch_events``,
    ``linger_ms``, ``max_in_flight``, ``max_attempts``, ``request_timeout`` (seconds),
    ``connect_timeout_ms``, ``heartbeat_grace_ms``, ``backoff`` (dict), ``worker_threads``,
    ``subscription_buffer`` (unread events a subscription may hold, default 10,000: a
    subscription that falls further behind is paused, then resumed from history after the
    last event it was given, so memory stays bounded and, while history covers the pause,
    nothing is lost; a gap is reported when it does not).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: TokenSource,
        service_name: Optional[str] = None,
        on_state_change: Optional[StateCallback] = None,
        on_error: Optional[ErrorCallback] = None,
        on_gap: Optional[GapCallback] = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self._token = token
        self._on_gap = on_gap
        try:
            self._loop: Optional[asyncio.AbstractEventLoop] = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._tasks: "set[asyncio.Task[None]]" = set()
        self._native = self._make_native(base_url, token, service_name, options, self._provide_token, _dispatch)
        if on_state_change is not None:
            self.on_state_change(on_state_change)
        if on_error is not None:
            self.on_error(on_error)

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        self._loop = loop
        return loop

    def _provide_token(self, refresh: bool, reply: Any) -> None:
        token = self._token
        assert callable(token)
        loop = self._loop
        if loop is None or loop.is_closed():
            _call_token_sync(token, reply)
            return

        def start() -> None:
            try:
                result = token()
            except BaseException as e:  # noqa: BLE001
                reply(None, f"{type(e).__name__}: {e}")
                return
            if not inspect.isawaitable(result):
                reply(result if isinstance(result, str) else None, None if isinstance(result, str) else "not a str")
                return
            awaitable = result

            async def wait() -> None:
                try:
                    value = await awaitable
                    reply(value if isinstance(value, str) else None, None if isinstance(value, str) else "not a str")
                except BaseException as e:  # noqa: BLE001
                    reply(None, f"{type(e).__name__}: {e}")

            task = loop.create_task(wait())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError as e:
            reply(None, str(e))

    def _on_native_event(self, kind: str, state: Optional[str], error: Optional[CourierError]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._fire, kind, state, error)
                return
            except RuntimeError:
                pass
        self._fire(kind, state, error)

    async def __aenter__(self) -> "AsyncCourierClient":
        self._bind()
        return self

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        await self.close()

    # BEGIN async publish overloads: generated by python/gen_events.py from the catalogue, do not edit
    @overload
    async def publish(
        self, channel: str, event_type: Literal["backtest.completed"], data: _events.BacktestCompleted,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    async def publish(
        self, channel: str, event_type: Literal["backtest.failed"], data: _events.BacktestFailed,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    async def publish(
        self, channel: str, event_type: Literal["backtest.progress"], data: _events.BacktestProgress,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    async def publish(
        self, channel: str, event_type: Literal["backtest.started"], data: _events.BacktestStarted,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    async def publish(
        self, channel: str, event_type: Literal["forge.job.completed"], data: _events.ForgeJobCompleted,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    async def publish(
        self, channel: str, event_type: Literal["forge.job.failed"], data: _events.ForgeJobFailed,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    async def publish(
        self, channel: str, event_type: Literal["forge.job.progress"], data: _events.ForgeJobProgress,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    async def publish(
        self, channel: str, event_type: Literal["forge.job.started"], data: _events.ForgeJobStarted,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    async def publish(
        self, channel: str, event_type: Literal["order.cancelled"], data: _events.OrderCancelled,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    async def publish(
        self, channel: str, event_type: Literal["order.filled"], data: _events.OrderFilled,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    async def publish(
        self, channel: str, event_type: Literal["order.placed"], data: _events.OrderPlaced,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    async def publish(
        self, channel: str, event_type: Literal["position.updated"], data: _events.PositionUpdated,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    async def publish(
        self, channel: str, event_type: Literal["strategy.generation.completed"], data: _events.StrategyGenerationCompleted,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    async def publish(
        self, channel: str, event_type: Literal["strategy.generation.failed"], data: _events.StrategyGenerationFailed,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    async def publish(
        self, channel: str, event_type: Literal["strategy.generation.progress"], data: _events.StrategyGenerationProgress,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    async def publish(
        self, channel: str, event_type: Literal["strategy.generation.started"], data: _events.StrategyGenerationStarted,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    async def publish(
        self, channel: str, event_type: Literal["trade.executed"], data: _events.TradeExecuted,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    async def publish(
        self, channel: str, event_type: _events.CustomEventType, data: JsonValue,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    # END async publish overloads

    async def publish(
        self,
        channel: str,
        event_type: str,
        data: JsonValue,
        *,
        priority: Priority = "normal",
        idempotency_key: Optional[str] = None,
        metadata: Optional[Metadata] = None,
        retry: bool = True,
        timeout: Optional[float] = None,
    ) -> PublishResult:
        """Publishes one event and waits for the server's acknowledgement.

        Invalid input raises ``ValidationError`` before anything is sent. Network errors,
        5xx and 429 are retried by the core with the same id; a refusal raises its error.
        ``retry=False`` sends the event at most once (it may then be lost, never doubled).
        Cancelled or timed out, an event not sent yet is withdrawn; one already sent is left
        to finish (it may still be delivered: publish again with the same
        ``idempotency_key`` to be sure of one copy)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        fut: "asyncio.Future[Any]" = loop.create_future()
        ticket = self._native.publish_start(
            _event_args(channel, event_type, data, priority, idempotency_key, metadata, retry), fut
        )
        try:
            if timeout is None:
                t = await asyncio.shield(fut)
            else:
                t = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            self._native.cancel([ticket])
            raise CourierTimeoutError(f"no acknowledgement within {timeout} s", code="TIMEOUT") from None
        except asyncio.CancelledError:
            self._native.cancel([ticket])
            raise
        return PublishResult(*t)

    async def publish_many(
        self, events: Sequence[EventLike], *, return_exceptions: bool = False
    ) -> List[Union[PublishResult, CourierError]]:
        """Publishes several events in one go (all are validated first; none is queued if one
        is invalid) and waits for every acknowledgement, in order. With
        ``return_exceptions=True`` failures are returned in place instead of raised."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        futs: List["asyncio.Future[Any]"] = [loop.create_future() for _ in events]
        tickets = self._native.publish_many_start([_item_args(e) for e in events], futs)
        try:
            results = await asyncio.gather(*futs, return_exceptions=return_exceptions)
        except asyncio.CancelledError:
            self._native.cancel(tickets)  # what was not sent yet is withdrawn
            raise
        return [r if isinstance(r, BaseException) else PublishResult(*r) for r in results]  # type: ignore[misc]

    def subscribe(self, channel: str, since: SinceLike = None) -> AsyncSubscription:
        """Subscribes to ``channel``; iterate with ``async for``. ``since`` resumes after a
        position (a ``StreamPosition`` or ``(epoch, offset)``)."""
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            pass
        return AsyncSubscription(self._native.subscribe(channel, _since(since)), channel, self._on_gap)

    def history(
        self,
        channel: str,
        *,
        after: Optional[int] = None,
        before: Optional[int] = None,
        since: HistorySince = None,
        cursor: Optional[str] = None,
        direction: Optional[Direction] = None,
        limit: int = 100,
    ) -> AsyncHistory:
        """Reads ``channel``'s history (``GET /history/{channel}``): forwards from the oldest
        held by default; ``after=offset`` forwards, ``before=offset`` or
        ``direction="backward"`` backwards (newest first), ``since`` (Unix ms or an aware
        ``datetime``) forwards from that time, ``cursor`` where a page's ``next`` left off; at
        most one of them. ``limit`` (1 to 1000) events per page. Checked before any request
        (``ValidationError`` naming the argument)."""
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            pass
        args = _history_args(after, before, since, cursor, direction, limit)
        return AsyncHistory(self._native.history(channel, **args), channel)

    async def flush(self, timeout: Optional[float] = None) -> None:
        """Waits until every queued event is acknowledged or dead-lettered."""
        fut: "asyncio.Future[Any]" = self._bind().create_future()
        self._native.flush_start(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise CourierTimeoutError(f"flush did not finish within {timeout} s", code="TIMEOUT") from None

    async def close(self, timeout: Optional[float] = None) -> None:
        """Sends what is queued, closes the connection and stops the client's threads."""
        if self._closed:
            return
        fut: "asyncio.Future[Any]" = self._bind().create_future()
        self._native.close_start(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise CourierTimeoutError(f"close did not finish within {timeout} s", code="TIMEOUT") from None
        finally:
            self._closed = True
            self._native.shutdown()
        # The native threads are joined, so every state change they reported (``closed``
        # among them) is queued on this loop, ahead of this coroutine: let those callbacks
        # run before close() returns, as the blocking client does.
        await asyncio.sleep(0)


# --- blocking client ------------------------------------------------------------------


class Subscription:
    """A blocking iterator of the events of one channel; resumes across reconnects.
    Ctrl-C interrupts a waiting ``next()``."""

    def __init__(self, native: Any, channel: str, on_gap: Optional[GapCallback]) -> None:
        self._native = native
        self.channel = channel
        self.gaps: List[Gap] = []
        self._on_gap = on_gap
        self._done = False

    def __iter__(self) -> Iterator[ReceivedEvent]:
        return self

    def __next__(self) -> ReceivedEvent:
        event = self.next()
        if event is None:
            raise StopIteration
        return event

    def next(self, timeout: Optional[float] = None) -> Optional[ReceivedEvent]:
        """The next event; ``None`` when the subscription ended or ``timeout`` passed."""
        while not self._done:
            item = self._native.next_wait(timeout)
            if item is None:
                return None
            kind = item[0]
            if kind == "event":
                return _received(item)
            if kind == "gap":
                last = _position(item[2])
                pos = _position(item[3])
                assert pos is not None
                gap = Gap(self.channel, item[1], last, pos)
                self.gaps.append(gap)
                if self._on_gap is not None:
                    self._on_gap(gap)
            elif kind == "end":
                self._done = True
                if item[1] is not None:
                    raise item[1]
        return None

    def ready(self, timeout: Optional[float] = None) -> StreamPosition:
        """Blocks until the server confirmed the subscription."""
        epoch, offset = self._native.ready_wait(timeout)
        return StreamPosition(epoch, offset)

    @property
    def position(self) -> Optional[StreamPosition]:
        """The position of the last event returned."""
        return _position(self._native.position())

    def close(self) -> None:
        """Unsubscribes; iteration ends."""
        self._native.close()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class History:
    """A channel's history through the replay API, blocking: ``for event in ...`` yields the
    events (``ReceivedEvent``) in the query's direction, fetching pages as needed; ``pages()``
    yields whole ``HistoryPage``s. Refusals raise the SDK's exceptions."""

    def __init__(self, native: Any, channel: str, timeout: Optional[float]) -> None:
        self._native = native
        self.channel = channel
        self._timeout = timeout
        self._pending: List[ReceivedEvent] = []
        self._done = False

    def next_page(self) -> Optional[HistoryPage]:
        """The next page, ``None`` once the end was reached; ``CourierTimeoutError`` when the
        client's timeout passed (calling again retries the same page)."""
        if self._done:
            return None
        page = _page(self._native.next_wait(self._timeout))
        if page is None or page.next is None:
            self._done = True
        return page

    def pages(self) -> Iterator[HistoryPage]:
        """Every page, in order."""
        while True:
            page = self.next_page()
            if page is None:
                return
            yield page

    def __iter__(self) -> "History":
        return self

    def __next__(self) -> ReceivedEvent:
        while not self._pending:
            page = self.next_page()
            if page is None:
                raise StopIteration
            self._pending.extend(reversed(page.events))
        return self._pending.pop()


class CourierClient(_Base):
    """The blocking client: the same API as ``AsyncCourierClient`` without an event loop
    (Django, Flask, scripts). Calls release the GIL while they wait; Ctrl-C interrupts them;
    ``close()`` stops every thread the client started."""

    def __init__(
        self,
        base_url: str,
        *,
        token: TokenSource,
        service_name: Optional[str] = None,
        on_state_change: Optional[StateCallback] = None,
        on_error: Optional[ErrorCallback] = None,
        on_gap: Optional[GapCallback] = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self._token = token
        self._on_gap = on_gap
        self._native = self._make_native(base_url, token, service_name, options, self._provide_token, None)
        if on_state_change is not None:
            self.on_state_change(on_state_change)
        if on_error is not None:
            self.on_error(on_error)

    def _provide_token(self, refresh: bool, reply: Any) -> None:
        token = self._token
        assert callable(token)
        _call_token_sync(token, reply)

    def _on_native_event(self, kind: str, state: Optional[str], error: Optional[CourierError]) -> None:
        self._fire(kind, state, error)

    def __enter__(self) -> "CourierClient":
        return self

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()

    # BEGIN sync publish overloads: generated by python/gen_events.py from the catalogue, do not edit
    @overload
    def publish(
        self, channel: str, event_type: Literal["backtest.completed"], data: _events.BacktestCompleted,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    def publish(
        self, channel: str, event_type: Literal["backtest.failed"], data: _events.BacktestFailed,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    def publish(
        self, channel: str, event_type: Literal["backtest.progress"], data: _events.BacktestProgress,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    def publish(
        self, channel: str, event_type: Literal["backtest.started"], data: _events.BacktestStarted,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    def publish(
        self, channel: str, event_type: Literal["forge.job.completed"], data: _events.ForgeJobCompleted,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    def publish(
        self, channel: str, event_type: Literal["forge.job.failed"], data: _events.ForgeJobFailed,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    def publish(
        self, channel: str, event_type: Literal["forge.job.progress"], data: _events.ForgeJobProgress,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    def publish(
        self, channel: str, event_type: Literal["forge.job.started"], data: _events.ForgeJobStarted,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    def publish(
        self, channel: str, event_type: Literal["order.cancelled"], data: _events.OrderCancelled,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    def publish(
        self, channel: str, event_type: Literal["order.filled"], data: _events.OrderFilled,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    def publish(
        self, channel: str, event_type: Literal["order.placed"], data: _events.OrderPlaced,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    def publish(
        self, channel: str, event_type: Literal["position.updated"], data: _events.PositionUpdated,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    def publish(
        self, channel: str, event_type: Literal["strategy.generation.completed"], data: _events.StrategyGenerationCompleted,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    def publish(
        self, channel: str, event_type: Literal["strategy.generation.failed"], data: _events.StrategyGenerationFailed,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    def publish(
        self, channel: str, event_type: Literal["strategy.generation.progress"], data: _events.StrategyGenerationProgress,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    def publish(
        self, channel: str, event_type: Literal["strategy.generation.started"], data: _events.StrategyGenerationStarted,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    def publish(
        self, channel: str, event_type: Literal["trade.executed"], data: _events.TradeExecuted,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    @overload
    def publish(
        self, channel: str, event_type: _events.CustomEventType, data: JsonValue,
        *, priority: Priority = ..., idempotency_key: Optional[str] = ..., metadata: Optional[Metadata] = ...,
        retry: bool = ..., timeout: Optional[float] = ...,
    ) -> PublishResult: ...
    # END sync publish overloads

    def publish(
        self,
        channel: str,
        event_type: str,
        data: JsonValue,
        *,
        priority: Priority = "normal",
        idempotency_key: Optional[str] = None,
        metadata: Optional[Metadata] = None,
        retry: bool = True,
        timeout: Optional[float] = None,
    ) -> PublishResult:
        """Publishes one event and blocks until the server acknowledged it (see
        ``AsyncCourierClient.publish``)."""
        t = self._native.publish_wait(
            _event_args(channel, event_type, data, priority, idempotency_key, metadata, retry), timeout
        )
        return PublishResult(*t)

    def publish_many(
        self, events: Sequence[EventLike], *, return_exceptions: bool = False, timeout: Optional[float] = None
    ) -> List[Union[PublishResult, CourierError]]:
        """Publishes several events in one go and blocks until each has an outcome."""
        outcomes = self._native.publish_many_wait([_item_args(e) for e in events], timeout)
        results: List[Union[PublishResult, CourierError]] = []
        for ok, value in outcomes:
            if ok:
                results.append(PublishResult(*value))
            elif return_exceptions:
                results.append(value)
            else:
                raise value
        return results

    def subscribe(self, channel: str, since: SinceLike = None) -> Subscription:
        """Subscribes to ``channel``; iterate with ``for``."""
        return Subscription(self._native.subscribe(channel, _since(since)), channel, self._on_gap)

    def history(
        self,
        channel: str,
        *,
        after: Optional[int] = None,
        before: Optional[int] = None,
        since: HistorySince = None,
        cursor: Optional[str] = None,
        direction: Optional[Direction] = None,
        limit: int = 100,
        timeout: Optional[float] = None,
    ) -> History:
        """Reads ``channel``'s history (``GET /history/{channel}``), blocking; the arguments
        are those of ``AsyncCourierClient.history``, and ``timeout`` bounds each page's wait
        (``CourierTimeoutError``). Ctrl-C interrupts a waiting page."""
        args = _history_args(after, before, since, cursor, direction, limit)
        return History(self._native.history(channel, **args), channel, timeout)

    def flush(self, timeout: Optional[float] = None) -> None:
        """Blocks until every queued event is acknowledged or dead-lettered."""
        if not self._native.flush_wait(timeout):
            raise CourierTimeoutError(f"flush did not finish within {timeout} s", code="TIMEOUT")

    def close(self, timeout: Optional[float] = None) -> None:
        """Sends what is queued, closes the connection and joins the client's threads."""
        if self._closed:
            return
        try:
            if not self._native.close_wait(timeout):
                raise CourierTimeoutError(f"close did not finish within {timeout} s", code="TIMEOUT")
        finally:
            self._closed = True
            self._native.shutdown()
