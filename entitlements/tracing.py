"""OpenTelemetry tracing (issue 15), only when OpenTelemetry's own variables ask for it.

``entitlements.tracing_env.enabled(environ)`` reads the standard variables (``OTEL_TRACES_EXPORTER``,
``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; and
``OTEL_SDK_DISABLED``). Only then does the app import this module, and this module
OpenTelemetry (``pip install 'entitlements[otel]'``): with none of them set, not one
OpenTelemetry module is loaded and the checks run as they always did.

Spans: the HTTP request (``opentelemetry-instrumentation-asgi``), each check or batch
(``entitlements.check``, ``entitlements.check_many``: the question and the answer),
each grant look-up through the caches (``entitlements.grants``, with whether it had
to read Postgres), Postgres statements (``opentelemetry-instrumentation-asyncpg``) and
Redis commands (``opentelemetry-instrumentation-redis``).

The tracer provider: one the process installed already (a test's in-memory exporter,
an agent's) is used as it is; otherwise one is built from the environment
(``OTEL_SERVICE_NAME``, default ``entitlements``; ``OTEL_TRACES_EXPORTER``: ``otlp``
(the default, over HTTP), ``console`` or ``none``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Final

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from entitlements.domain.decision import Decision
from entitlements.domain.model import CheckData
from entitlements.service.checks import CheckRequest, CheckService
from entitlements.service.decisions import STORE_READ
from entitlements.service.ports import CheckReads, GrantSource

TRACER_NAME: Final = "entitlements"


def provider() -> trace.TracerProvider:
    """The process's tracer provider: the one installed already, else one from the env."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    built = TracerProvider(
        resource=Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME") or TRACER_NAME}
        )
    )
    exporter = (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")[0].strip()
    if exporter == "console":
        built.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        built.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(built)
    return built


def instrument_drivers(tracer_provider: trace.TracerProvider) -> None:
    """Spans for every Postgres statement and Redis command of this process."""
    pg = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    if not pg.is_instrumented_by_opentelemetry:
        pg.instrument(tracer_provider=tracer_provider)
    redis = RedisInstrumentor()
    if not redis.is_instrumented_by_opentelemetry:
        redis.instrument(tracer_provider=tracer_provider)


def add_http_spans(app: FastAPI, tracer_provider: trace.TracerProvider) -> None:
    """A span per HTTP request, outside every other middleware (no headers recorded)."""
    app.add_middleware(
        OpenTelemetryMiddleware,
        tracer_provider=tracer_provider,
        exclude_spans=["receive", "send"],  # one span per request, not one per message
    )


class TracedGrantSource:
    """A ``GrantSource`` whose look-ups are spans, saying whether Postgres was read."""

    def __init__(self, inner: GrantSource, tracer: trace.Tracer) -> None:
        self.inner = inner
        self.tracer = tracer

    async def check_data(
        self, resource: str, user: str, subjects: frozenset[str], min_revision: int | None
    ) -> CheckData:
        with self.tracer.start_as_current_span("entitlements.grants") as span:
            reset = STORE_READ.set(False)
            try:
                data = await self.inner.check_data(resource, user, subjects, min_revision)
                span.set_attribute("entitlements.cache.store_read", STORE_READ.get())
            finally:
                STORE_READ.reset(reset)
            span.set_attribute("entitlements.revision", data.revision)
            return data

    async def check_data_many(
        self,
        resources: Sequence[str],
        user: str,
        subjects: frozenset[str],
        min_revision: int | None,
    ) -> dict[str, CheckData]:
        with self.tracer.start_as_current_span("entitlements.grants") as span:
            span.set_attribute("entitlements.resources", len(resources))
            reset = STORE_READ.set(False)
            try:
                data = await self.inner.check_data_many(resources, user, subjects, min_revision)
                span.set_attribute("entitlements.cache.store_read", STORE_READ.get())
            finally:
                STORE_READ.reset(reset)
            return data


class TracedCheckService(CheckService):
    """``CheckService`` with a span per check and per batch (what was asked, the answer)."""

    def __init__(self, source: GrantSource, listing: CheckReads, tracer: trace.Tracer) -> None:
        super().__init__(TracedGrantSource(source, tracer), listing)
        self.tracer = tracer

    async def check(self, req: CheckRequest) -> Decision:
        with self.tracer.start_as_current_span(
            "entitlements.check",
            attributes={
                "entitlements.resource": req.resource,
                "entitlements.action": req.action,
                "entitlements.territory": req.territory,
            },
        ) as span:
            decision = await super().check(req)
            span.set_attribute("entitlements.allowed", decision.allowed)
            span.set_attribute("entitlements.reason", decision.reason)
            span.set_attribute("entitlements.revision", decision.revision)
            return decision

    async def check_many(self, reqs: Sequence[CheckRequest]) -> list[Decision]:
        with self.tracer.start_as_current_span("entitlements.check_many") as span:
            span.set_attribute("entitlements.checks", len(reqs))
            return await super().check_many(reqs)


__all__ = [
    "TRACER_NAME",
    "TracedCheckService",
    "TracedGrantSource",
    "add_http_spans",
    "instrument_drivers",
    "provider",
]
