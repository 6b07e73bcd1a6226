"""The check use cases: one check, a batch, and listing what a caller may use.

The service reads candidate grants through a ``GrantSource`` (Postgres
directly, or the cache in front of it) and evaluates them with the pure
domain policy, so a cached and an uncached answer are computed the same way.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from entitlements.domain.model import MAX_DEPTH, CheckData, Decision, Grant, parse_resource
from entitlements.domain.policy import Query, decide, subjects_for
from entitlements.errors import FieldError, InvalidInputError
from entitlements.service.decisions import mark_store_read
from entitlements.service.ports import CheckReads, GrantSource

MAX_BATCH = 1000
MAX_PAGE = 1000

log = logging.getLogger("entitlements")


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """One question: may ``user`` (with ``roles``) do ``action`` on ``resource`` in ``territory`` at ``at``."""

    user: str
    roles: tuple[str, ...]
    resource: str
    action: str
    territory: str
    at: datetime | None = None
    min_revision: int | None = None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, object]]
    next_cursor: str | None
    revision: int


def _now() -> datetime:
    return datetime.now(UTC)


def _decide(req: CheckRequest, data: CheckData, subjects: frozenset[str], at: datetime) -> Decision:
    query = Query(
        subjects=subjects,
        resources=data.ancestors | {req.resource},
        action=req.action,
        territory=req.territory,
        at=at,
        too_deep=data.too_deep,
    )
    ancestors = tuple(sorted(a for a in data.ancestors if a != req.resource))
    return decide(data.grants, query, data.revision, ancestors)


class TooDeepWarning:
    """Logs that checks met a resource graph deeper than ``MAX_DEPTH``, at most once per
    ``interval`` seconds (a hot resource must not flood the log), counting the rest."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.last = float("-inf")
        self.unlogged = 0

    def seen(self, resource: str) -> None:
        self.unlogged += 1
        now = self.clock()
        if now - self.last < self.interval:
            return
        log.warning(
            "the resource graph above %s is deeper than %d levels: checks on it are denied"
            " until the graph is repaired (%d such check(s) since the last warning)",
            resource,
            MAX_DEPTH,
            self.unlogged,
        )
        self.last = now
        self.unlogged = 0


def encode_cursor(resource: str) -> str:
    return base64.urlsafe_b64encode(resource.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, parse: Callable[[object, str], str] = parse_resource) -> str:
    """The key a cursor carries, checked by ``parse`` (a cursor of ``/v1/entitlements``
    carries a resource, one of ``/v1/grants`` a grant id): a forged cursor is refused
    like any other bad input, never handed to the store as it decodes."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        return parse(raw.decode("utf-8"), "cursor")
    except (binascii.Error, UnicodeDecodeError, ValueError, InvalidInputError):
        raise InvalidInputError(
            FieldError("cursor", "is not a cursor this service issued")
        ) from None


class CheckService:
    """Answers checks from a ``GrantSource`` with the domain policy."""

    def __init__(
        self,
        source: GrantSource,
        listing: CheckReads,
        too_deep: TooDeepWarning | None = None,
    ) -> None:
        self.source = source
        self.listing = listing
        self.too_deep = too_deep if too_deep is not None else TooDeepWarning()

    def _decide(
        self, req: CheckRequest, data: CheckData, subjects: frozenset[str], at: datetime
    ) -> Decision:
        if data.too_deep:
            self.too_deep.seen(req.resource)
        return _decide(req, data, subjects, at)

    async def check(self, req: CheckRequest) -> Decision:
        subjects = subjects_for(req.user, req.roles)
        data = await self.source.check_data(req.resource, req.user, subjects, req.min_revision)
        return self._decide(req, data, subjects, req.at or _now())

    async def check_many(self, reqs: Sequence[CheckRequest]) -> list[Decision]:
        """Answer checks in order; one store round trip per distinct caller."""
        if len(reqs) > MAX_BATCH:
            raise InvalidInputError(FieldError("checks", f"at most {MAX_BATCH} checks per batch"))
        now = _now()
        groups: dict[tuple[str, tuple[str, ...], int | None], list[int]] = {}
        for i, r in enumerate(reqs):
            groups.setdefault((r.user, r.roles, r.min_revision), []).append(i)
        out: list[Decision | None] = [None] * len(reqs)
        for (user, roles, min_rev), idxs in groups.items():
            subjects = subjects_for(user, roles)
            data = await self.source.check_data_many(
                [reqs[i].resource for i in idxs], user, subjects, min_rev
            )
            for i in idxs:
                out[i] = self._decide(reqs[i], data[reqs[i].resource], subjects, reqs[i].at or now)
        return [d for d in out if d is not None]

    async def list_entitlements(
        self,
        *,
        user: str,
        roles: tuple[str, ...],
        action: str,
        territory: str,
        type_: str | None,
        cursor: str | None,
        limit: int,
        at: datetime | None = None,
    ) -> Page:
        """The resources this caller may use now, by id, a keyset page at a time.

        Candidates are the resources an allow grant reaches; each is then
        checked exactly as ``check`` would, so a listed resource always checks
        true and a denied or out-of-window one is never listed (nor one under a
        graph deeper than ``MAX_DEPTH``: its check fails closed).
        """
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInputError(FieldError("limit", f"must be between 1 and {MAX_PAGE}"))
        after = decode_cursor(cursor) if cursor else None
        subjects = subjects_for(user, roles)
        when = at or _now()
        items: list[dict[str, object]] = []
        revision = 0
        chunk = max(limit * 2, 50)
        while len(items) < limit:
            candidates = await self.listing.listing_candidates(
                sorted(subjects), action, type_=type_, after=after, limit=chunk
            )
            if not candidates:
                after = None
                break
            data = await self.source.check_data_many(candidates, user, subjects, None)
            for resource in candidates:
                req = CheckRequest(user, roles, resource, action, territory)
                decision = self._decide(req, data[resource], subjects, when)
                revision = max(revision, decision.revision)
                after = resource
                if decision.allowed:
                    items.append({"resource": resource, **decision.to_json()})
                    if len(items) == limit:
                        break
            if len(candidates) < chunk and len(items) < limit:
                after = None
                break
        next_cursor = encode_cursor(after) if after is not None and len(items) == limit else None
        return Page(items=items, next_cursor=next_cursor, revision=revision)


class StoreGrantSource:
    """Uncached: every check reads the store (the baseline the cache must beat, and the
    cache's own way past itself when its entries may not answer)."""

    def __init__(self, store: CheckReads) -> None:
        self.store = store

    async def check_data(
        self, resource: str, user: str, subjects: frozenset[str], min_revision: int | None
    ) -> CheckData:
        mark_store_read()
        data = await self.store.load_check(resource, sorted(subjects), min_revision=min_revision)
        ensure_fresh(data.revision, min_revision)
        return data

    async def check_data_many(
        self,
        resources: Sequence[str],
        user: str,
        subjects: frozenset[str],
        min_revision: int | None,
    ) -> dict[str, CheckData]:
        mark_store_read()
        revision, data = await self.store.load_checks(
            resources, sorted(subjects), min_revision=min_revision
        )
        ensure_fresh(revision, min_revision)
        return data


def ensure_fresh(revision: int, min_revision: int | None) -> None:
    """Postgres is the newest data there is: a ``min_revision`` beyond it names no write."""
    if min_revision is not None and revision < min_revision:
        raise InvalidInputError(
            FieldError(
                "min_revision",
                f"is ahead of every write (the current revision is {revision})",
            )
        )


__all__ = [
    "MAX_BATCH",
    "CheckRequest",
    "CheckService",
    "Grant",
    "GrantSource",
    "Page",
    "StoreGrantSource",
    "ensure_fresh",
]
