"""Check routes: ``/v1/check``, ``/v1/check/batch``, ``/v1/entitlements``.

The two check routes are the hot path: lean routes (``api.lean``) whose handlers
authenticate with the same rule as ``Depends(checker)``, hand the parsed body to
the access service and answer raw orjson bytes, with no dependency machinery or
response model in between. Every rule of who may ask what is the service's.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from entitlements.api.auth import checker
from entitlements.api.body import read_json
from entitlements.api.lean import LeanRoute
from entitlements.api.openapi import AUTH, BODY, STORE, answers, json_body, json_response
from entitlements.domain.decision import DECISION_SCHEMA, decision_json
from entitlements.domain.grant import TERRITORY_CODES
from entitlements.domain.parsers import ACTION_PATTERN, RESOURCE_PATTERN, anchored
from entitlements.service.access import QUESTION_SCHEMA, SCOPE_CHECK_ANY
from entitlements.service.checks import MAX_BATCH, MAX_PAGE
from entitlements_client import VerifiedToken

router = APIRouter(prefix="/v1", tags=["checks"])


_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


def request_id(request: Request) -> str | None:
    """The client's ``X-Request-ID`` for the decision log, when it is a plain token of at
    most 128 characters (anything else would let a caller forge log content)."""
    value = request.headers.get("x-request-id")
    return value if value is not None and _REQUEST_ID.fullmatch(value) else None


async def check(request: Request) -> Response:
    # The hottest route: authenticate in the handler, not through Depends — FastAPI's
    # dependency resolution is about a third of this route's time. Same rule: `checker`.
    token = await checker(request)
    ent = request.state.ent
    body = await read_json(request, ent.settings.max_body_bytes)
    access = ent.access
    if access.decisions is None:
        decision = await access.check_json(token, body)
    else:
        decision = await access.check_json(token, body, request_id(request))
    return Response(orjson.dumps(decision_json(decision)), media_type="application/json")


async def check_batch(request: Request) -> Response:
    token = await checker(request)
    ent = request.state.ent
    body = await read_json(request, ent.settings.max_body_bytes)
    rid = request_id(request) if ent.access.logging else None
    decisions = await ent.access.check_batch_json(token, body, rid)
    return Response(
        orjson.dumps({"results": [decision_json(d) for d in decisions]}),
        media_type="application/json",
    )


_CHECK_REFUSALS: Final = {
    403: f"asking about another subject or roles needs the scope {SCOPE_CHECK_ANY};"
    " an exchanged token may ask only about its resources",
    422: "a field is not valid, or min_revision is ahead of every write",
}

LEAN_ROUTES: Final = [
    LeanRoute(
        "/v1/check",
        check,
        methods=["POST"],
        operation={
            "tags": ["checks"],
            "summary": "May the caller (or, with check:any, a named user) do this?",
            "description": "Any valid token asks about itself. An unknown resource is simply"
            " not licensed.",
            "operationId": "check_v1_check_post",
            **json_body(QUESTION_SCHEMA),
            "responses": answers(
                {200: json_response(DECISION_SCHEMA, "the decision")},
                AUTH,
                BODY,
                STORE,
                described=_CHECK_REFUSALS,
            ),
        },
    ),
    LeanRoute(
        "/v1/check/batch",
        check_batch,
        methods=["POST"],
        operation={
            "tags": ["checks"],
            "summary": f"Up to {MAX_BATCH} checks; results in the same order",
            "operationId": "check_batch_v1_check_batch_post",
            **json_body(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["checks"],
                    "properties": {
                        "checks": {"type": "array", "items": QUESTION_SCHEMA, "maxItems": MAX_BATCH}
                    },
                }
            ),
            "responses": answers(
                {
                    200: json_response(
                        {
                            "type": "object",
                            "required": ["results"],
                            "properties": {"results": {"type": "array", "items": DECISION_SCHEMA}},
                        },
                        "the decisions, in the order asked",
                    )
                },
                AUTH,
                BODY,
                STORE,
                described={
                    **_CHECK_REFUSALS,
                    422: "a check is not valid (its fields are named checks.<i>.<field>)",
                },
            ),
        },
    ),
]
"""The check routes, as the app mounts them: each serves and documents itself."""

_ITEM: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["resource", *DECISION_SCHEMA["required"]],
    "properties": {
        "resource": {"type": "string", "pattern": anchored(RESOURCE_PATTERN)},
        **DECISION_SCHEMA["properties"],
    },
}
_PAGE: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["items", "next_cursor", "revision"],
    "properties": {
        "items": {"type": "array", "items": _ITEM},
        "next_cursor": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "revision": {"type": "integer", "minimum": 0},
    },
}


@router.get(
    "/entitlements",
    summary="The resources the caller may use for an action in a territory (keyset-paginated)",
    responses=answers(
        {200: json_response(_PAGE, "a page of resources, each with its decision")},
        AUTH,
        STORE,
        422,
        described={
            403: "an exchanged token limited to some resources cannot list",
            422: "a parameter is not valid, or the cursor is not one this service issued",
        },
    ),
)
async def entitlements(
    request: Request,
    token: Annotated[VerifiedToken, Depends(checker)],
    action: Annotated[
        str, Query(max_length=63, json_schema_extra={"pattern": anchored(ACTION_PATTERN)})
    ],
    territory: Annotated[str, Query(max_length=2, json_schema_extra={"enum": TERRITORY_CODES})],
    type: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z][a-z0-9_-]*$")] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> Response:
    page = await request.state.ent.access.list_entitlements(
        token, action=action, territory=territory, type_=type, cursor=cursor, limit=limit
    )
    return Response(
        orjson.dumps(
            {"items": page.items, "next_cursor": page.next_cursor, "revision": page.revision}
        ),
        media_type="application/json",
    )


__all__ = ["LEAN_ROUTES", "check", "check_batch", "request_id", "router"]
