"""Exceptions raised by courier_client, grouped by who is at fault.

Every exception is a :class:`CourierError` with a machine-readable ``code`` (the protocol's
error code, e.g. ``RATE_LIMIT_EXCEEDED``), a ``message`` and, when the server answered over
HTTP, its ``status``.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "CourierError",
    "RateLimitedError",
    "AuthenticationError",
    "ForbiddenChannelError",
    "ValidationError",
    "PayloadTooLargeError",
    "QueueFullError",
    "ConnectionClosedError",
    "CourierTimeoutError",
    "TransportError",
]


class CourierError(Exception):
    """Base class of every error this package raises."""

    code: str
    message: str
    status: Optional[int]

    def __init__(self, message: str, *, code: str = "ERROR", status: Optional[int] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class RateLimitedError(CourierError):
    """The server refused for now; try again after ``retry_after`` seconds."""

    retry_after: Optional[float]

    def __init__(
        self,
        message: str,
        *,
        code: str = "RATE_LIMIT_EXCEEDED",
        status: Optional[int] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.retry_after = retry_after


class AuthenticationError(CourierError):
    """The token is missing, malformed, badly signed or expired beyond renewal."""


class ForbiddenChannelError(CourierError):
    """The token does not grant this channel."""


class ValidationError(CourierError, ValueError):
    """The input is invalid: ``field`` names it (``data.percent``), ``reason`` says why
    (``missing``, ``out_of_range``, ``too_long``, ``too_large``, ``bad_format``, ``wrong_type``)."""

    field: Optional[str]
    reason: Optional[str]

    def __init__(
        self,
        message: str,
        *,
        code: str = "INVALID_EVENT",
        status: Optional[int] = None,
        field: Optional[str] = None,
        reason: Optional[str] = None,
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.field = field
        self.reason = reason

    def __str__(self) -> str:
        where = f" (field `{self.field}`)" if self.field else ""
        return f"{self.code}{where}: {self.message}"


class PayloadTooLargeError(ValidationError):
    """The event's data is larger than the server accepts."""


class QueueFullError(CourierError):
    """The publish queue is full: await ``flush()`` or raise ``max_queued``."""


class ConnectionClosedError(CourierError):
    """The client (or its connection) is closed."""


class CourierTimeoutError(CourierError, TimeoutError):
    """An operation did not finish within its timeout."""


class TransportError(CourierError):
    """The network failed and retries did not help (or were not allowed)."""


def _from_native(
    kind: str,
    code: str,
    message: str,
    field: Optional[str],
    reason: Optional[str],
    retry_after_ms: Optional[int],
    status: Optional[int],
) -> CourierError:
    """Builds the exception for an error coming from the Rust core (called by _native)."""
    retry_after = retry_after_ms / 1000.0 if retry_after_ms is not None else None
    if code == "PAYLOAD_TOO_LARGE":
        return PayloadTooLargeError(message, code=code, status=status, field=field or "data", reason=reason or "too_large")
    if kind == "invalid" or code == "INVALID_EVENT":
        return ValidationError(message, code=code, status=status, field=field, reason=reason)
    if code == "RATE_LIMIT_EXCEEDED":
        return RateLimitedError(message, code=code, status=status, retry_after=retry_after)
    if code in ("UNAUTHORIZED", "TOKEN_EXPIRED", "AUTH_TIMEOUT"):
        return AuthenticationError(message, code=code, status=status)
    if code == "FORBIDDEN_CHANNEL":
        return ForbiddenChannelError(message, code=code, status=status)
    if code == "QUEUE_FULL":
        return QueueFullError(message, code=code, status=status)
    if code == "CLOSED":
        return ConnectionClosedError(message, code=code, status=status)
    if code == "TIMEOUT":
        return CourierTimeoutError(message, code=code, status=status)
    if kind == "transport":
        return TransportError(message, code=code, status=status)
    if code in ("SHUTTING_DOWN", "UNAVAILABLE", "CONNECTION_LIMIT_EXCEEDED") and retry_after is not None:
        return RateLimitedError(message, code=code, status=status, retry_after=retry_after)
    return CourierError(message, code=code, status=status)
