"""The I/O a flow asks for, and the two drivers that do it.

Retries and the change feed are written once, as generators that *yield* the
I/O they need — :class:`Send` a request, :class:`Sleep` — and receive its
outcome: an ``httpx.Response``, or the exception the send raised (``None``
after a sleep). Each client drives them with its own I/O: :func:`drive` with an
``httpx.AsyncClient``, :func:`drive_sync` with an ``httpx.Client`` (the pattern
of httpx's ``Auth.auth_flow``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

import httpx

__all__ = ["Action", "Send", "Sleep", "drive", "drive_sync"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``request``; give up after ``timeout`` seconds in all."""

    request: httpx.Request
    timeout: float


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Action: TypeAlias = Send | Sleep


async def drive(flow: Generator[Action, object, T], http: httpx.AsyncClient) -> T:
    """Run ``flow`` on asyncio: do each Send/Sleep it yields, feed back the outcome."""
    try:
        action = next(flow)
        while True:
            outcome: object = None
            if isinstance(action, Sleep):
                await asyncio.sleep(action.seconds)
            else:
                try:
                    async with asyncio.timeout(action.timeout):
                        outcome = await http.send(action.request)
                except Exception as exc:  # any failure to get an answer is an outcome
                    outcome = exc
            action = flow.send(outcome)
    except StopIteration as stop:
        result: T = stop.value
        return result


def drive_sync(
    flow: Generator[Action, object, T],
    http: httpx.Client,
    wait: Callable[[float], object],
) -> T:
    """Run ``flow`` in this thread; ``wait(seconds)`` sleeps (and may end early on close)."""
    try:
        action = next(flow)
        while True:
            outcome: object = None
            if isinstance(action, Sleep):
                wait(action.seconds)
            else:
                try:
                    outcome = http.send(action.request)
                except Exception as exc:  # any failure to get an answer is an outcome
                    outcome = exc
            action = flow.send(outcome)
    except StopIteration as stop:
        result: T = stop.value
        return result
