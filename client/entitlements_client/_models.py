"""What the SDK hands back and takes in: decisions, checks, typed options, request errors.

Everything here is a frozen value; nothing does I/O.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    pass

__all__ = [
    "BreakerPolicy",
    "Check",
    "ClientStats",
    "Decision",
    "Reason",
    "RetryPolicy",
]

Reason = Literal["granted", "denied", "territory", "not_yet_valid", "expired", "not_licensed"]
REASONS: frozenset[str] = frozenset(
    {"granted", "denied", "territory", "not_yet_valid", "expired", "not_licensed"}
)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one check, as the service gave it (possibly remembered by the SDK).

    ``allowed=False`` is a normal answer, not an error; ``reason`` says why
    (``granted``, ``denied``, ``territory``, ``not_yet_valid``, ``expired``,
    ``not_licensed``). ``grant`` is the id of the grant that allowed it.
    ``valid_until`` (aware UTC) is when the answer may change by time alone
    (``None``: no time-based change ahead); the SDK never serves a remembered
    decision past it. ``revision`` is the data revision the answer was
    computed at. ``attributes`` is the allowing grant's read-only attributes.
    ``ancestors`` are the resource's ancestors at that revision (``None``: the
    service did not say); the SDK's cache uses them to drop exactly the answers a
    change to a label or release affects.

    ``bool(decision)`` is ``decision.allowed``, so ``if decision:`` is safe.
    """

    allowed: bool
    reason: Reason
    grant: str | None
    valid_until: datetime | None
    revision: int
    attributes: Mapping[str, Any] | None = None
    ancestors: tuple[str, ...] | None = None

    def __bool__(self) -> bool:
        return self.allowed

    @classmethod
    def from_json(cls, obj: object) -> Decision:
        """Read the REST API's JSON form strictly; anything unexpected raises ValueError."""
        if not isinstance(obj, dict):
            raise ValueError("a decision must be an object")
        allowed, reason, grant = obj.get("allowed"), obj.get("reason"), obj.get("grant")
        until, revision = obj.get("valid_until"), obj.get("revision")
        attributes = obj.get("attributes")
        if not isinstance(allowed, bool) or reason not in REASONS:
            raise ValueError("bad 'allowed' or 'reason'")
        if allowed != (reason == "granted"):
            raise ValueError("'allowed' contradicts 'reason'")
        if grant is not None and not isinstance(grant, str):
            raise ValueError("bad 'grant'")
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
            raise ValueError("bad 'revision'")
        valid_until = None
        if until is not None:
            if not isinstance(until, str):
                raise ValueError("bad 'valid_until'")
            valid_until = datetime.fromisoformat(until)
            if valid_until.tzinfo is None:
                raise ValueError("'valid_until' has no offset")
            valid_until = valid_until.astimezone(UTC)
        if attributes is not None and not isinstance(attributes, dict):
            raise ValueError("bad 'attributes'")
        ancestors = obj.get("ancestors")
        if ancestors is not None and (
            not isinstance(ancestors, list) or not all(isinstance(a, str) for a in ancestors)
        ):
            raise ValueError("bad 'ancestors'")
        return cls(
            allowed=allowed,
            reason=reason,
            grant=grant,
            valid_until=valid_until,
            revision=revision,
            attributes=MappingProxyType(attributes) if attributes is not None else None,
            ancestors=tuple(ancestors) if ancestors is not None else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The REST API's JSON form of this decision."""
        until = self.valid_until
        text = None if until is None else until.isoformat().replace("+00:00", "Z")
        return {
            "allowed": self.allowed,
            "reason": self.reason,
            "grant": self.grant,
            "valid_until": text,
            "revision": self.revision,
            "attributes": dict(self.attributes) if self.attributes is not None else None,
            **({} if self.ancestors is None else {"ancestors": list(self.ancestors)}),
        }


class Check(NamedTuple):
    """One question for :meth:`authorize_many`: a plain ``(resource, action, territory)`` works too."""

    resource: str
    action: str
    territory: str


def _positive(name: str, value: object, *, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    if value < 0 or (value == 0 and not zero):
        raise ValueError(f"{name} must be {'non-negative' if zero else 'positive'}")
    return float(value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries of idempotent calls (checks are read-only, so all of them).

    Up to ``attempts`` tries in all, only after a connection error, a timeout
    of one try with time left, a 5xx, a 408 or a 429; never past the call's
    timeout. Between tries: exponential backoff with full jitter,
    ``uniform(0, min(max_delay, base_delay * 2**n))``; a ``Retry-After`` is
    honoured up to ``max_retry_after`` seconds (a longer one ends the call
    with :class:`UnavailableError` at once rather than sleeping through it).
    """

    attempts: int = 3
    base_delay: float = 0.05
    max_delay: float = 1.0
    max_retry_after: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ValueError("attempts must be an integer")
        if not 1 <= self.attempts <= 10:
            raise ValueError("attempts must be between 1 and 10")
        _positive("base_delay", self.base_delay, zero=True)
        _positive("max_delay", self.max_delay, zero=True)
        _positive("max_retry_after", self.max_retry_after, zero=True)

    def pause(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait after failed try number ``attempt`` (1-based): full jitter,
        at least ``retry_after``; None when ``retry_after`` exceeds ``max_retry_after``."""
        if retry_after is not None and retry_after > self.max_retry_after:
            return None
        cap = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return max(random.uniform(0.0, cap), retry_after or 0.0)


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """Circuit breaker: after ``failures`` consecutive failed tries (connection error,
    timeout, 5xx) calls fail fast with :class:`UnavailableError` for ``reset_after``
    seconds; then one trial call is let through (half-open) and its outcome
    closes or re-opens the circuit."""

    failures: int = 5
    reset_after: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.failures, bool) or not isinstance(self.failures, int):
            raise ValueError("failures must be an integer")
        if self.failures < 1:
            raise ValueError("failures must be at least 1")
        _positive("reset_after", self.reset_after)


@dataclass(frozen=True, slots=True)
class ClientStats:
    """Counters of one client since it was created (for metrics and tests)."""

    #: Fine decisions served from the local decision cache.
    cache_hits: int
    #: Fine decisions that had to be asked of the service.
    cache_misses: int
    #: Calls that joined an identical check already waiting or in flight.
    coalesced: int
    #: HTTP requests sent for checks (``/v1/check`` and ``/v1/check/batch``), retries included.
    requests: int
    #: Of those, ``/v1/check/batch`` requests.
    batch_requests: int
    #: Checks carried by those requests.
    checks_sent: int
    #: Retried tries.
    retries: int
    #: ``closed``, ``open`` or ``half_open``.
    breaker: str
    #: Decisions in the local cache now.
    cache_size: int
    #: Change-feed revision applied (``None`` until the feed started).
    feed_revision: int | None
    #: Whether the feed answered within the staleness bound.
    feed_fresh: bool
