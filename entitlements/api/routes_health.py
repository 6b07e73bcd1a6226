"""Health and metrics: ``/healthz``, ``/readyz``, ``/metrics`` (public, for orchestrators
and the scraper)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from entitlements import metrics
from entitlements.api import problems
from entitlements.api.openapi import answers, json_response
from entitlements.errors import StoreUnavailableError

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    summary="The process is up (public)",
    responses=answers(
        {
            200: json_response(
                {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"const": "ok"}},
                },
                "up",
            )
        }
    ),
)
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get(
    "/readyz",
    summary="Postgres answers (public)",
    responses=answers(
        {
            200: json_response(
                {
                    "type": "object",
                    "required": ["status", "revision"],
                    "properties": {
                        "status": {"const": "ready"},
                        "revision": {"type": "integer", "minimum": 0},
                        "replicas": {
                            "type": "array",
                            "description": "each read replica (ENTITLEMENTS_DATABASE_REPLICA_URLS):"
                            " 'ok' (read), 'behind' (beyond the staleness bound: skipped) or"
                            " 'down' (skipped); absent without replicas",
                            "items": {
                                "type": "object",
                                "required": ["replica", "status", "revision"],
                                "properties": {
                                    "replica": {"type": "string"},
                                    "status": {"enum": ["ok", "behind", "down"]},
                                    "revision": {"type": "integer", "minimum": 0},
                                    "lag_seconds": {"type": "number", "minimum": 0},
                                },
                            },
                        },
                    },
                },
                "ready: the current revision (the primary answers; replicas may not)",
            )
        },
        503,
        described={503: "not ready: Postgres is not answering"},
    ),
)
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
    body: dict[str, object] = {"status": "ready", "revision": revision}
    replicas = request.state.ent.replicas
    if replicas is not None:
        body["replicas"] = replicas.report()
    return Response(orjson.dumps(body), media_type="application/json")


@router.get(
    "/metrics",
    summary="Prometheus metrics (for the scraper)",
    responses={
        200: {
            "description": "the Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
    response_class=Response,
)
async def prometheus() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
