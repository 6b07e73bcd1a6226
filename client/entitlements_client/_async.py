"""``AsyncEntitlements``: the asyncio client. Only I/O lives here; see ``_base.py``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Final

import httpx

from ._base import MAX_BATCH, BaseEntitlements
from ._errors import NotAllowedError, UnavailableError
from ._flow import drive
from ._models import BreakerPolicy, Check, Decision, RetryPolicy
from ._questions import Item
from .verify import IssuerConfig, TokenVerifier, VerifiedToken

__all__ = ["AsyncEntitlements"]

logger = logging.getLogger("entitlements_client")

#: Requests for checks one client has out at once; further checks wait in the
#: coalescer (joining the next batches) within their own timeout. Without a bound,
#: 1,000 concurrent checks with ``max_batch=1`` were 1,000 requests queued inside
#: httpx's connection pool, whose bookkeeping costs (queued requests x connections)
#: on the event loop at every request and answer: the loop froze for tens of
#: seconds and the calls ran out of time with their answers unread. Below httpx's
#: default pool (100 connections), so the pool itself never queues.
MAX_IN_FLIGHT: Final = 32


class AsyncEntitlements(BaseEntitlements[asyncio.Future[Decision]]):
    """Authorize requests in asyncio code: local token verification, a coarse gate,
    then the fine decision from the local cache or the entitlements service.

    ``verifier`` is the shared :class:`TokenVerifier` (or the issuers to build one
    from; :func:`service_issuer` trusts the service's own tokens).

    How the service is asked:

    - with ``service_token`` (a token carrying ``entitlements:check:any``, or a
      callable returning a current one), checks name the user (``subject`` and
      ``roles`` from the verified token; the subject is the user id in the
      namespace of the issuer that verified it, ``subject_prefix + sub``, so
      configure each :class:`IssuerConfig` as the service configures it) and go
      out under that one identity:
      different users' checks share batches, and the client follows the
      change feed (``follow_changes``) so cached decisions live up to
      ``max_age`` and are dropped when their user or resource changes;
    - without it, the user's own token is forwarded (the service answers only
      about that token's subject); batches are per token and cached decisions
      live ``staleness`` seconds.

    ``timeout`` bounds a whole call, retries and backoff included; ``retries``
    (or a :class:`RetryPolicy`) and ``breaker`` (:class:`BreakerPolicy`) shape
    failure handling. Whatever fails, no call ever returns an allow the service
    did not give: it raises :class:`UnavailableError` instead.

    Checks missing the cache within ``coalesce_window`` seconds of each other
    go out together as ``/v1/check/batch`` calls of at most ``max_batch``; a
    lone check goes out at once. Identical concurrent checks share one request.
    At most 32 requests are out at once; checks beyond them wait for the next
    free one (gathering into batches meanwhile), still within their ``timeout``.

    ``http`` is an ``httpx.AsyncClient`` to use (not closed here; its
    ``base_url`` and timeout are ignored). The client belongs to the event loop
    that first uses it. Use ``async with`` or call :meth:`aclose`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        verifier: TokenVerifier | Sequence[IssuerConfig],
        service_token: str | Callable[[], str] | None = None,
        http: httpx.AsyncClient | None = None,
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
        self._http = http if http is not None else httpx.AsyncClient(trust_env=False)
        self._flush_handle: asyncio.Handle | None = None
        self._flush_soon = False
        self._waiting = 0
        self._sending = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._feed_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncEntitlements:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the change feed, fail checks still waiting, close the owned HTTP client."""
        if self.closed:
            return
        self.closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self.coalescer.fail_all(UnavailableError("the entitlements client was closed"))
        tasks = [*self._tasks, *([self._feed_task] if self._feed_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._owns_http:
            await self._http.aclose()

    # -- public API --------------------------------------------------------------------

    async def verify(self, token: str) -> VerifiedToken:
        """Verify ``token`` locally (remembered tokens cost a lookup); raises
        :class:`InvalidTokenError`. Token ids revoked through the change feed are refused."""
        return self._accept(token, await self.verifier.averify(token))

    async def authorize(
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

        Verifies the token (:class:`InvalidTokenError`), applies the coarse gate
        with no network — every role in ``require_roles`` and scope in
        ``require_scopes`` must be in the token (:class:`ForbiddenError`) — then
        returns the service's :class:`Decision`, from the local cache when it
        may. ``allowed=False`` is an answer, not an error (see :meth:`ensure`).
        ``at`` asks about another instant and bypasses the cache;
        ``min_revision`` (a write's revision) demands data at least that fresh.
        Raises :class:`UnavailableError` when no answer can be had in time.
        """
        verified = self._accept(token, await self.verifier.averify(token))
        if require_roles or require_scopes:
            self._gate(verified, require_roles, require_scopes)
        hit = self._cached(verified, resource, action, territory, at, min_revision)
        if hit is not None:
            return hit
        item = self._item(token, verified, resource, action, territory, at, min_revision)
        return (await self._ask((item,)))[0]

    async def authorize_many(
        self,
        token: str,
        checks: Iterable[Check | tuple[str, str, str]],
        at: datetime | None = None,
        *,
        min_revision: int | None = None,
        require_roles: Sequence[str] = (),
        require_scopes: Sequence[str] = (),
    ) -> list[Decision]:
        """:meth:`authorize` for many ``(resource, action, territory)`` at once (a
        playlist, a search page): one verification, cached answers where possible,
        the rest in as few ``/v1/check/batch`` calls as ``max_batch`` allows. The
        decisions come back in the order asked."""
        verified = self._accept(token, await self.verifier.averify(token))
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
            answers = await self._ask([item for _, item in missing])
            for (i, _), decision in zip(missing, answers, strict=True):
                out[i] = decision
        return [d for d in out if d is not None]

    async def ensure(
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
        """:meth:`authorize`, but a "no" raises :class:`NotAllowedError` (a
        :class:`ForbiddenError` carrying the decision)."""
        decision = await self.authorize(
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

    # -- coalescing ----------------------------------------------------------------------

    async def _ask(self, items: Sequence[Item]) -> list[Decision]:
        if self.closed:
            raise UnavailableError("the entitlements client is closed")
        loop = asyncio.get_running_loop()
        waiters = self.coalescer.join(items, loop.create_future, self._recheck)
        self._schedule(loop)
        self._waiting += 1
        try:
            # shield: one caller giving up must not cancel the answer others share.
            return [await asyncio.shield(w) for w in waiters]
        finally:
            self._waiting -= 1

    def _schedule(self, loop: asyncio.AbstractEventLoop, *, now: bool = False) -> None:
        pending = self.coalescer.pending
        if not pending or self._sending >= MAX_IN_FLIGHT:
            return  # a request that ends schedules the next flush
        # Alone, or a full batch: go at the end of this loop turn (checks asked in the same
        # turn still join). With others waiting, wait the window for more to arrive.
        now = now or self._waiting == 0 or pending >= self.max_batch or not self.coalesce_window
        if self._flush_handle is not None:
            if not now or self._flush_soon:
                return
            self._flush_handle.cancel()
        self._flush_soon = now
        if now:
            self._flush_handle = loop.call_soon(self._flush)
        else:
            self._flush_handle = loop.call_later(self.coalesce_window, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        free = MAX_IN_FLIGHT - self._sending
        if free <= 0:
            return
        for group, chunk in self.coalescer.drain(free):
            self._sending += 1
            task = asyncio.create_task(self._send(group, chunk))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, group: str | None, items: list[Item]) -> None:
        try:
            try:
                outcomes = await drive(self._run(group, items), self._http)
            except BaseException as exc:  # cancelled by aclose, or a bug: nobody waits forever
                self._settle(
                    items, [UnavailableError("no answer: the check was abandoned")] * len(items)
                )
                if not isinstance(exc, Exception):
                    raise
                logger.exception("entitlements check failed unexpectedly")
                return
            self._settle(items, outcomes)
            if self._wants_feed():
                self.feed_started = True
                self._feed_task = asyncio.create_task(self._feed())
        finally:
            self._sending -= 1
            if not self.closed:
                # Checks that queued up meanwhile have waited long enough: send them now.
                self._schedule(asyncio.get_running_loop(), now=True)

    # -- I/O -----------------------------------------------------------------------------

    async def _feed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            try:
                await drive(self._follow(), self._http)
            except Exception:
                logger.exception("change feed stopped unexpectedly")
                self.cache.unfollow()
