"""The circuit breaker of the entitlements system: one implementation, two users.

The SDK wraps its calls to the entitlements service in one; the service wraps
its calls to Redis in another. A dependency that keeps failing is then not
paid for on every request: after ``policy.failures`` failures in a row the
circuit opens and :meth:`CircuitBreaker.allow` says no for
``policy.reset_after`` seconds; then one trial call goes through (half-open),
and its outcome closes the circuit or opens it again at once.

Thread-safe (the sync SDK client calls it from several threads); the lock is
uncontended on asyncio.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ._models import BreakerPolicy

__all__ = ["BreakerPolicy", "CircuitBreaker"]


class CircuitBreaker:
    """closed → (``failures`` in a row) → open → (``reset_after``) → half-open: one trial."""

    def __init__(
        self, policy: BreakerPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_at: float | None = None

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``."""
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._clock() - self._opened_at < self.policy.reset_after:
                return "open"
            return "half_open"

    @property
    def failures(self) -> int:
        """Failures in a row since the last success."""
        return self._failures

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one trial at a time."""
        with self._lock:
            if self._opened_at is None:
                return True
            now = self._clock()
            if now - self._opened_at < self.policy.reset_after:
                return False
            # A trial that never reported (its caller vanished) must not block forever.
            if self._trial_at is not None and now - self._trial_at < self.policy.reset_after:
                return False
            self._trial_at = now
            return True

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_at = None

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial_at is not None or self._failures >= self.policy.failures:
                self._opened_at = self._clock()
                self._trial_at = None
