"""Everything the sync and async clients share: all decisions, none of the I/O.

``_sync.py`` and ``_async.py`` only verify tokens, send HTTP requests, sleep
and wait. What to send, whether to retry, how long to back off, whether the
circuit is open, how to read an answer, what to cache and how to coalesce
checks is decided once (as httpx's ``BaseClient``), in this module and the
ones it composes, one concept each:

- ``_questions``: a question checked against the service's input rules, ready to send;
- ``_coalescer``: single flight and batching bookkeeping;
- ``_retry``: one exchange with retries, backoff and the breaker (``breaker``);
- ``_answers``: reading an answer into decisions or typed errors;
- ``_feed``: the change-feed reader that keeps the decision cache (``_cache``) honest;
- ``_flow``: the I/O those flows yield, and the drivers that do it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Sequence
from datetime import datetime
from typing import Final, Generic

import httpx
import orjson

from ._answers import read
from ._cache import DecisionCache
from ._coalescer import Coalescer, Outcome, W
from ._errors import ForbiddenError, InvalidTokenError, UnavailableError
from ._feed import ChangeFeed
from ._flow import Action
from ._models import BreakerPolicy, ClientStats, Decision, RetryPolicy
from ._questions import Item, question
from ._retry import exchange
from .breaker import CircuitBreaker
from .verify import IssuerConfig, TokenVerifier, VerifiedToken

__all__ = ["MAX_BATCH", "BaseEntitlements"]

MAX_BATCH: Final = 1000


def _names(names: Sequence[str] | str) -> tuple[str, ...]:
    # A bare string is one name, not a sequence of one-letter names.
    return (names,) if isinstance(names, str) else tuple(names)


class BaseEntitlements(Generic[W]):
    """Configuration, state and every pure step of :class:`Entitlements` and
    :class:`AsyncEntitlements`; see their docstrings for the parameters."""

    def __init__(
        self,
        base_url: str,
        *,
        verifier: TokenVerifier | Sequence[IssuerConfig],
        service_token: str | Callable[[], str] | None = None,
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("base_url must be an absolute http(s) URL")
        self.base_url = str(base_url).rstrip("/")
        if isinstance(verifier, TokenVerifier):
            self.verifier = verifier
        else:
            self.verifier = TokenVerifier(list(verifier))
        if service_token is not None and not (callable(service_token) or service_token):
            raise ValueError("service_token must be a non-empty string or a callable")
        self._service_token = service_token
        for name, value, low, high in (
            ("timeout", timeout, 0.0, 600.0),
            ("max_age", max_age, 0.0, 86_400.0),
            ("staleness", staleness, 0.0, 3600.0),
            ("coalesce_window", coalesce_window, -1e-9, 1.0),
            ("max_batch", max_batch, 0.5, MAX_BATCH),
            ("cache_size", cache_size, -0.5, 1e12),
        ):
            integral = name in ("max_batch", "cache_size")
            if isinstance(value, bool) or not isinstance(value, int if integral else int | float):
                raise ValueError(f"{name} must be {'an integer' if integral else 'a number'}")
            if not low < value <= high:
                raise ValueError(f"{name} is out of range: {value!r}")
        if isinstance(retries, RetryPolicy):
            self.retry = retries
        elif isinstance(retries, int) and not isinstance(retries, bool) and 0 <= retries <= 9:
            self.retry = RetryPolicy(attempts=retries + 1)
        else:
            raise ValueError("retries must be 0-9 or a RetryPolicy")
        self.timeout = float(timeout)
        self.staleness = float(staleness)
        self.coalesce_window = float(coalesce_window)
        self.follow_changes = bool(follow_changes) and service_token is not None
        self._clock = clock
        self.breaker = CircuitBreaker(breaker or BreakerPolicy(), clock)
        self.cache = DecisionCache(
            cache_size,
            max_age=float(max_age),
            staleness=self.staleness,
            nested_same_type=nested_same_type,
            clock=clock,
        )
        if self.follow_changes:
            self.cache.follow()
        self.max_batch = max_batch
        self.coalescer: Coalescer[W] = Coalescer(max_batch)
        self._check_url = self.base_url + "/v1/check"
        self._batch_url = self.base_url + "/v1/check/batch"
        self.feed = ChangeFeed(
            self.base_url + "/v1/changes",
            self.cache,
            staleness=self.staleness,
            timeout=self.timeout,
            authorization=lambda: self._authorization(None),
            closed=lambda: self.closed,
            clock=clock,
        )
        self._counter_lock = threading.Lock()
        self._requests = 0
        self._batch_requests = 0
        self._checks_sent = 0
        self._retries = 0
        self.feed_started = False
        self.closed = False

    # -- the steps of authorize ------------------------------------------------------

    def _accept(self, token: str, verified: VerifiedToken) -> VerifiedToken:
        """After signature and claims: refuse token ids the change feed reported revoked."""
        revoked = self.cache.revoked_jtis
        if revoked and verified.jti in revoked:
            self.verifier.forget(token)
            raise InvalidTokenError("revoked")
        return verified

    @staticmethod
    def _gate(
        verified: VerifiedToken, roles: Sequence[str] | str, scopes: Sequence[str] | str
    ) -> None:
        """The coarse check, from the token alone: every listed role and scope is required."""
        missing_roles = [r for r in _names(roles) if r not in verified.roles]
        if missing_roles:
            raise ForbiddenError(f"the token lacks the role {missing_roles[0]!r}")
        missing = [s for s in _names(scopes) if s not in verified.scopes]
        if missing:
            raise ForbiddenError(f"the token lacks the scope {missing[0]!r}")

    def _cached(
        self,
        verified: VerifiedToken,
        resource: str,
        action: str,
        territory: str,
        at: datetime | None,
        min_revision: int | None,
    ) -> Decision | None:
        """The cached decision, if any, after the token's own limits: a token listing
        ``resources`` (an exchanged token) may ask about those only. The service enforces
        that for forwarded tokens; with a service token the SDK must."""
        limited = verified.claims.get("resources")
        if limited is not None and (not isinstance(limited, tuple) or resource not in limited):
            raise ForbiddenError("this token is limited to other resources")
        if at is not None:
            return None
        key = (verified.subject, verified.roles, resource, action, territory)
        return self.cache.get(key, min_revision)

    def _item(
        self,
        token: str,
        verified: VerifiedToken,
        resource: str,
        action: str,
        territory: str,
        at: datetime | None,
        min_revision: int | None,
    ) -> Item:
        """Validate one question and build what is sent for it."""
        return question(
            token,
            verified,
            resource,
            action,
            territory,
            at,
            min_revision,
            by_service=self._service_token is not None,
            deadline=self._clock() + self.timeout,
        )

    def _recheck(self, item: Item) -> Decision | None:
        if item.cache_key is None:
            return None
        return self.cache.get(item.cache_key, item.flight[7], count=False)

    def _settle(self, items: Sequence[Item], outcomes: Sequence[Outcome]) -> None:
        """Remember fresh answers, then wake the waiters (so their next call hits)."""
        for item, outcome in zip(items, outcomes, strict=True):
            if item.cache_key is not None and isinstance(outcome, Decision):
                self.cache.put(item.cache_key, outcome)
        self.coalescer.settle(items, outcomes)

    def _wants_feed(self) -> bool:
        return (
            self.follow_changes
            and not self.feed_started
            and not self.closed
            and self.cache.cursor is not None
        )

    def _authorization(self, group: str | None) -> str:
        if group is not None:
            return "Bearer " + group
        token = self._service_token
        value = token() if callable(token) else token
        if not isinstance(value, str) or not value:
            raise UnavailableError("the service_token callable returned no token")
        return "Bearer " + value

    def _count(self, *, batch: bool = False, checks: int = 0, retry: bool = False) -> None:
        with self._counter_lock:
            if retry:
                self._retries += 1
                return
            self._requests += 1
            self._batch_requests += batch
            self._checks_sent += checks

    # -- one request for a batch of checks ------------------------------------------

    def _run(
        self, group: str | None, items: Sequence[Item]
    ) -> Generator[Action, object, list[Outcome]]:
        """Ask the service about ``items`` (one request, retried); one outcome per item.

        The request gives up at the earliest deadline among them; checks whose callers'
        time already ran out (queued behind a slow request) are not sent at all.
        """
        now = self._clock()
        late = [i for i, item in enumerate(items) if item.deadline <= now]
        if late:
            outcomes: list[Outcome] = [
                UnavailableError("the entitlements service did not answer in time")
            ] * len(items)
            live = [i for i, item in enumerate(items) if item.deadline > now]
            if live:
                answers = yield from self._run(group, [items[i] for i in live])
                for i, outcome in zip(live, answers, strict=True):
                    outcomes[i] = outcome
            return outcomes
        deadline = min(item.deadline for item in items)
        try:
            authorization = self._authorization(group)
        except Exception as exc:
            failure = (
                exc
                if isinstance(exc, UnavailableError)
                else UnavailableError("the service_token callable failed")
            )
            failure.__cause__ = exc
            return [failure] * len(items)
        single = len(items) == 1
        url = self._check_url if single else self._batch_url
        content = orjson.dumps(items[0].body if single else {"checks": [i.body for i in items]})
        headers = {
            "Authorization": authorization,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

        def build(remaining: float) -> httpx.Request:
            return httpx.Request(
                "POST",
                url,
                headers=headers,
                content=content,
                extensions={"timeout": httpx.Timeout(remaining).as_dict()},
            )

        try:
            response = yield from exchange(
                build,
                deadline,
                retry=self.retry,
                breaker=self.breaker,
                clock=self._clock,
                sent=lambda: self._count(batch=not single, checks=len(items)),
                retried=lambda: self._count(retry=True),
            )
        except UnavailableError as exc:
            return [exc] * len(items)
        outcomes, retry = self._read(response, items, group)
        if retry:
            again = [items[i] for i in retry]
            redone = yield from self._run(group, again)
            for i, outcome in zip(retry, redone, strict=True):
                outcomes[i] = outcome
        return outcomes

    #: Reads a final answer: ``(outcomes, indexes to resend)``; see ``_answers.read``.
    _read = staticmethod(read)

    def _follow(self) -> Generator[Action, object, None]:
        """The change-feed flow (see ``_feed``); the clients drive it."""
        return self.feed.follow()

    # -- introspection -----------------------------------------------------------------

    def stats(self) -> ClientStats:
        """Counters since the client was created."""
        with self._counter_lock:
            requests, batches = self._requests, self._batch_requests
            checks, retries = self._checks_sent, self._retries
        return ClientStats(
            cache_hits=self.cache.hits,
            cache_misses=self.cache.misses,
            coalesced=self.coalescer.joined,
            requests=requests,
            batch_requests=batches,
            checks_sent=checks,
            retries=retries,
            breaker=self.breaker.state,
            cache_size=len(self.cache),
            feed_revision=self.cache.cursor if self.follow_changes else None,
            feed_fresh=self.cache.feed_fresh(),
        )

    def clear_cache(self) -> None:
        """Forget every remembered decision (remembered tokens stay)."""
        self.cache.clear()
