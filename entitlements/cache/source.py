"""The cached ``GrantSource``: L1 (in process) → L2 (Redis, optional) → Postgres.

A check needs two grant sets: the resource's view (its ancestors and every
grant on them that is not one user's) and the caller's own grants. Both are
cached and evaluated in process, so windows stay exact with no TTL tricks.

Rules that keep it correct:
- an entry is used only if the change index says nothing it depends on changed
  since it was read, and only while the index caught up with the change feed
  within the staleness bound — otherwise the check reads Postgres directly;
- ``min_revision`` beyond what the index has applied reads Postgres directly;
- concurrent misses on one key share one database query (single flight).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from entitlements import metrics
from entitlements.cache.local import RESOURCE, USER, ChangeIndex, LocalCache
from entitlements.domain.model import CheckData
from entitlements.errors import StoreUnavailableError
from entitlements.service.checks import StoreGrantSource
from entitlements.service.decisions import mark_store_read
from entitlements.service.ports import CheckReads, GrantCache


class CachedGrantSource:
    """Implements the ``GrantSource`` port over the caches and the store (``CheckReads``);
    when cached entries may not answer, it is ``StoreGrantSource`` (``direct``)."""

    def __init__(
        self,
        store: CheckReads,
        index: ChangeIndex,
        *,
        local: LocalCache | None = None,
        shared: GrantCache | None = None,
        staleness: float = 5.0,
    ) -> None:
        self.store = store
        self.direct = StoreGrantSource(store)
        self.index = index
        # Not `local or ...`: an empty LocalCache is falsy (it has __len__).
        self.local = local if local is not None else LocalCache(index)
        self.shared = shared
        self.staleness = staleness
        self._inflight: dict[tuple[str, str], asyncio.Future[CheckData]] = {}

    def usable(self, min_revision: int | None) -> bool:
        """May cached entries answer now?"""
        if not self.index.is_fresh(self.staleness):
            return False
        return min_revision is None or self.index.revision >= min_revision

    def _combine(self, resource: str, view: CheckData, own: CheckData) -> CheckData:
        scope = view.ancestors | {resource}
        mine = tuple(g for g in own.grants if g.resource in scope)
        # The answer is right as of the index revision for entries read before it.
        applied = self.index.revision
        revision = min(max(view.revision, applied), max(own.revision, applied))
        # The view's walk up the graph decides whether the ancestors are whole.
        return CheckData(revision, scope, view.grants + mine, view.too_deep or own.too_deep)

    async def check_data(
        self, resource: str, user: str, subjects: frozenset[str], min_revision: int | None
    ) -> CheckData:
        if not self.usable(min_revision):
            return await self.direct.check_data(resource, user, subjects, min_revision)
        views = await self._get_many(RESOURCE, [resource])
        own = (await self._get_many(USER, [user]))[user]
        return self._combine(resource, views[resource], own)

    async def check_data_many(
        self,
        resources: Sequence[str],
        user: str,
        subjects: frozenset[str],
        min_revision: int | None,
    ) -> dict[str, CheckData]:
        if not self.usable(min_revision):
            return await self.direct.check_data_many(resources, user, subjects, min_revision)
        views = await self._get_many(RESOURCE, list(dict.fromkeys(resources)))
        own = (await self._get_many(USER, [user]))[user]
        return {r: self._combine(r, views[r], own) for r in views}

    async def _get_many(self, kind: str, keys: Sequence[str]) -> dict[str, CheckData]:
        """Every key's grant set: L1, then in-flight loads, then L2, then one store query."""
        out: dict[str, CheckData] = {}
        waiting: dict[str, asyncio.Future[CheckData]] = {}
        missing: list[str] = []
        for key in keys:
            hit = self.local.get(kind, key)
            if hit is not None:
                out[key] = hit
                continue
            pending = self._inflight.get((kind, key))
            if pending is not None:
                waiting[key] = pending
            else:
                missing.append(key)
        hits = len(out)
        if hits:
            metrics.L1_HIT.inc(hits)
        if missing or waiting:
            metrics.L1_MISS.inc(len(missing) + len(waiting))
        if missing:
            loop = asyncio.get_running_loop()
            futures = {key: loop.create_future() for key in missing}
            for key, fut in futures.items():
                self._inflight[(kind, key)] = fut
            try:
                loaded = await self._load(kind, missing)
            except BaseException as exc:
                for key, fut in futures.items():
                    self._inflight.pop((kind, key), None)
                    if not fut.done():
                        fut.set_exception(exc)
                        fut.exception()  # mark retrieved: waiters re-raise it themselves
                raise
            for key, fut in futures.items():
                self._inflight.pop((kind, key), None)
                fut.set_result(loaded[key])
            out.update(loaded)
        if waiting:
            mark_store_read()  # answered by another request's Postgres read
        for key, fut in waiting.items():
            out[key] = await fut
        return out

    async def _load(self, kind: str, keys: list[str]) -> dict[str, CheckData]:
        found: dict[str, CheckData] = {}
        if self.shared is not None:
            for key, data in zip(keys, await self.shared.get_many(kind, keys), strict=True):
                if data is not None and self.index.valid(kind, key, data):
                    found[key] = data
            if found:
                metrics.L2_HIT.inc(len(found))
            if len(found) < len(keys):
                metrics.L2_MISS.inc(len(keys) - len(found))
        rest = [k for k in keys if k not in found]
        fresh: dict[str, CheckData] = {}
        if rest:
            mark_store_read()
            try:
                # Any snapshot within the bound (a read replica may be a little behind the
                # index), then validated like an L2 entry: what changed after the snapshot
                # is read again where every change the index has applied is visible.
                fresh = await self._read(kind, rest, None)
                behind = [k for k, data in fresh.items() if not self.index.valid(kind, k, data)]
                if behind:
                    fresh.update(await self._read(kind, behind, self.index.revision))
            except StoreUnavailableError:
                metrics.BACKEND_ERRORS.labels("postgres", "load").inc()
                raise
            metrics.DB_LOADS.labels("resource" if kind == RESOURCE else "user").inc(len(rest))
            if self.shared is not None:
                await self.shared.put_many(kind, list(fresh.items()))
        for key, data in (found | fresh).items():
            self.local.put(kind, key, data)
        return found | fresh

    async def _read(
        self, kind: str, keys: list[str], min_revision: int | None
    ) -> dict[str, CheckData]:
        if kind == RESOURCE:
            _, views = await self.store.load_checks(keys, None, min_revision=min_revision)
            return views
        return {k: await self.store.load_user_grants(k, min_revision=min_revision) for k in keys}
