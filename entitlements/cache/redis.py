"""The shared cache (L2) in Redis or Valkey, and a circuit breaker around it.

Redis is an optimisation, never a dependency: every failure (down, slow,
flapping, full) is swallowed here and the caller falls through to Postgres.
Timeouts are short, and after a few failures in a row the breaker stops
trying for a while so a dead Redis costs nothing per request.

Redis Cluster / Valkey cluster (``ENTITLEMENTS_REDIS_CLUSTER=true``, a seed node in
``ENTITLEMENTS_REDIS_URL``): redis-py's ``RedisCluster`` finds the slot map from
the seed and follows MOVED/ASK and failovers. Keys carry no hash tag, so they
spread over every master; a multi-key read is one MGET per slot, sent as one
pipeline per node (``mget_nonatomic``), and writes are a non-transactional
pipeline split by node the same way. No pub/sub is used (invalidation comes from
the Postgres change feed), so nothing here needs a cluster-wide channel. While a
master fails over, the calls for its slots fail: they are misses, and the checks
read Postgres.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from entitlements.domain.decision import CheckData
from entitlements.domain.grant import GRANT_LAYOUT, grant_from_cache, grant_to_cache
from entitlements_client.breaker import BreakerPolicy, CircuitBreaker

log = logging.getLogger("entitlements.cache")


ENVELOPE: Final = 3
"""The entry layout around the grants: ``[revision, ancestors, grants, too_deep]``.
v2 added ``too_deep``: a v1 entry (from a worker before it) lacks it and must never
be read as "the walk was whole". v3 took the grant's list from its declaration."""

FORMAT: Final = f"v{ENVELOPE}.{GRANT_LAYOUT}"
"""The entry format, part of every key: the envelope's version and the fingerprint of
the grant's fields (``GRANT_LAYOUT``), so a worker with other grant fields (before or
after a deploy that adds one) never reads this worker's entries, nor it theirs: their
keys differ, and the old ones expire by their TTL."""


def dumps(data: CheckData) -> bytes:
    return orjson.dumps(
        [
            data.revision,
            sorted(data.ancestors),
            [grant_to_cache(g) for g in data.grants],
            data.too_deep,
        ]
    )


def loads(raw: bytes | str) -> CheckData:
    """Read an entry of this ``FORMAT``; anything else raises (the caller takes it as a miss)."""
    revision, ancestors, grants, too_deep = orjson.loads(raw)
    if type(too_deep) is not bool:
        raise ValueError("an entry without a too_deep flag")
    return CheckData(
        int(revision), frozenset(ancestors), tuple(grant_from_cache(g) for g in grants), too_deep
    )


FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)
"""Whatever a Redis (or Redis Cluster) call may raise: each is a miss, never an error."""


class RedisGrantCache:
    """Grant sets in Redis under ``{prefix}{FORMAT}:{kind}:{key}``, with a TTL as a backstop.

    Entries are validated by the caller's ``ChangeIndex`` after reading, so a
    stale entry in Redis is harmless: it is read, found invalid, and replaced.
    """

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        *,
        prefix: str = "ent:",
        ttl: int = 3600,
        breaker: CircuitBreaker | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.breaker = breaker or CircuitBreaker(BreakerPolicy(failures=3, reset_after=2.0))
        self.on_error = on_error

    @classmethod
    def from_url(
        cls, url: str, *, timeout: float = 0.05, cluster: bool = False, **kwargs: Any
    ) -> RedisGrantCache:
        if cluster:
            return cls(
                RedisCluster.from_url(
                    url,
                    socket_timeout=timeout,
                    socket_connect_timeout=timeout,
                    # Slots of a failed master miss; the others keep serving.
                    require_full_coverage=False,
                    health_check_interval=0,
                ),
                **kwargs,
            )
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            health_check_interval=0,
        )
        return cls(client, **kwargs)

    async def close(self) -> None:
        await self.client.aclose()

    def _key(self, kind: str, key: str) -> str:
        return f"{self.prefix}{FORMAT}:{kind}:{key}"

    def _failed(self, op: str, exc: BaseException) -> None:
        self.breaker.failure()
        if self.on_error is not None:
            self.on_error(op)
        log.debug("redis %s failed: %s", op, type(exc).__name__)

    async def get_many(self, kind: str, keys: Sequence[str]) -> list[CheckData | None]:
        if not keys or not self.breaker.allow():
            return [None] * len(keys)
        names = [self._key(kind, k) for k in keys]
        try:
            if isinstance(self.client, RedisCluster):
                raws = await self.client.mget_nonatomic(names)
            else:
                raws = await self.client.mget(names)
        except FAILURES as exc:
            self._failed("get", exc)
            return [None] * len(keys)
        self.breaker.success()
        out: list[CheckData | None] = []
        for raw in raws:
            try:
                out.append(loads(raw) if raw is not None else None)
            except (ValueError, TypeError, IndexError, KeyError):
                out.append(None)  # a corrupt entry is a miss, not an error
        return out

    async def put_many(self, kind: str, items: Sequence[tuple[str, CheckData]]) -> None:
        if not items or not self.breaker.allow():
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, data in items:
                    pipe.set(self._key(kind, key), dumps(data), ex=self.ttl)
                await pipe.execute()
        except FAILURES as exc:
            self._failed("set", exc)
            return
        self.breaker.success()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except FAILURES:
            return False
