"""The composition root: the services of one process, built from settings.

``running(settings)`` opens what a worker needs (the Postgres pool, the signing
keys, Redis if configured, the caches, the change follower), builds the services
over them and yields them as ``AppState``; on exit it closes them in reverse
order. The app hands the state to its routes as lifespan state.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from entitlements import metrics
from entitlements.api.auth import Authenticator
from entitlements.cache.local import ChangeIndex, LocalCache
from entitlements.cache.redis import RedisGrantCache
from entitlements.cache.source import CachedGrantSource
from entitlements.ddex.mapping import DEFAULT_MAPPING, DdexMapping
from entitlements.decision_log import decision_log
from entitlements.domain.change import Change
from entitlements.gateway.config import GatewayConfig, gateway_config
from entitlements.gateway.route_config import routes_from_data
from entitlements.service.access import EXCHANGE_TYP, AccessService
from entitlements.service.admin import AdminService
from entitlements.service.changes import ChangeFeedService
from entitlements.service.checks import CheckService, GrantSource, StoreGrantSource
from entitlements.service.imports import ImportLimits, ImportService
from entitlements.service.ports import CheckReads
from entitlements.service.tokens import TokenService
from entitlements.settings import Settings
from entitlements.store.follower import ChangeFollower
from entitlements.store.imports import PostgresImportStore
from entitlements.store.keys import PostgresKeyStore
from entitlements.store.postgres import GRAPH_CHECK_TASK, PostgresStore, warn_if_graph_too_deep
from entitlements.store.pruner import ChangePruner
from entitlements.store.replicas import ReplicaRouter
from entitlements.store.tokens import PostgresTokenStore
from entitlements_client import IssuerConfig, KeySet, TokenVerifier
from entitlements_client.issuers import ALL_SCOPES

log = logging.getLogger("entitlements")

APPLICATION_NAME = "entitlements"
"""The ``application_name`` of the API's pool connections (``pg_stat_activity``)."""

REPLAY_REVISIONS = 10_000
"""How much of the change log a starting worker replays (older Redis entries are distrusted)."""


@dataclass(frozen=True, slots=True)
class AppState:
    """What routes reach through ``request.state.ent``."""

    settings: Settings
    store: PostgresStore
    catalog: PostgresStore
    checks: CheckService
    access: AccessService
    admin: AdminService
    feed: ChangeFeedService
    tokens: TokenService
    imports: ImportService
    auth: Authenticator
    follower: ChangeFollower
    index: ChangeIndex
    source: GrantSource
    redis: RedisGrantCache | None
    replicas: ReplicaRouter | None = None
    gateway: GatewayConfig = field(default_factory=lambda: GatewayConfig(routes_from_data([])))


def warn_about_default_prefixes(settings: Settings) -> None:
    """Name each trusted issuer whose users moved to their own namespace by default.

    Before ``subject_prefix`` existed an external ``sub=bob`` was the user ``bob``;
    now it is ``<issuer>|bob`` unless configured otherwise, and grants on
    ``user:bob`` no longer reach it. Say so at start, with the way back.
    """
    for trusted in settings.trusted_issuers:
        if trusted.prefix_is_default:
            prefix = trusted.effective_prefix
            log.warning(
                "trusted issuer %r has no explicit subject_prefix: its users are now"
                " '%s<sub>' (grants on 'user:%s<sub>' match them, grants on 'user:<sub>' no"
                ' longer do). To keep the old behaviour set "subject_prefix": "" and list'
                ' the entitlements scopes its tokens may use in "allowed_scopes" (honoured'
                ' now: %s); to move the grants, see the README ("Token issuers")',
                trusted.issuer,
                prefix,
                prefix,
                ", ".join(trusted.allowed_scopes) or "none",
            )


def build_verifiers(settings: Settings, own_keys: KeySet, tokens: TokenService) -> Authenticator:
    """One verifier for access tokens (ours and trusted IdPs'), one for exchanged tokens.

    Our own tokens are minted for a user id as it is (an exchanged token already
    carries an external user's namespaced id), and every scope they carry counts;
    a trusted issuer's tokens get its ``subject_prefix`` and ``allowed_scopes``.
    """
    own = IssuerConfig(
        issuer=settings.issuer,
        audience=settings.audience,
        keys=own_keys,
        algorithms=("EdDSA", "ES256"),
        typ=("at+jwt",),
        max_lifetime=settings.token_max_lifetime,
        subject_prefix="",
        allowed_scopes=(ALL_SCOPES,),
    )
    # typ None means "this IdP sends no typ"; exclude_none would turn it back into the default.
    external = [
        IssuerConfig.from_mapping(
            t.model_dump(exclude_none=True) | ({"typ": None} if t.typ is None else {})
        )
        for t in settings.trusted_issuers
    ]
    exchanged = IssuerConfig(
        issuer=settings.issuer,
        audience=settings.audience,
        keys=own_keys,
        algorithms=("EdDSA", "ES256"),
        typ=(EXCHANGE_TYP,),
        max_lifetime=settings.exchange_max_lifetime,
        subject_prefix="",
        allowed_scopes=(ALL_SCOPES,),
    )
    return Authenticator(
        access=TokenVerifier([own, *external], is_revoked=tokens.revoked.is_revoked),
        exchanged=TokenVerifier([exchanged], is_revoked=tokens.revoked.is_revoked),
        on_unknown_key=tokens.reload_keys_if_stale,
    )


def grant_source(
    settings: Settings, store: CheckReads, index: ChangeIndex, redis: RedisGrantCache | None
) -> GrantSource:
    """Where checks read grants: L1 → L2 (Redis, if configured) → Postgres, or Postgres
    alone when the cache is off (``ENTITLEMENTS_CACHE_SIZE=0``)."""
    if settings.cache_size <= 0:
        return StoreGrantSource(store)
    return CachedGrantSource(
        store,
        index,
        local=LocalCache(index, settings.cache_size),
        shared=redis,
        staleness=settings.staleness,
    )


def listen_dsn(settings: Settings) -> str | None:
    """Where the change follower LISTENs: the direct DSN when ``database_url`` is a
    pooler (None without one: the follower polls), else ``database_url`` itself."""
    if settings.database_listen_url:
        return settings.database_listen_url
    if settings.database_pooler != "none":
        log.warning(
            "ENTITLEMENTS_DATABASE_POOLER=%s without ENTITLEMENTS_DATABASE_LISTEN_URL: LISTEN"
            " cannot work through a transaction pooler, so the change feed is polled",
            settings.database_pooler,
        )
        return None
    return settings.database_url


async def replica_router(settings: Settings, store: PostgresStore) -> ReplicaRouter | None:
    """Checks and listings over the read replicas, if any are configured (started: each
    replica probed once; one that is down now is skipped until it answers)."""
    if not settings.database_replica_urls:
        return None
    router = ReplicaRouter(
        store,
        settings.database_replica_urls,
        staleness=settings.staleness,
        probe_interval=settings.replica_probe_interval,
        pool_max_size=settings.pool_max_size,
        timeout=settings.db_timeout,
        pooled=settings.database_pooler != "none",
    )
    await router.start()
    return router


def redis_cache(settings: Settings) -> RedisGrantCache | None:
    if not settings.redis_url:
        return None
    return RedisGrantCache.from_url(
        settings.redis_url,
        timeout=settings.redis_timeout,
        cluster=settings.redis_cluster,
        prefix=settings.redis_prefix,
        on_error=lambda op: metrics.BACKEND_ERRORS.labels("redis", op).inc(),
    )


@asynccontextmanager
async def running(
    settings: Settings,
    *,
    ddex_mapping: DdexMapping = DEFAULT_MAPPING,
    gateway: GatewayConfig | None = None,
    tracer: Any = None,
) -> AsyncIterator[AppState]:
    """The services of one worker, open for as long as the context lasts (``ddex_mapping``:
    read once by the caller, so a bad mapping file stops the start before anything opens;
    ``tracer``: an OpenTelemetry tracer when tracing is on, issue 15)."""
    if settings.database_url is None:
        raise ValueError("running() needs settings.database_url")
    dsn = settings.database_url
    pooled = settings.database_pooler != "none"
    async with AsyncExitStack() as stack:
        store = await PostgresStore.open(
            dsn,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            timeout=settings.db_timeout,
            pooled=pooled,
            application_name=APPLICATION_NAME,
        )
        stack.push_async_callback(store.close)
        keyset = KeySet(jwks={"keys": []})
        tokens = TokenService(
            PostgresKeyStore(store.pool, settings.signing_alg),
            PostgresTokenStore(store.pool),
            keyset,
            issuer=settings.issuer,
            audience=settings.audience,
            max_lifetime=settings.token_max_lifetime,
            exchange_max_lifetime=settings.exchange_max_lifetime,
        )
        await tokens.start()
        redis = redis_cache(settings)
        if redis is not None:
            stack.push_async_callback(redis.close)
        replicas = await replica_router(settings, store)
        if replicas is not None:
            stack.push_async_callback(replicas.close)
        reads: CheckReads = replicas if replicas is not None else store
        index = ChangeIndex()
        source = grant_source(settings, reads, index, redis)
        follower = ChangeFollower(
            store,
            listen_dsn(settings),
            poll_interval=min(1.0, settings.staleness / 2),
            on_keys=tokens.reload_keys,
            share=settings.feed_socket,
        )

        async def apply_changes(changes: Sequence[Change], revision: int) -> None:
            for change in changes:
                if change.kind == "token":
                    tokens.revoked.add(change.key)
                metrics.INVALIDATIONS.labels(change.kind).inc()
            index.apply(changes, revision)

        follower.add_listener(apply_changes)
        # Replay recent history so entries already in Redis from before this worker
        # started stay usable (they are checked against what changed since they were read).
        floor = max(0, await store.revision() - REPLAY_REVISIONS)
        index.start(floor)
        stack.push_async_callback(follower.stop)
        await follower.follow_from(floor)
        if tracer is None:
            checks = CheckService(source, reads)
        else:
            from entitlements.tracing import TracedCheckService

            checks = TracedCheckService(source, reads, tracer)
        decisions = decision_log(
            settings.decision_log,
            sample_allows=settings.decision_log_sample_allows,
            queue_size=settings.decision_log_queue,
        )
        if decisions is not None:
            decisions.start()
            stack.push_async_callback(decisions.close)  # flushes what is queued
        warn_about_default_prefixes(settings)
        state = AppState(
            settings=settings,
            store=store,
            catalog=store,
            checks=checks,
            access=AccessService(checks, decisions),
            admin=AdminService(store, follower.catch_up, audit_log=store),
            feed=ChangeFeedService(store, follower),
            tokens=tokens,
            imports=ImportService(
                PostgresImportStore(store.pool, dsn=dsn, pooled=pooled),
                ImportLimits(lock_timeout=settings.import_lock_wait),
                ddex_mapping=ddex_mapping,
            ),
            auth=build_verifiers(settings, keyset, tokens),
            follower=follower,
            index=index,
            source=source,
            redis=redis,
            replicas=replicas,
            gateway=gateway if gateway is not None else gateway_from(settings),
        )
        # Everything built so far lives as long as the process: move it out of the
        # garbage collector's view, so full collections (~57 ms with a warm app) do
        # not land on requests.
        gc.collect()
        gc.freeze()
        pruner = ChangePruner(store, settings.changes_retention)
        pruner.start()
        stack.push_async_callback(pruner.stop)
        # Off the start-up path: the scan for a graph already too deep reads every edge.
        graph_check = asyncio.create_task(warn_if_graph_too_deep(store), name=GRAPH_CHECK_TASK)
        stack.push_async_callback(_cancelled, graph_check)
        yield state


def gateway_from(settings: Settings) -> GatewayConfig:
    """The gateway check's configuration (issue 14); raises ``InvalidInputError`` naming
    every bad setting."""
    return gateway_config(
        settings.gateway_routes,
        settings.gateway_trusted_proxies,
        settings.gateway_territory_header,
        settings.gateway_conventions,
    )


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


__all__ = ["REPLAY_REVISIONS", "AppState", "build_verifiers", "gateway_from", "running"]
