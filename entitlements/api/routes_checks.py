"""Check routes: ``/v1/check``, ``/v1/check/batch``, ``/v1/entitlements``.

Hot paths: bodies are parsed with orjson and answered with raw orjson bytes,
no response model in between.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from entitlements.api.auth import SCOPE_CHECK_ANY, checker, is_exchanged, resource_allowed
from entitlements.api.body import json_object, read_json
from entitlements.domain.model import (
    parse_action,
    parse_resource,
    parse_revision,
    parse_role,
    parse_territory,
    parse_time,
    parse_user_id,
)
from entitlements.errors import FieldError, InvalidInputError, PermissionDeniedError
from entitlements.service.checks import MAX_BATCH, MAX_PAGE, CheckRequest
from entitlements_client import VerifiedToken

router = APIRouter(prefix="/v1", tags=["checks"])

CHECK_FIELDS = frozenset(
    {"resource", "action", "territory", "at", "min_revision", "subject", "roles"}
)
MAX_ROLES = 64

CHECK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["resource", "action", "territory"],
    "properties": {
        "resource": {"type": "string", "example": "track:USRC17607839"},
        "action": {"type": "string", "example": "stream"},
        "territory": {"type": "string", "example": "GB", "description": "ISO 3166-1 alpha-2"},
        "at": {"type": "string", "format": "date-time", "description": "default: now"},
        "min_revision": {"type": "integer", "minimum": 0},
        "subject": {"type": "string", "description": "needs scope entitlements:check:any"},
        "roles": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_ROLES},
    },
}
DECISION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "allowed": {"type": "boolean"},
        "reason": {
            "enum": ["granted", "denied", "territory", "not_yet_valid", "expired", "not_licensed"]
        },
        "grant": {"type": ["string", "null"]},
        "valid_until": {"type": ["string", "null"], "format": "date-time"},
        "revision": {"type": "integer"},
        "attributes": {"type": ["object", "null"]},
        "ancestors": {
            "type": "array",
            "items": {"type": "string"},
            "description": "the resource's ancestors at `revision`: a change to any of"
            " them (GET /v1/changes) may change this answer",
        },
    },
}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _ok(schema: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {"application/json": {"schema": schema}}}}


def parse_check(body: Any, token: VerifiedToken, prefix: str = "") -> CheckRequest:
    """Validate one check against the caller's token (who may ask about whom)."""
    obj = json_object(body, CHECK_FIELDS)
    errors: list[FieldError] = []

    def field(name: str, parse: Any, *args: Any) -> Any:
        if name not in obj:
            errors.append(FieldError(prefix + name, "is required"))
            return None
        try:
            return parse(obj[name], prefix + name, *args)
        except InvalidInputError as exc:
            errors.extend(exc.errors)
            return None

    resource = field("resource", parse_resource)
    action = field("action", parse_action)
    territory = field("territory", parse_territory)
    at = field("at", parse_time) if obj.get("at") is not None else None
    min_rev = field("min_revision", parse_revision) if obj.get("min_revision") is not None else None
    user, roles = token.subject, tuple(token.roles)
    if "subject" in obj or "roles" in obj:
        asks_for_other = obj.get("subject", token.subject) != token.subject or "roles" in obj
        if asks_for_other and not token.has_scope(SCOPE_CHECK_ANY):
            raise PermissionDeniedError(
                f"asking about another subject or roles needs the scope {SCOPE_CHECK_ANY!r}"
            )
        if "subject" in obj:
            user = field("subject", parse_user_id)
        if "roles" in obj:
            raw = obj["roles"]
            if not isinstance(raw, list) or len(raw) > MAX_ROLES:
                errors.append(
                    FieldError(prefix + "roles", f"must be a list of at most {MAX_ROLES} roles")
                )
            else:
                parsed = []
                for i, r in enumerate(raw):
                    try:
                        parsed.append(parse_role(r, f"{prefix}roles.{i}"))
                    except InvalidInputError as exc:
                        errors.extend(exc.errors)
                roles = tuple(parsed)
    if errors:
        raise InvalidInputError(errors)
    resource_allowed(token, resource)
    return CheckRequest(user, roles, resource, action, territory, at, min_rev)


@router.post(
    "/check",
    summary="May the caller (or, with check:any, a named user) do this?",
    description="Any valid token asks about itself. An unknown resource is simply not licensed.",
    openapi_extra=_json_body(CHECK_SCHEMA),
    responses=_ok(DECISION_SCHEMA),
)
async def check(request: Request) -> Response:
    # The hottest route: authenticate in the handler, not through Depends — FastAPI's
    # dependency resolution is about a third of this route's time. Same rule: `checker`.
    token = await checker(request)
    ent = request.state.ent
    req = parse_check(await read_json(request, ent.settings.max_body_bytes), token)
    decision = await ent.checks.check(req)
    return Response(orjson.dumps(decision.to_json()), media_type="application/json")


@router.post(
    "/check/batch",
    summary="Up to 1000 checks; results in the same order",
    openapi_extra=_json_body(
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["checks"],
            "properties": {
                "checks": {"type": "array", "items": CHECK_SCHEMA, "maxItems": MAX_BATCH}
            },
        }
    ),
    responses=_ok(
        {"type": "object", "properties": {"results": {"type": "array", "items": DECISION_SCHEMA}}}
    ),
)
async def check_batch(request: Request) -> Response:
    token = await checker(request)
    ent = request.state.ent
    body = json_object(await read_json(request, ent.settings.max_body_bytes), frozenset({"checks"}))
    checks = body.get("checks")
    if not isinstance(checks, list):
        raise InvalidInputError(FieldError("checks", "must be a list of checks"))
    if len(checks) > MAX_BATCH:
        raise InvalidInputError(FieldError("checks", f"at most {MAX_BATCH} checks per batch"))
    errors: list[FieldError] = []
    reqs: list[CheckRequest] = []
    for i, item in enumerate(checks):
        try:
            reqs.append(parse_check(item, token, f"checks.{i}."))
        except InvalidInputError as exc:
            errors.extend(
                FieldError(e.field if e.field else f"checks.{i}", e.message) for e in exc.errors
            )
    if errors:
        raise InvalidInputError(errors)
    decisions = await ent.checks.check_many(reqs)
    return Response(
        orjson.dumps({"results": [d.to_json() for d in decisions]}), media_type="application/json"
    )


@router.get(
    "/entitlements",
    summary="The resources the caller may use for an action in a territory (keyset-paginated)",
)
async def entitlements(
    request: Request,
    token: Annotated[VerifiedToken, Depends(checker)],
    action: Annotated[str, Query(max_length=63)],
    territory: Annotated[str, Query(max_length=2)],
    type: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z][a-z0-9_-]*$")] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> Response:
    ent = request.state.ent
    if is_exchanged(token) and token.claims.get("resources") is not None:
        raise PermissionDeniedError("an exchanged token cannot list entitlements")
    page = await ent.checks.list_entitlements(
        user=token.subject,
        roles=tuple(token.roles),
        action=parse_action(action),
        territory=parse_territory(territory),
        type_=type,
        cursor=cursor,
        limit=limit,
    )
    return Response(
        orjson.dumps(
            {"items": page.items, "next_cursor": page.next_cursor, "revision": page.revision}
        ),
        media_type="application/json",
    )
