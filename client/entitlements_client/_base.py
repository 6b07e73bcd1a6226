"""Everything the sync and async clients share: all decisions, none of the I/O.

``_sync.py`` and ``_async.py`` only verify tokens, send HTTP requests, sleep
and wait. What to send, whether to retry, how long to back off, whether the
circuit is open, how to read an answer, what to cache and how to coalesce
checks is decided here, once (as httpx's ``BaseClient``).

Retries and the change feed are written as generators that *yield* the I/O
they need — :class:`Send` a request, :class:`Sleep` — and receive the outcome
(an ``httpx.Response`` or the exception the send raised); each client drives
them with its own I/O (the pattern of httpx's ``Auth.auth_flow``).
"""

from __future__ import annotations

import copy
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, Generic, Protocol, TypeAlias, TypeVar

import httpx
import orjson

from ._cache import CacheKey, DecisionCache
from ._errors import (
    INVALID_TOKEN_CODES,
    ForbiddenError,
    InvalidRequestError,
    InvalidTokenError,
    TokenRejectedError,
    UnavailableError,
)
from ._models import BreakerPolicy, ClientStats, Decision, RetryPolicy
from .issuers import ALL_SCOPES
from .jwks import KeySet
from .verify import IssuerConfig, TokenVerifier, VerifiedToken

__all__ = ["service_issuer"]

logger = logging.getLogger("entitlements_client")

MAX_BATCH: Final = 1000
MAX_FEED_WAIT: Final = 25.0
# The service's own input rules (entitlements.domain.model): checked before a check
# joins a batch, so one bad question cannot fail the other callers' answers.
_RESOURCE_RE: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}:[A-Za-z0-9][A-Za-z0-9._~@+/:=-]{0,199}")
_ACTION_RE: Final = re.compile(r"[a-z][a-z0-9_.-]{0,62}")
_TERRITORY_RE: Final = re.compile(r"[A-Z]{2}")
_USER_RE: Final = re.compile(r"[A-Za-z0-9._~@+/:=|-]{1,255}")
_ROLE_RE: Final = re.compile(r"[A-Za-z0-9._~@+/:=|-]{1,128}")
_MAX_ROLES: Final = 64
_BATCH_FIELD_RE: Final = re.compile(r"checks\.([0-9]+)(?:\.|$)")
_RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
_REQUEST_STATUSES: Final = frozenset({400, 404, 409, 413, 422})

#: (group, subject, roles, resource, action, territory, at, min_revision); group None
#: means "asked with the service token", else the user's own token is forwarded.
Flight: TypeAlias = tuple[str | None, str, tuple[str, ...], str, str, str, str | None, int | None]
Outcome: TypeAlias = "Decision | BaseException"


def service_issuer(
    base_url: str, *, issuer: str, audience: str, algorithms: Sequence[str] = ("EdDSA", "ES256")
) -> IssuerConfig:
    """Trust the tokens the entitlements service at ``base_url`` signs itself.

    Its keys come from ``<base_url>/.well-known/jwks.json`` (https, or http on
    loopback); ``issuer``/``audience`` are the service's ``ENTITLEMENTS_ISSUER``
    and ``ENTITLEMENTS_AUDIENCE``. The service's tokens are "ours": their ``sub``
    is the user id as it is (no ``subject_prefix``; the service already put an
    external user's namespace in the ``sub`` of the tokens it exchanged for them)
    and every ``entitlements:*`` scope they carry counts.
    """
    keys = KeySet(url=base_url.rstrip("/") + "/.well-known/jwks.json")
    return IssuerConfig(
        issuer=issuer,
        audience=audience,
        keys=keys,
        algorithms=tuple(algorithms),
        subject_prefix="",
        allowed_scopes=(ALL_SCOPES,),
    )


# -- I/O requests the generators yield ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``request``; give up after ``timeout`` seconds in all."""

    request: httpx.Request
    timeout: float


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Action: TypeAlias = Send | Sleep


@dataclass(frozen=True, slots=True)
class Item:
    """One check ready to send: its JSON body, who asks, and where its answer goes."""

    flight: Flight
    cache_key: CacheKey | None
    body: dict[str, Any]
    group: str | None
    #: The asking call's deadline (monotonic): a batch gives up at its earliest one.
    deadline: float


# -- circuit breaker -------------------------------------------------------------------


class CircuitBreaker:
    """closed → (``failures`` in a row) → open → (``reset_after``) → half-open: one trial."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_at: float | None = None

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._clock() - self._opened_at < self.policy.reset_after:
                return "open"
            return "half_open"

    def allow(self) -> bool:
        """May a request go out now? In half-open state only one trial at a time."""
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


# -- coalescing ---------------------------------------------------------------------------


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

    def drain(self) -> list[tuple[str | None, list[Item]]]:
        """Take every pending check, grouped by credentials, in chunks of ``max_batch``."""
        with self._lock:
            taken, self._pending = self._pending, []
        groups: dict[str | None, list[Item]] = {}
        for item in taken:
            groups.setdefault(item.group, []).append(item)
        return [
            (group, items[i : i + self.max_batch])
            for group, items in groups.items()
            for i in range(0, len(items), self.max_batch)
        ]

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


# -- reading answers ---------------------------------------------------------------------


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


def _token_error(response: httpx.Response) -> str:
    """The verifier's reason from a 401 problem body (``token_error``), or ``""``."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return ""
    code = body.get("token_error") if isinstance(body, dict) else None
    return code if isinstance(code, str) else ""


def _problem_detail(response: httpx.Response) -> tuple[str, list[dict[str, Any]]]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return "", []
    if not isinstance(body, dict):
        return "", []
    detail = body.get("detail") or body.get("title") or ""
    errors = body.get("errors")
    found = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
    return str(detail)[:300], found


def _names(names: Sequence[str] | str) -> tuple[str, ...]:
    # A bare string is one name, not a sequence of one-letter names.
    return (names,) if isinstance(names, str) else tuple(names)


# -- the shared client ---------------------------------------------------------------------


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
        self.feed_wait = min(MAX_FEED_WAIT, self.staleness / 2)
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
        self._feed_url = self.base_url + "/v1/changes"
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
        if not isinstance(resource, str) or not _RESOURCE_RE.fullmatch(resource):
            raise InvalidRequestError(f"resource {str(resource)[:60]!r} is not 'type:id'")
        if not isinstance(action, str) or not _ACTION_RE.fullmatch(action):
            raise InvalidRequestError(f"action {str(action)[:60]!r} is not a lowercase identifier")
        if not isinstance(territory, str) or not _TERRITORY_RE.fullmatch(territory):
            raise InvalidRequestError(
                f"territory {str(territory)[:10]!r} is not ISO 3166-1 alpha-2"
            )
        body: dict[str, Any] = {"resource": resource, "action": action, "territory": territory}
        at_text = None
        if at is not None:
            if not isinstance(at, datetime) or at.tzinfo is None:
                raise InvalidRequestError("at must be a timezone-aware datetime")
            at_text = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
            body["at"] = at_text
        if min_revision is not None:
            if isinstance(min_revision, bool) or not isinstance(min_revision, int):
                raise InvalidRequestError("min_revision must be an integer")
            if not 0 <= min_revision < 2**63:
                raise InvalidRequestError("min_revision must be a non-negative integer")
            body["min_revision"] = min_revision
        subject, roles = verified.subject, verified.roles
        group: str | None = token
        # With a service token the question names the user: one identity for everyone, so
        # checks of different users share batches. A subject or roles the API could not
        # take in a body fall back to forwarding the user's own token.
        if (
            self._service_token is not None
            and _USER_RE.fullmatch(subject)
            and len(roles) <= _MAX_ROLES
            and all(_ROLE_RE.fullmatch(r) for r in roles)
        ):
            body["subject"] = subject
            body["roles"] = list(roles)
            group = None
        cache_key = None if at is not None else (subject, roles, resource, action, territory)
        flight = (group, subject, roles, resource, action, territory, at_text, min_revision)
        return Item(flight, cache_key, body, group, self._clock() + self.timeout)

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

    # -- one exchange with retries, backoff and the breaker -------------------------------

    def _exchange(
        self, build: Callable[[float], httpx.Request], deadline: float, checks: int
    ) -> Generator[Action, object, httpx.Response]:
        """Send until an answer that is final; raises UnavailableError when giving up."""
        attempt = 0
        last: httpx.Request | None = None
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise UnavailableError(
                    "the entitlements service did not answer in time", request=last
                )
            if not self.breaker.allow():
                raise UnavailableError(
                    "the entitlements service is failing (circuit open)", request=last
                )
            request = last = build(remaining)
            self._count(batch=checks > 1, checks=checks)
            outcome = yield Send(request, remaining)
            attempt += 1
            after: float | None = None
            if isinstance(outcome, httpx.Response):
                status = outcome.status_code
                if status >= 500 or status == 408:
                    self.breaker.failure()
                else:
                    self.breaker.success()
                if status not in _RETRY_STATUSES:
                    return outcome
                after = retry_after(outcome.headers.get("retry-after"), time.time())
                failure = UnavailableError(
                    f"the entitlements service answered {status}", request=request, response=outcome
                )
            else:
                self.breaker.failure()
                failure = UnavailableError(
                    f"the entitlements service could not be reached ({type(outcome).__name__})",
                    request=request,
                )
                if isinstance(outcome, BaseException):
                    failure.__cause__ = outcome
            if attempt >= self.retry.attempts:
                raise failure
            pause = self.retry.pause(attempt, after)
            if pause is None or self._clock() + pause >= deadline:
                raise failure
            self._count(retry=True)
            if pause > 0:
                yield Sleep(pause)

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
            response = yield from self._exchange(build, deadline, len(items))
        except UnavailableError as exc:
            return [exc] * len(items)
        outcomes, retry = self._read(response, items, group)
        if retry:
            again = [items[i] for i in retry]
            redone = yield from self._run(group, again)
            for i, outcome in zip(retry, redone, strict=True):
                outcomes[i] = outcome
        return outcomes

    def _read(
        self, response: httpx.Response, items: Sequence[Item], group: str | None
    ) -> tuple[list[Outcome], list[int]]:
        """Outcomes from a final response, and which items to resend (a batch refused for
        another item's bad field)."""
        n = len(items)
        status = response.status_code
        request = response.request
        if status == 200:
            try:
                body = orjson.loads(response.content)
                if n == 1:
                    return [Decision.from_json(body)], []
                results = body.get("results") if isinstance(body, dict) else None
                if not isinstance(results, list) or len(results) != n:
                    raise ValueError("batch answer does not match the request")
                return [Decision.from_json(r) for r in results], []
            except ValueError:
                # orjson.JSONDecodeError is a ValueError. Fail closed, never guess.
                unreadable = UnavailableError(
                    "the entitlements service sent an unreadable answer",
                    request=request,
                    response=response,
                )
                return [unreadable] * n, []
        detail, errors = _problem_detail(response)
        if status == 401:
            if group is None:
                # Our own credential was refused, not the user's: not their fault, no 401.
                failure: BaseException = UnavailableError(
                    "the entitlements service refused the SDK's service token",
                    request=request,
                    response=response,
                )
            else:
                code = _token_error(response)
                failure = TokenRejectedError(
                    code if code in INVALID_TOKEN_CODES else "rejected_by_service",
                    "the entitlements service rejected the token",
                    request=request,
                    response=response,
                )
            return [failure] * n, []
        if status == 403:
            message = detail or "forbidden"
            return [ForbiddenError(message, request=request, response=response)] * n, []
        if status in _REQUEST_STATUSES:
            message = detail or f"the entitlements service refused the request ({status})"
            if n > 1 and status == 422 and errors:
                bad: dict[int, str] = {}
                for e in errors:
                    match = _BATCH_FIELD_RE.match(str(e.get("field", "")))
                    if match is None or int(match.group(1)) >= n:
                        bad.clear()
                        break
                    bad.setdefault(int(match.group(1)), f"{e.get('field')}: {e.get('message')}")
                if bad and len(bad) < n:
                    outcomes: list[Outcome] = [
                        InvalidRequestError(bad[i], request=request, response=response)
                        if i in bad
                        else UnavailableError("not answered")
                        for i in range(n)
                    ]
                    return outcomes, [i for i in range(n) if i not in bad]
            return [InvalidRequestError(message, request=request, response=response)] * n, []
        return [
            UnavailableError(
                f"the entitlements service answered {status}", request=request, response=response
            )
        ] * n, []

    # -- the change feed ---------------------------------------------------------------

    def _follow(self) -> Generator[Action, object, None]:
        """Long-poll ``/v1/changes`` forever, applying each page to the cache. Returns
        only when the feed cannot be used at all (then entries live ``staleness``).

        The first poll, and the first after a failure, does not wait: the cache is
        fresh as soon as the feed has caught up once.
        """
        failures = 0
        live = False
        while not self.closed:
            cursor = self.cache.cursor
            assert cursor is not None
            hold = self.feed_wait if live else 0.0
            timeout = hold + self.timeout
            outcome: object = None
            try:
                authorization = self._authorization(None)
            except Exception:
                logger.warning("change feed: no service token", exc_info=True)
            else:
                request = httpx.Request(
                    "GET",
                    self._feed_url,
                    params={"since": cursor, "wait": f"{hold:g}"},
                    headers={"Authorization": authorization, "Accept": "application/json"},
                    extensions={"timeout": httpx.Timeout(timeout).as_dict()},
                )
                started = self._clock()
                outcome = yield Send(request, timeout)
            if isinstance(outcome, httpx.Response) and outcome.status_code in (403, 404):
                logger.warning(
                    "change feed refused (%s): cached decisions now live %.3g s",
                    outcome.status_code,
                    self.staleness,
                )
                self.cache.unfollow()
                return
            if isinstance(outcome, httpx.Response) and outcome.status_code == 200:
                try:
                    more, empty = self.cache.apply_page(orjson.loads(outcome.content))
                except ValueError:
                    logger.warning("change feed: unreadable page")
                else:
                    failures = 0
                    live = not more
                    # A server that does not hold the poll open must not make us spin.
                    if hold and empty and not more and self._clock() - started < 0.05:
                        yield Sleep(0.05)
                    continue
            elif isinstance(outcome, httpx.Response):
                logger.info("change feed answered %s", outcome.status_code)
            elif outcome is not None:
                logger.info("change feed unreachable: %s", type(outcome).__name__)
            failures += 1
            live = False
            cap = min(self.staleness / 2, 0.05 * 2 ** min(failures, 8))
            yield Sleep(random.uniform(cap / 2, cap))

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
