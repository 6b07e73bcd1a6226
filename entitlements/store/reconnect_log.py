"""Postgres reconnect failures in the log: one line each, a few per minute at most.

While Postgres is down, asyncpg's pool logs every failed attempt to restore its
minimum number of connections as a warning with the whole traceback (logger
``asyncpg.pool``, "Failed to restore the pool connection floor; retrying"): a
screenful per attempt, for an outage the service already answers with 503.
:func:`quiet_reconnect_failures` turns each such record into one line that names
the error, and lets at most one through per :data:`EVERY` seconds, saying how
many it held back. The pool itself keeps reconnecting as before.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["EVERY", "OneLinePerInterval", "quiet_reconnect_failures"]

EVERY = 10.0
"""At most one reconnect failure is logged per this many seconds."""

_LOGGER = "asyncpg.pool"


class OneLinePerInterval(logging.Filter):
    """Drops a record's traceback (keeping the error in its one line), and all but one per interval."""

    def __init__(self, every: float = EVERY) -> None:
        super().__init__()
        self.every = every
        self._lock = threading.Lock()
        self._last: float | None = None
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        with self._lock:
            if self._last is not None and now - self._last < self.every:
                self._held += 1
                return False
            self._last, held, self._held = now, self._held, 0
        message = record.getMessage()
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            detail = " ".join(str(error).split())
            message += f": {type(error).__name__}" + (f": {detail}" if detail else "")
        if held:
            message += f" ({held} more in the last {self.every:g} s not logged)"
        record.msg, record.args = message, None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def quiet_reconnect_failures() -> None:
    """Install the filter on asyncpg's pool logger, once per process."""
    logger = logging.getLogger(_LOGGER)
    if not any(isinstance(f, OneLinePerInterval) for f in logger.filters):
        logger.addFilter(OneLinePerInterval())
