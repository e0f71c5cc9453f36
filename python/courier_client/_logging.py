"""Routes the Rust client's logs to Python's ``logging`` under the ``courier_client`` logger."""

from __future__ import annotations

import logging

from . import _native

logger = logging.getLogger("courier_client")


def _sink(level: int, target: str, message: str) -> None:
    logger.log(level, "%s", message, extra={"rust_target": target})


def install() -> None:
    """Sends Rust logs at or above the logger's current effective level (read again each time
    a client is created)."""
    _native.set_log_sink(_sink, logger.getEffectiveLevel())
