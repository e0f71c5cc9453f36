"""Courier client: publish typed events to a Courier server and subscribe to channels.

    from courier_client import CourierClient

    with CourierClient("http://127.0.0.1:8766", token=jwt, service_name="backtester") as client:
        client.publish("backtest.abc", "backtest.progress", {"backtest_id": "abc", "percent": 42.5})

``AsyncCourierClient`` offers the same API for asyncio. Logs go to the ``courier_client``
logger. The Rust core decides retries, backoff, rate limits, reconnects and resume.
"""

from ._client import (
    AsyncCourierClient,
    AsyncHistory,
    AsyncSubscription,
    CourierClient,
    History,
    Subscription,
    TokenSource,
)
from ._types import (
    ClientStats,
    DeadLetter,
    EventToPublish,
    Gap,
    HistoryPage,
    Priority,
    PublishResult,
    ReceivedEvent,
    StreamPosition,
)
from .errors import (
    AuthenticationError,
    ConnectionClosedError,
    CourierConnectionError,
    CourierError,
    CourierTimeoutError,
    ForbiddenChannelError,
    PayloadTooLargeError,
    QueueFullError,
    RateLimitedError,
    ServerError,
    TransportError,
    UsageError,
    ValidationError,
)
from . import events

__version__ = "0.1.0"

__all__ = [
    "AsyncCourierClient",
    "CourierClient",
    "AsyncSubscription",
    "Subscription",
    "AsyncHistory",
    "History",
    "HistoryPage",
    "TokenSource",
    "ClientStats",
    "DeadLetter",
    "EventToPublish",
    "Gap",
    "Priority",
    "PublishResult",
    "ReceivedEvent",
    "StreamPosition",
    "CourierError",
    "RateLimitedError",
    "AuthenticationError",
    "ForbiddenChannelError",
    "ValidationError",
    "PayloadTooLargeError",
    "QueueFullError",
    "ConnectionClosedError",
    "CourierTimeoutError",
    "CourierConnectionError",
    "TransportError",
    "ServerError",
    "UsageError",
    "events",
]
