"""The ASGI application: ``create_app(settings)`` mounts the routes over the services.

Everything a request needs is opened in the lifespan (``api.wiring.running``) and
handed to routes as typed lifespan state (``request.state.ent``); there are no
module globals.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from entitlements.api import (
    browser,
    docs,
    openapi,
    problems,
    routes_admin,
    routes_audit,
    routes_authzen,
    routes_changes,
    routes_checks,
    routes_gateway,
    routes_health,
    routes_imports,
    routes_tokens,
)
from entitlements.api.body import BodyStallMiddleware
from entitlements.api.timing import TimingMiddleware
from entitlements.api.wiring import (
    REPLAY_REVISIONS,
    AppState,
    build_verifiers,
    gateway_from,
    running,
    warn_about_default_prefixes,
)
from entitlements.service.ddex_import import mapping_for
from entitlements.settings import Settings
from entitlements.tracing_env import enabled as tracing_enabled

__all__ = [
    "REPLAY_REVISIONS",
    "AppState",
    "EntitlementsApp",
    "build_verifiers",
    "create_app",
    "warn_about_default_prefixes",
]


class EntitlementsApp(FastAPI):
    """FastAPI, with the OpenAPI document that says what every route answers."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = openapi.build(self)
        return self.openapi_schema


def create_app(settings: Settings) -> FastAPI:
    """The service as an ASGI app. ``settings.database_url`` must be set (the CLI starts
    an embedded Postgres and sets it when the user did not)."""
    if settings.database_url is None:
        raise ValueError(
            "create_app needs settings.database_url; `entitlements serve` starts an embedded"
            " Postgres when ENTITLEMENTS_DATABASE_URL is unset"
        )

    # A mapping file that cannot be read stops the start, naming the file and the key.
    ddex_mapping = mapping_for(settings.ddex_mapping)
    # So does a bad gateway route table, proxy list or convention (issue 14).
    gateway = gateway_from(settings)
    # Tracing (issue 15): only when OpenTelemetry's own variables ask; else not imported.
    tracer_provider: Any = None
    if tracing_enabled(os.environ):
        from entitlements import tracing

        tracer_provider = tracing.provider()
        tracing.instrument_drivers(tracer_provider)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        tracer = tracer_provider.get_tracer("entitlements") if tracer_provider else None
        async with running(
            settings, ddex_mapping=ddex_mapping, gateway=gateway, tracer=tracer
        ) as state:
            yield {"ent": state}

    app = EntitlementsApp(
        title="entitlements",
        version="0.1.0",
        summary="Fine-grained rights checks behind small tokens",
        lifespan=lifespan,
        docs_url=None,  # docs.install: Swagger UI and ReDoc from an installed package, no CDN
        redoc_url=None,
    )
    docs.install(app)
    problems.install(app)
    app.add_middleware(TimingMiddleware)
    app.add_middleware(BodyStallMiddleware, seconds=settings.upload_stall_timeout)
    browser.install(app, settings)  # CORS and security headers (issue 15): outermost
    if tracer_provider is not None:
        tracing.add_http_spans(app, tracer_provider)  # the HTTP span encloses everything
    # The hot routes first: a request for them matches without trying the others.
    app.router.routes[0:0] = routes_checks.LEAN_ROUTES
    app.router.routes[len(routes_checks.LEAN_ROUTES) : len(routes_checks.LEAN_ROUTES)] = [
        *routes_gateway.GATEWAY_ROUTES,
        *routes_authzen.AUTHZEN_ROUTES,
    ]
    for module in (
        routes_checks,
        routes_admin,
        routes_audit,
        routes_tokens,
        routes_changes,
        routes_imports,
        routes_health,
    ):
        app.include_router(module.router)
    return app
