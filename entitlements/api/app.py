"""The ASGI application: ``create_app(settings)`` wires stores, verifiers and routes.

Everything a request needs is opened in the lifespan and handed to routes as
typed lifespan state (``request.state.ent``); there are no module globals.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from entitlements import metrics
from entitlements.api import (
    problems,
    routes_admin,
    routes_changes,
    routes_checks,
    routes_imports,
    routes_tokens,
)
from entitlements.api.auth import EXCHANGE_TYP, Authenticator
from entitlements.api.body import BodyStallMiddleware
from entitlements.api.timing import TimingMiddleware
from entitlements.cache.local import ChangeIndex, LocalCache
from entitlements.cache.redis import RedisGrantCache
from entitlements.cache.source import CachedGrantSource
from entitlements.errors import StoreUnavailableError
from entitlements.service.checks import CheckService, GrantSource, StoreGrantSource
from entitlements.service.ddex_import import mapping_for
from entitlements.service.imports import ImportLimits, ImportService
from entitlements.service.tokens import TokenService
from entitlements.settings import Settings
from entitlements.store.follower import ChangeFollower
from entitlements.store.imports import PostgresImportStore
from entitlements.store.keys import PostgresKeyStore
from entitlements.store.postgres import (
    GRAPH_CHECK_TASK,
    Change,
    PostgresStore,
    warn_if_graph_too_deep,
)
from entitlements.store.pruner import ChangePruner
from entitlements.store.tokens import PostgresTokenStore
from entitlements_client import IssuerConfig, KeySet, TokenVerifier
from entitlements_client.issuers import ALL_SCOPES

log = logging.getLogger("entitlements")

REPLAY_REVISIONS = 10_000
"""How much of the change log a starting worker replays (older Redis entries are distrusted)."""


@dataclass(frozen=True, slots=True)
class AppState:
    """What routes reach through ``request.state.ent``."""

    settings: Settings
    store: PostgresStore
    catalog: PostgresStore
    checks: CheckService
    tokens: TokenService
    imports: ImportService
    auth: Authenticator
    follower: ChangeFollower
    index: ChangeIndex
    source: GrantSource
    redis: RedisGrantCache | None


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


class HotRoute(Route):
    """A plain Starlette route that, like FastAPI's, records itself in the scope (for metrics)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


def create_app(settings: Settings) -> FastAPI:
    """The service as an ASGI app. ``settings.database_url`` must be set (the CLI starts
    an embedded Postgres and sets it when the user did not)."""
    if settings.database_url is None:
        raise ValueError(
            "create_app needs settings.database_url; `entitlements serve` starts an embedded"
            " Postgres when ENTITLEMENTS_DATABASE_URL is unset"
        )
    dsn = settings.database_url
    # A mapping file that cannot be read stops the start, naming the file and the key.
    ddex_mapping = mapping_for(settings.ddex_mapping)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        store = await PostgresStore.open(
            dsn,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            timeout=settings.db_timeout,
        )
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
        follower = ChangeFollower(
            store, dsn, poll_interval=min(1.0, settings.staleness / 2), on_keys=tokens.reload_keys
        )
        index = ChangeIndex()
        redis = (
            RedisGrantCache.from_url(
                settings.redis_url,
                timeout=settings.redis_timeout,
                prefix=settings.redis_prefix,
                on_error=lambda op: metrics.BACKEND_ERRORS.labels("redis", op).inc(),
            )
            if settings.redis_url
            else None
        )
        source: GrantSource
        if settings.cache_size > 0:
            source = CachedGrantSource(
                store,
                index,
                local=LocalCache(index, settings.cache_size),
                shared=redis,
                staleness=settings.staleness,
            )
        else:
            source = StoreGrantSource(store)

        async def on_changes(changes: Sequence[Change], revision: int) -> None:
            for change in changes:
                if change.kind == "token":
                    tokens.revoked.add(change.key)
                metrics.INVALIDATIONS.labels(change.kind).inc()
            index.apply(changes, revision)

        follower.add_listener(on_changes)
        # Replay recent history so entries already in Redis from before this worker
        # started stay usable (they are checked against what changed since they were read).
        floor = max(0, await store.revision() - REPLAY_REVISIONS)
        index.start(floor)
        follower.revision = floor
        await follower.catch_up()
        await follower.start(follower.revision)
        pruner = ChangePruner(store, settings.changes_retention)
        warn_about_default_prefixes(settings)
        state = AppState(
            settings=settings,
            store=store,
            catalog=store,
            checks=CheckService(source, store),
            tokens=tokens,
            imports=ImportService(
                PostgresImportStore(store.pool, dsn=dsn),
                ImportLimits(lock_timeout=settings.import_lock_wait),
                ddex_mapping=ddex_mapping,
            ),
            auth=build_verifiers(settings, keyset, tokens),
            follower=follower,
            index=index,
            source=source,
            redis=redis,
        )
        # Everything built so far lives as long as the process: move it out of the
        # garbage collector's view, so full collections (~57 ms with a warm app) do
        # not land on requests.
        gc.collect()
        gc.freeze()
        pruner.start()
        # Off the start-up path: the scan for a graph already too deep reads every edge.
        graph_check = asyncio.create_task(warn_if_graph_too_deep(store), name=GRAPH_CHECK_TASK)
        try:
            yield {"ent": state}
        finally:
            await pruner.stop()
            graph_check.cancel()
            with suppress(asyncio.CancelledError):
                await graph_check
            await follower.stop()
            if redis is not None:
                await redis.close()
            await store.close()

    app = FastAPI(
        title="entitlements",
        version="0.1.0",
        summary="Fine-grained rights checks behind small tokens",
        lifespan=lifespan,
    )
    problems.install(app)
    app.add_middleware(TimingMiddleware)
    app.add_middleware(BodyStallMiddleware, seconds=settings.upload_stall_timeout)
    app.include_router(routes_checks.router)
    # The two hottest routes are also mounted as plain Starlette routes, ahead of the
    # FastAPI ones (which stay for the OpenAPI document): same handlers, same auth,
    # without FastAPI's per-request dependency machinery (~20 us of ~80).
    app.router.routes[0:0] = [
        HotRoute("/v1/check", routes_checks.check, methods=["POST"]),
        HotRoute("/v1/check/batch", routes_checks.check_batch, methods=["POST"]),
    ]
    app.include_router(routes_admin.router)
    app.include_router(routes_tokens.router)
    app.include_router(routes_changes.router)
    app.include_router(routes_imports.router)

    @app.get("/healthz", tags=["health"], summary="The process is up (public)")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/readyz", tags=["health"], summary="Postgres answers (public)")
    async def readyz(request: Request) -> Response:
        try:
            revision = await request.state.ent.store.ping()
        except StoreUnavailableError:
            return problems.problem(
                503,
                "unavailable",
                "Not ready",
                "Postgres is not answering",
                headers={"Retry-After": "2"},
            )
        return Response(
            orjson.dumps({"status": "ready", "revision": revision}), media_type="application/json"
        )

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics (for the scraper)")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return app
