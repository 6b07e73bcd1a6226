"""Read replicas: checks and listings read a streaming replica when it is known to be
recent enough, and the primary otherwise.

What a replica has applied is read cheaply, every ``probe_interval`` seconds per
process: the primary's revision ``P`` (one index-less row), then each replica's
``SELECT value FROM ent_revision``. Every write takes its revision last, under the
revision row's lock, so commits happen in revision order and a replica showing a
revision ``>= P`` has replayed every write committed before the primary was read:
it is *fresh as of* that moment. The rules, for every read:

- a replica is read only while it is fresh as of no more than ``staleness`` seconds
  ago (the same bound the caches keep) and, for a read that needs a revision
  (``min_revision``), only when it was seen to hold that revision; a cache fill
  asks for none and validates what it gets against its change index key by key,
  asking again with the revision it has applied for the keys changed since the
  snapshot (``cache.source``);
- the revision of what a replica returned is checked against what was needed (a
  replica rebuilt behind our back is caught here), and a failed or short read is
  retried on the primary at once;
- a replica that fails is skipped until a probe finds it answering again.

So a replica never yields an answer staler than the bound, nor one older than the
revision asked for. Writes, imports, keys and the change log never come here: they
use the primary's pool directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar
from urllib.parse import urlsplit

import asyncpg

from entitlements import metrics
from entitlements.domain.model import CheckData
from entitlements.errors import StoreUnavailableError
from entitlements.store.changes import read_revision
from entitlements.store.checks import PostgresCheckReads
from entitlements.store.pool import open_pool, translate_errors

log = logging.getLogger("entitlements.replicas")

T = TypeVar("T")

PROBE_TASK: Final = "entitlements-replica-probe"

READ_FAILURES = (StoreUnavailableError, asyncpg.PostgresError, OSError, TimeoutError)
"""What a replica read may raise that a primary read should answer instead (down, a
recovery conflict cancelling the query, a timeout)."""


class _Stale(Exception):
    """The replica's snapshot was older than the read needed."""


@dataclass(slots=True)
class Replica:
    """One replica and what the last probes found."""

    index: int
    dsn: str
    reads: PostgresCheckReads | None = None
    up: bool = False
    revision: int = -1
    """The last revision seen applied on it."""
    fresh_as_of: float = float("-inf")
    """Monotonic time: every write committed before it is visible on the replica."""
    fresh_revision: int = -1
    """The primary's revision at ``fresh_as_of`` (what any read of it must show)."""
    error: str | None = None
    reads_served: int = 0
    failures: int = 0
    name: str = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.dsn)
        # host:port only: a DSN's user and password never leave the process.
        self.name = f"{parts.hostname or 'local'}:{parts.port or 5432}"

    def status(self, now: float, staleness: float) -> str:
        if not self.up:
            return "down"
        return "ok" if now - self.fresh_as_of <= staleness else "behind"


class ReplicaRouter:
    """The ``CheckReads`` port over a primary and its read replicas (see the module)."""

    def __init__(
        self,
        primary: PostgresCheckReads,
        replica_dsns: Sequence[str],
        *,
        staleness: float,
        probe_interval: float = 0.5,
        pool_max_size: int = 10,
        timeout: float = 5.0,
        pooled: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.replicas = [Replica(i, dsn) for i, dsn in enumerate(replica_dsns)]
        self.staleness = staleness
        self.probe_interval = probe_interval
        self.pool_max_size = pool_max_size
        self.timeout = timeout
        self.pooled = pooled
        self.clock = clock
        self.primary_revision = -1
        self._turn = itertools.count()
        self._task: asyncio.Task[None] | None = None

    # --- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Probe once (a replica down now is skipped, not fatal), then every interval."""
        await self.probe()
        self._task = asyncio.create_task(self._probe_forever(), name=PROBE_TASK)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for replica in self.replicas:
            if replica.reads is not None:
                pool, replica.reads = replica.reads.pool, None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pool.close(), 2.0)

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval)
            try:
                await self.probe()
            except Exception:  # the probe must outlive anything
                log.exception("replica probe failed")

    async def probe(self) -> None:
        """Read the primary's revision, then each replica's: who is fresh as of now."""
        started = self.clock()
        try:
            async with translate_errors():
                head: int | None = await read_revision(self.primary.pool)
        except (StoreUnavailableError, asyncpg.PostgresError):
            head = None
        if head is not None:
            self.primary_revision = head
        await asyncio.gather(*(self._probe_one(r, started, head) for r in self.replicas))
        now = self.clock()
        for r in self.replicas:
            metrics.REPLICA_UP.labels(r.name).set(1 if r.up else 0)
            lag = now - r.fresh_as_of if r.up else float("inf")
            metrics.REPLICA_LAG.labels(r.name).set(lag if lag != float("inf") else -1)

    async def _probe_one(self, replica: Replica, started: float, head: int | None) -> None:
        try:
            async with asyncio.timeout(max(self.probe_interval, 1.0)):
                if replica.reads is None:
                    pool = await open_pool(
                        replica.dsn,
                        min_size=1,
                        max_size=self.pool_max_size,
                        timeout=self.timeout,
                        pooled=self.pooled,
                        application_name="entitlements-replica",
                    )
                    replica.reads = PostgresCheckReads(pool)
                async with translate_errors():
                    revision = await read_revision(replica.reads.pool)
        except (*READ_FAILURES, asyncpg.InterfaceError) as exc:
            if replica.up:
                log.warning("replica %s is not answering (%s)", replica.name, type(exc).__name__)
            replica.up = False
            replica.error = type(exc).__name__
            return
        if not replica.up:
            log.info("replica %s answers (revision %d)", replica.name, revision)
        replica.up = True
        replica.error = None
        replica.revision = revision
        if head is not None and revision >= head:
            replica.fresh_as_of = started
            replica.fresh_revision = head

    # --- status ----------------------------------------------------------------------

    def report(self) -> list[dict[str, object]]:
        """Each replica as ``/readyz`` shows it (no credentials)."""
        now = self.clock()
        out: list[dict[str, object]] = []
        for r in self.replicas:
            entry: dict[str, object] = {
                "replica": r.name,
                "status": r.status(now, self.staleness),
                "revision": max(r.revision, 0),
            }
            if r.up and r.fresh_as_of != float("-inf"):
                entry["lag_seconds"] = round(max(0.0, now - r.fresh_as_of), 3)
            out.append(entry)
        return out

    # --- routing -----------------------------------------------------------------------

    def pick(self, min_revision: int | None) -> Replica | None:
        """A replica that may answer a read needing ``min_revision`` now, or None."""
        if not self.replicas:
            return None
        now = self.clock()
        usable = [
            r
            for r in self.replicas
            if r.up
            and r.reads is not None
            and now - r.fresh_as_of <= self.staleness
            and (min_revision is None or r.revision >= min_revision)
        ]
        if not usable:
            return None
        return usable[next(self._turn) % len(usable)]

    async def _route(
        self,
        min_revision: int | None,
        on_replica: Callable[[PostgresCheckReads], Awaitable[T]],
        revision_of: Callable[[T], int] | None,
        on_primary: Callable[[], Awaitable[T]],
    ) -> T:
        replica = self.pick(min_revision)
        if replica is None or replica.reads is None:
            metrics.READ_TARGET.labels("primary").inc()
            return await on_primary()
        needed = max(min_revision or 0, replica.fresh_revision)
        try:
            result = await on_replica(replica.reads)
            if revision_of is not None and revision_of(result) < needed:
                raise _Stale()
        except _Stale:
            metrics.READ_TARGET.labels("primary_after_stale_replica").inc()
            return await on_primary()
        except READ_FAILURES as exc:
            replica.up = False  # until a probe finds it answering again
            replica.failures += 1
            replica.error = type(exc).__name__
            metrics.READ_TARGET.labels("primary_after_replica_error").inc()
            return await on_primary()
        replica.reads_served += 1
        metrics.READ_TARGET.labels("replica").inc()
        return result

    async def load_check(
        self, resource: str, subjects: Sequence[str], *, min_revision: int | None = None
    ) -> CheckData:
        return await self._route(
            min_revision,
            lambda reads: reads.load_check(resource, subjects),
            _revision,
            lambda: self.primary.load_check(resource, subjects),
        )

    async def load_checks(
        self,
        resources: Sequence[str],
        subjects: Sequence[str] | None,
        *,
        min_revision: int | None = None,
    ) -> tuple[int, dict[str, CheckData]]:
        return await self._route(
            min_revision,
            lambda reads: reads.load_checks(resources, subjects),
            _first,
            lambda: self.primary.load_checks(resources, subjects),
        )

    async def load_user_grants(self, user_id: str, *, min_revision: int | None = None) -> CheckData:
        return await self._route(
            min_revision,
            lambda reads: reads.load_user_grants(user_id),
            _revision,
            lambda: self.primary.load_user_grants(user_id),
        )

    async def listing_candidates(
        self,
        subjects: Sequence[str],
        action: str,
        *,
        type_: str | None,
        after: str | None,
        limit: int,
    ) -> list[str]:
        # Candidates only (each is then checked as a check is): a fresh replica's list
        # is within the bound.
        return await self._route(
            None,
            lambda reads: reads.listing_candidates(
                subjects, action, type_=type_, after=after, limit=limit
            ),
            None,
            lambda: self.primary.listing_candidates(
                subjects, action, type_=type_, after=after, limit=limit
            ),
        )


def _revision(data: CheckData) -> int:
    return data.revision


def _first(result: tuple[int, dict[str, CheckData]]) -> int:
    return result[0]


__all__ = ["PROBE_TASK", "Replica", "ReplicaRouter"]
