"""Tracing (issue 15): with OpenTelemetry configured, a check leaves spans for HTTP, the
check, the grant look-up through the caches, Postgres and Redis; without it, nothing of
OpenTelemetry is even imported."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from support import Api, running, settings_for

from entitlements.store.postgres import PostgresStore

pytest.importorskip(
    "opentelemetry.sdk", reason="the otel extra is not installed: pip install -e '.[otel]'"
)

from opentelemetry import trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The SDK's in-memory exporter as the process's provider (installed once: the global
    provider can be set only once), and the variable that turns tracing on."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # never used
    EXPORTER.clear()
    yield EXPORTER
    AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
    RedisInstrumentor().uninstrument()
    EXPORTER.clear()


async def test_a_check_leaves_spans_for_http_check_cache_postgres_and_redis(
    clean: PostgresStore,
    pg_dsn: str,
    redis_url: str,
    redis_prefix: str,
    spans: InMemorySpanExporter,
) -> None:
    settings = settings_for(pg_dsn, redis_url=redis_url, redis_prefix=redis_prefix)
    async with running(settings) as (client, state):
        api = Api(client, state)
        await api.put_grant(
            "g1", subject="*", resource="track:t1", actions=["stream"], territories=["GB"]
        )
        spans.clear()
        token = api.token("alice")
        decision = await api.check(token, resource="track:t1", action="stream", territory="GB")
        assert decision["allowed"]
    finished = spans.get_finished_spans()
    names = [s.name for s in finished]
    http = [s for s in finished if s.kind == trace.SpanKind.SERVER]
    assert http and http[0].attributes is not None
    assert "/v1/check" in str(http[0].attributes.get("http.target") or http[0].name)
    [check] = [s for s in finished if s.name == "entitlements.check"]
    assert check.attributes is not None
    assert check.attributes["entitlements.allowed"] is True
    assert check.attributes["entitlements.resource"] == "track:t1"
    [grants] = [s for s in finished if s.name == "entitlements.grants"]
    assert grants.attributes is not None and grants.attributes["entitlements.cache.store_read"]
    # One trace: the check's spans, and its Postgres and Redis calls, sit inside the request's
    # (the change follower's polls are traces of their own).
    ours = [s for s in finished if s.context.trace_id == http[0].context.trace_id]
    assert check in ours and grants in ours
    systems = {(s.attributes or {}).get("db.system") for s in ours}
    assert {"postgresql", "redis"} <= systems, names
    assert grants.parent is not None and grants.parent.span_id == check.context.span_id
    # Never the token.
    assert all(token not in str(s.attributes) for s in finished)


def test_without_the_variables_no_tracing_is_loaded(pg_dsn: str) -> None:
    """Neither our tracing nor OpenTelemetry's instrumentations, no span middleware.
    (redis-py itself imports OpenTelemetry's API and metrics SDK when they are installed,
    for its own opt-in metrics: not ours to stop.)"""
    code = (
        "import sys\n"
        "from entitlements.api.app import create_app\n"
        "from entitlements.settings import Settings\n"
        f"app = create_app(Settings(database_url={pg_dsn!r}))\n"
        "loaded = [m for m in sys.modules if m == 'entitlements.tracing'\n"
        "          or m.startswith(('opentelemetry.sdk.trace', 'opentelemetry.instrumentation'))]\n"
        "print(sorted(loaded), [m.cls.__name__ for m in app.user_middleware])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ENTITLEMENTS_"))}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == (
        "[] ['SecurityHeaders', 'BodyStallMiddleware', 'TimingMiddleware']"
    )


def test_which_variables_turn_tracing_on() -> None:
    from entitlements.tracing_env import enabled

    assert not enabled({})
    assert not enabled({"OTEL_TRACES_EXPORTER": "none"})
    assert not enabled(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}
    )
    assert enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert enabled({"OTEL_TRACES_EXPORTER": "console"})
