"""Single flight and batching: identical concurrent checks share one answer, different
ones share requests. Bookkeeping only; the clients decide *when* to send."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, Protocol, TypeAlias, TypeVar

from ._models import Decision
from ._questions import Flight, Item

__all__ = ["Coalescer", "Outcome", "Waiter", "fresh"]

Outcome: TypeAlias = "Decision | BaseException"


class Waiter(Protocol):
    """What both ``asyncio.Future`` and ``concurrent.futures.Future`` offer."""

    def set_result(self, result: Decision, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...

    def done(self) -> bool: ...


W = TypeVar("W", bound=Waiter)


class Coalescer(Generic[W]):
    """Single flight and batching bookkeeping; the clients decide *when* to drain.

    Every distinct check has one waiter from the moment it is asked until its
    answer lands; an identical check joins that waiter instead of being sent
    again. New checks wait in ``pending`` until drained into batches.
    """

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._waiters: dict[Flight, W] = {}
        self._pending: list[Item] = []
        self.joined = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def join(
        self,
        items: Iterable[Item],
        new_waiter: Callable[[], W],
        recheck: Callable[[Item], Decision | None],
    ) -> list[W]:
        """The waiter of each item, queueing the ones not already pending or in flight.

        ``recheck`` looks in the cache again before a new flight starts: an identical
        check may have landed (cached, then settled) since the caller missed the cache.
        """
        out: list[W] = []
        with self._lock:
            for item in items:
                waiter = self._waiters.get(item.flight)
                if waiter is not None:
                    self.joined += 1
                elif (landed := recheck(item)) is not None:
                    self.joined += 1
                    waiter = new_waiter()
                    waiter.set_result(landed)
                else:
                    waiter = self._waiters[item.flight] = new_waiter()
                    self._pending.append(item)
                out.append(waiter)
        return out

    def drain(self, limit: int | None = None) -> list[tuple[str | None, list[Item]]]:
        """Take pending checks, grouped by credentials, in chunks of ``max_batch``; at
        most ``limit`` chunks, the rest stay pending.

        Chunks open in the order their first check was asked, and a check joins an
        open chunk of its group: whatever stays pending is younger than the first
        check of every chunk taken, so those requests end (by that check's deadline)
        before any check left waiting runs out of time.
        """
        chunks: list[tuple[str | None, list[Item]]] = []
        with self._lock:
            taken, self._pending = self._pending, []
            current: dict[str | None, list[Item]] = {}
            for item in taken:
                chunk = current.get(item.group)
                if chunk is None or len(chunk) >= self.max_batch:
                    if limit is not None and len(chunks) >= limit:
                        self._pending.append(item)
                        continue
                    chunk = current[item.group] = []
                    chunks.append((item.group, chunk))
                chunk.append(item)
        return chunks

    def settle(self, items: Sequence[Item], outcomes: Sequence[Outcome]) -> None:
        """Hand each item's answer (or error) to its waiter and forget the flight."""
        with self._lock:
            waiters = [self._waiters.pop(item.flight, None) for item in items]
        for waiter, outcome in zip(waiters, outcomes, strict=True):
            if waiter is None or waiter.done():
                continue
            if isinstance(outcome, BaseException):
                waiter.set_exception(fresh(outcome))
            else:
                waiter.set_result(outcome)

    def fail_all(self, exc: BaseException) -> None:
        """On close: every waiter gets ``exc``."""
        with self._lock:
            waiters, self._waiters, self._pending = list(self._waiters.values()), {}, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(fresh(exc))


def fresh(exc: BaseException) -> BaseException:
    """A copy of ``exc`` for one more waiter: a shared instance would pile up tracebacks."""
    clone = copy.copy(exc)
    clone.args = exc.args
    clone.__cause__ = exc.__cause__
    clone.__traceback__ = None
    return clone
