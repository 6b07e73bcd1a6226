"""``Entitlements``: the blocking client. Only I/O lives here; see ``_base.py``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx

from ._base import MAX_BATCH, BaseEntitlements
from ._errors import NotAllowedError, UnavailableError
from ._flow import drive, drive_sync
from ._models import BreakerPolicy, Check, Decision, RetryPolicy
from ._questions import Item
from .verify import IssuerConfig, TokenVerifier, VerifiedToken

__all__ = ["Entitlements"]

logger = logging.getLogger("entitlements_client")

#: The sender thread waits at most this many coalesce windows for stragglers (50 ms by
#: default): threads woken together reach the SDK over tens of milliseconds.
_MAX_WINDOWS = 25


class Entitlements(BaseEntitlements[Future[Decision]]):
    """Authorize requests in blocking code (threads welcome); the same behaviour as
    :class:`AsyncEntitlements`, whose docstring describes the parameters.

    Coalescing across threads: checks that miss the cache are queued for one
    sender thread, which sends one request at a time carrying everything
    queued (group commit): while a request is out, other threads' checks
    gather for the next batch. When other threads are mid-call it first waits
    for theirs while they keep coming — until ``coalesce_window`` passes with
    none, ``max_batch`` are queued, or 25 windows in all (50 ms by default;
    ``coalesce_window=0`` never waits); a thread alone is sent at once.
    Identical concurrent checks share one request. Each call still ends by its
    own ``timeout``.

    ``http`` is an ``httpx.Client`` for checks (not closed here). The change
    feed runs in a daemon thread with its own event loop and
    ``httpx.AsyncClient``, so :meth:`close` can end a long poll at once. Use
    ``with`` or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        verifier: TokenVerifier | Sequence[IssuerConfig],
        service_token: str | Callable[[], str] | None = None,
        http: httpx.Client | None = None,
        timeout: float = 2.0,
        retries: int | RetryPolicy = 2,
        breaker: BreakerPolicy | None = None,
        cache_size: int = 10_000,
        max_age: float = 300.0,
        staleness: float = 5.0,
        follow_changes: bool = True,
        coalesce_window: float = 0.002,
        max_batch: int = MAX_BATCH,
        nested_same_type: bool = False,
    ) -> None:
        super().__init__(
            base_url,
            verifier=verifier,
            service_token=service_token,
            timeout=timeout,
            retries=retries,
            breaker=breaker,
            cache_size=cache_size,
            max_age=max_age,
            staleness=staleness,
            follow_changes=follow_changes,
            coalesce_window=coalesce_window,
            max_batch=max_batch,
            nested_same_type=nested_same_type,
        )
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(trust_env=False)
        self._feed_loop: asyncio.AbstractEventLoop | None = None
        self._feed_task: asyncio.Task[Any] | None = None
        self._feed_thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._sender: threading.Thread | None = None
        self._active = 0
        self._stop = threading.Event()

    def __enter__(self) -> Entitlements:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the change feed, fail checks still waiting, close the owned HTTP clients."""
        with self._cond:
            if self.closed:
                return
            self.closed = True
            self._cond.notify_all()
            loop, task = self._feed_loop, self._feed_task
        self._stop.set()
        self.coalescer.fail_all(UnavailableError("the entitlements client was closed"))
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(task.cancel)
        for thread in (self._sender, self._feed_thread):
            if thread is not None:
                thread.join(timeout=self.timeout)
        if self._owns_http:
            self._http.close()

    # -- public API --------------------------------------------------------------------

    def verify(self, token: str) -> VerifiedToken:
        """Verify ``token`` locally (remembered tokens cost a lookup); raises
        :class:`InvalidTokenError`. Token ids revoked through the change feed are refused."""
        return self._accept(token, self.verifier.verify(token))

    def authorize(
        self,
        token: str,
        resource: str,
        action: str,
        territory: str,
        at: datetime | None = None,
        *,
        min_revision: int | None = None,
        require_roles: Sequence[str] = (),
        require_scopes: Sequence[str] = (),
    ) -> Decision:
        """May the bearer of ``token`` do ``action`` on ``resource`` in ``territory``?

        See :meth:`AsyncEntitlements.authorize`: same checks, same answers, same errors.
        """
        verified = self._accept(token, self.verifier.verify(token))
        if require_roles or require_scopes:
            self._gate(verified, require_roles, require_scopes)
        hit = self._cached(verified, resource, action, territory, at, min_revision)
        if hit is not None:
            return hit
        item = self._item(token, verified, resource, action, territory, at, min_revision)
        return self._ask((item,))[0]

    def authorize_many(
        self,
        token: str,
        checks: Iterable[Check | tuple[str, str, str]],
        at: datetime | None = None,
        *,
        min_revision: int | None = None,
        require_roles: Sequence[str] = (),
        require_scopes: Sequence[str] = (),
    ) -> list[Decision]:
        """Many checks for one token, answered in order; see
        :meth:`AsyncEntitlements.authorize_many`."""
        verified = self._accept(token, self.verifier.verify(token))
        if require_roles or require_scopes:
            self._gate(verified, require_roles, require_scopes)
        out: list[Decision | None] = []
        missing: list[tuple[int, Item]] = []
        for resource, action, territory in checks:
            hit = self._cached(verified, resource, action, territory, at, min_revision)
            if hit is None:
                item = self._item(token, verified, resource, action, territory, at, min_revision)
                missing.append((len(out), item))
            out.append(hit)
        if missing:
            answers = self._ask([item for _, item in missing])
            for (i, _), decision in zip(missing, answers, strict=True):
                out[i] = decision
        return [d for d in out if d is not None]

    def ensure(
        self,
        token: str,
        resource: str,
        action: str,
        territory: str,
        at: datetime | None = None,
        *,
        min_revision: int | None = None,
        require_roles: Sequence[str] = (),
        require_scopes: Sequence[str] = (),
    ) -> Decision:
        """:meth:`authorize`, but a "no" raises :class:`NotAllowedError`."""
        decision = self.authorize(
            token,
            resource,
            action,
            territory,
            at,
            min_revision=min_revision,
            require_roles=require_roles,
            require_scopes=require_scopes,
        )
        if not decision.allowed:
            raise NotAllowedError(decision)
        return decision

    # -- coalescing across threads -----------------------------------------------------------

    def _ask(self, items: Sequence[Item]) -> list[Decision]:
        with self._cond:
            if self.closed:
                raise UnavailableError("the entitlements client is closed")
            self._active += 1
            waiters = self.coalescer.join(items, Future, self._recheck)
            if self.coalescer.pending:
                if self._sender is None:
                    self._sender = threading.Thread(
                        target=self._send_loop, name="entitlements-checks", daemon=True
                    )
                    self._sender.start()
                self._cond.notify_all()
        try:
            deadline = max(item.deadline for item in items)
            return [self._result(w, deadline) for w in waiters]
        finally:
            with self._cond:
                self._active -= 1

    def _send_loop(self) -> None:
        """The sender thread: one request at a time, carrying everything queued meanwhile."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self.closed or self.coalescer.pending > 0)
                if self.closed:
                    return
                # Other threads are mid-call: wait while their checks keep arriving, until a
                # quiet coalesce_window, a full batch, or _MAX_WINDOWS windows in all.
                if self._active > 1 and self.coalesce_window:
                    limit = self._clock() + self.coalesce_window * _MAX_WINDOWS
                    while True:
                        before = self.coalescer.pending
                        left = limit - self._clock()
                        if left <= 0 or self.closed or before >= self.max_batch:
                            break
                        self._cond.wait_for(
                            lambda: self.closed or self.coalescer.pending >= self.max_batch,
                            timeout=min(self.coalesce_window, left),
                        )
                        if self.coalescer.pending == before:
                            break
                chunks = self.coalescer.drain()
            for group, chunk in chunks:
                try:
                    outcomes = drive_sync(self._run(group, chunk), self._http, self._stop.wait)
                except Exception:  # a bug must not leave callers waiting, nor kill the sender
                    logger.exception("entitlements check failed unexpectedly")
                    outcomes = [UnavailableError("no answer: the check failed")] * len(chunk)
                self._settle(chunk, outcomes)
            if self._wants_feed():
                self._start_feed()

    def _result(self, waiter: Future[Decision], deadline: float) -> Decision:
        try:
            # The request is bounded by the same deadline; the margin covers a thread switch.
            return waiter.result(timeout=max(0.0, deadline - self._clock()) + 0.05)
        except TimeoutError:
            raise UnavailableError("no answer from the entitlements service in time") from None

    # -- I/O -------------------------------------------------------------------------------

    def _start_feed(self) -> None:
        with self._cond:
            if self.feed_started or self.closed:
                return
            self.feed_started = True
        self._feed_thread = threading.Thread(
            target=asyncio.run, args=(self._feed(),), name="entitlements-changes", daemon=True
        )
        self._feed_thread.start()

    async def _feed(self) -> None:
        # The feed thread runs its own event loop: a long poll in progress can then be
        # cancelled at once by close() (a blocking socket read cannot be interrupted).
        with self._cond:
            if self.closed:
                return
            self._feed_loop = asyncio.get_running_loop()
            self._feed_task = asyncio.current_task()
        try:
            async with httpx.AsyncClient(trust_env=False) as client:
                await drive(self._follow(), client)
        except asyncio.CancelledError:
            return
        except Exception:
            logger.exception("change feed stopped unexpectedly")
            self.cache.unfollow()
