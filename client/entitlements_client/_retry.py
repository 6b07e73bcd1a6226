"""One exchange with the service: bounded retries, backoff, ``Retry-After`` and the
circuit breaker, all within the call's deadline. Pure: it yields the I/O it needs
(see ``_flow``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Final

import httpx

from ._errors import UnavailableError
from ._flow import Action, Send, Sleep
from ._models import RetryPolicy
from .breaker import CircuitBreaker

__all__ = ["RETRY_STATUSES", "exchange", "retry_after"]

RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def exchange(
    build: Callable[[float], httpx.Request],
    deadline: float,
    *,
    retry: RetryPolicy,
    breaker: CircuitBreaker,
    clock: Callable[[], float],
    sent: Callable[[], None],
    retried: Callable[[], None],
) -> Generator[Action, object, httpx.Response]:
    """Send ``build(seconds_left)`` until an answer that is final; raises
    :class:`UnavailableError` when giving up. ``sent``/``retried`` count tries."""
    attempt = 0
    last: httpx.Request | None = None
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            raise UnavailableError("the entitlements service did not answer in time", request=last)
        if not breaker.allow():
            raise UnavailableError(
                "the entitlements service is failing (circuit open)", request=last
            )
        request = last = build(remaining)
        sent()
        outcome = yield Send(request, remaining)
        attempt += 1
        after: float | None = None
        if isinstance(outcome, httpx.Response):
            status = outcome.status_code
            if status >= 500 or status == 408:
                breaker.failure()
            else:
                breaker.success()
            if status not in RETRY_STATUSES:
                return outcome
            after = retry_after(outcome.headers.get("retry-after"), time.time())
            failure = UnavailableError(
                f"the entitlements service answered {status}", request=request, response=outcome
            )
        else:
            breaker.failure()
            failure = UnavailableError(
                f"the entitlements service could not be reached ({type(outcome).__name__})",
                request=request,
            )
            if isinstance(outcome, BaseException):
                failure.__cause__ = outcome
        if attempt >= retry.attempts:
            raise failure
        pause = retry.pause(attempt, after)
        if pause is None or clock() + pause >= deadline:
            raise failure
        retried()
        if pause > 0:
            yield Sleep(pause)
