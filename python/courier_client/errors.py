"""Exceptions raised by courier_client, grouped by what the application can do about them.

Every exception is a :class:`CourierError` with a machine-readable ``code`` (the protocol's
error code, e.g. ``RATE_LIMIT_EXCEEDED``), a ``message``, the ``category`` and ``retryable``
the Rust core decides for the code, and, when the server said, ``retry_after`` (seconds),
``field``, ``limit_type`` and the HTTP ``status``.

One class per category (the names are those of the TypeScript SDK; ``tests/vectors/errors.json``
lists every code with its class and ``tests/test_errors.py`` checks this module against it)::

    CourierError                      unknown
    +-- ValidationError (ValueError)  validation: INVALID_EVENT, EPOCH_CHANGED
    |   +-- PayloadTooLargeError      PAYLOAD_TOO_LARGE
    +-- AuthenticationError           authentication: UNAUTHORIZED, TOKEN_EXPIRED
    |   +-- ForbiddenChannelError     authorization: FORBIDDEN_CHANNEL
    +-- RateLimitedError              rate_limited: RATE_LIMIT_EXCEEDED, CONNECTION_LIMIT_EXCEEDED
    +-- CourierConnectionError (ConnectionError)
    |   |                             connection: AUTH_TIMEOUT, SLOW_CONSUMER, BAD_REQUEST, ...
    |   +-- TransportError            TRANSPORT
    +-- ServerError                   server: INTERNAL, UNAVAILABLE, SHUTTING_DOWN
    +-- UsageError                    usage: ALREADY_SUBSCRIBED
        +-- QueueFullError            QUEUE_FULL
        +-- ConnectionClosedError     CLOSED
        +-- CourierTimeoutError (TimeoutError)  TIMEOUT
"""

from __future__ import annotations

from typing import Dict, Optional, Type

__all__ = [
    "CourierError",
    "RateLimitedError",
    "AuthenticationError",
    "ForbiddenChannelError",
    "ValidationError",
    "PayloadTooLargeError",
    "CourierConnectionError",
    "TransportError",
    "ServerError",
    "UsageError",
    "QueueFullError",
    "ConnectionClosedError",
    "CourierTimeoutError",
]


class CourierError(Exception):
    """Base class of every error this package raises; alone, for a code this version does not
    know (category ``unknown``)."""

    #: The code and category a class stands for when built without them (an instance built
    #: from the core carries the core's).
    default_code = "ERROR"
    default_category = "unknown"

    code: str
    message: str
    status: Optional[int]
    category: str
    retryable: bool
    retry_after: Optional[float]
    field: Optional[str]
    limit_type: Optional[str]

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        status: Optional[int] = None,
        category: Optional[str] = None,
        retryable: bool = False,
        retry_after: Optional[float] = None,
        field: Optional[str] = None,
        limit_type: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.code = code if code is not None else self.default_code
        self.message = message
        self.status = status
        self.category = category if category is not None else self.default_category
        self.retryable = retryable
        self.retry_after = retry_after
        self.field = field
        self.limit_type = limit_type

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class RateLimitedError(CourierError):
    """A rate or connection limit was hit (``limit_type`` says which connection limit); try
    again after ``retry_after`` seconds when the server gave one."""

    default_code = "RATE_LIMIT_EXCEEDED"
    default_category = "rate_limited"


class AuthenticationError(CourierError):
    """The token is missing, malformed, badly signed or expired beyond renewal."""

    default_category = "authentication"


class ForbiddenChannelError(AuthenticationError):
    """The token is good but does not grant this channel (category ``authorization``)."""

    default_category = "authorization"


class ValidationError(CourierError, ValueError):
    """The input is invalid: ``field`` names it (``data.percent``), ``reason`` says why
    (``missing``, ``out_of_range``, ``too_long``, ``too_large``, ``bad_format``, ``wrong_type``)."""

    default_code = "INVALID_EVENT"
    default_category = "validation"

    reason: Optional[str]

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        status: Optional[int] = None,
        category: Optional[str] = None,
        retryable: bool = False,
        retry_after: Optional[float] = None,
        field: Optional[str] = None,
        limit_type: Optional[str] = None,
        reason: Optional[str] = None,
    ) -> None:
        super().__init__(
            message,
            code=code,
            status=status,
            category=category,
            retryable=retryable,
            retry_after=retry_after,
            field=field,
            limit_type=limit_type,
        )
        self.reason = reason

    def __str__(self) -> str:
        where = f" (field `{self.field}`)" if self.field else ""
        return f"{self.code}{where}: {self.message}"


class PayloadTooLargeError(ValidationError):
    """The event's data is larger than the server accepts."""

    default_code = "PAYLOAD_TOO_LARGE"


class CourierConnectionError(CourierError, ConnectionError):
    """The connection failed, stalled (``AUTH_TIMEOUT``, ``SLOW_CONSUMER``) or broke the
    protocol (``BAD_REQUEST``, ``UNKNOWN_OP``, ``PROTOCOL_ERROR``); the client reconnects by
    itself. Also a builtin ``ConnectionError``."""

    default_category = "connection"


class TransportError(CourierConnectionError):
    """The network failed and retries did not help (or were not allowed)."""

    default_code = "TRANSPORT"


class ServerError(CourierError):
    """The server could not serve right now (``INTERNAL``, ``UNAVAILABLE``, ``SHUTTING_DOWN``);
    the client retries after ``retry_after`` when it may."""

    default_category = "server"


class UsageError(CourierError):
    """The API was used in a way that cannot work (``ALREADY_SUBSCRIBED``, and the subclasses)."""

    default_category = "usage"


class QueueFullError(UsageError):
    """The publish queue is full: await ``flush()`` or raise ``max_queued``."""

    default_code = "QUEUE_FULL"


class ConnectionClosedError(UsageError):
    """The client is closed."""

    default_code = "CLOSED"


class CourierTimeoutError(UsageError, TimeoutError):
    """An operation did not finish within its timeout."""

    default_code = "TIMEOUT"


# The class for each category the core decides, and the few codes with a class of their own
# (tests/vectors/errors.json lists them all).
_BY_CATEGORY: Dict[str, Type[CourierError]] = {
    "validation": ValidationError,
    "authentication": AuthenticationError,
    "authorization": ForbiddenChannelError,
    "rate_limited": RateLimitedError,
    "connection": CourierConnectionError,
    "server": ServerError,
    "usage": UsageError,
}
_BY_CODE: Dict[str, Type[CourierError]] = {
    "PAYLOAD_TOO_LARGE": PayloadTooLargeError,
    "TRANSPORT": TransportError,
    "QUEUE_FULL": QueueFullError,
    "CLOSED": ConnectionClosedError,
    "TIMEOUT": CourierTimeoutError,
}


def error_class(code: str, category: str) -> Type[CourierError]:
    """The class raised for ``code``, whose ``category`` the core decided."""
    return _BY_CODE.get(code) or _BY_CATEGORY.get(category, CourierError)


def _from_native(
    code: str,
    category: str,
    retryable: bool,
    message: str,
    field: Optional[str],
    reason: Optional[str],
    retry_after_ms: Optional[int],
    limit_type: Optional[str],
    status: Optional[int],
) -> CourierError:
    """Builds the exception for an error coming from the Rust core (called by _native)."""
    cls = error_class(code, category)
    retry_after = retry_after_ms / 1000.0 if retry_after_ms is not None else None
    if issubclass(cls, ValidationError):
        if cls is PayloadTooLargeError:
            field = field or "data"
            reason = reason or "too_large"
        return cls(
            message,
            code=code,
            status=status,
            category=category,
            retryable=retryable,
            retry_after=retry_after,
            field=field,
            limit_type=limit_type,
            reason=reason,
        )
    return cls(
        message,
        code=code,
        status=status,
        category=category,
        retryable=retryable,
        retry_after=retry_after,
        field=field,
        limit_type=limit_type,
    )
