"""Grant and resource administration: scope ``entitlements:admin``."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from entitlements.api.auth import SCOPE_ADMIN, require_scope
from entitlements.api.body import read_json
from entitlements.domain.model import (
    grant_from_mapping,
    parse_grant_id,
    parse_resource,
    parse_subject,
    resource_from_mapping,
)
from entitlements.service.checks import decode_cursor, encode_cursor
from entitlements_client import VerifiedToken

router = APIRouter(prefix="/v1", tags=["admin"])
Admin = Annotated[VerifiedToken, Depends(require_scope(SCOPE_ADMIN))]

GRANT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["subject", "resource", "actions", "territories"],
    "properties": {
        "id": {"type": "string", "maxLength": 200},
        "subject": {"type": "string", "example": "role:plan:premium"},
        "resource": {"type": "string", "example": "label:acme"},
        "actions": {"type": "array", "items": {"type": "string"}, "example": ["stream"]},
        "territories": {"type": "array", "items": {"type": "string"}, "example": ["*"]},
        "exclude_territories": {"type": "array", "items": {"type": "string"}},
        "valid_from": {"type": ["string", "null"], "format": "date-time"},
        "valid_until": {"type": ["string", "null"], "format": "date-time"},
        "effect": {"enum": ["allow", "deny"], "default": "allow"},
        "attributes": {"type": ["object", "null"]},
        "source": {"type": ["string", "null"]},
    },
}


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


GrantId = Annotated[str, Path(max_length=200, description="the grant's external id")]
ResourceId = Annotated[str, Path(max_length=240, description="type:id")]


@router.put(
    "/grants/{grant_id:path}",
    summary="Create or replace a grant (idempotent)",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": GRANT_SCHEMA}}}
    },
    status_code=200,
    responses={201: {"description": "created"}},
)
async def put_grant(request: Request, grant_id: GrantId, token: Admin) -> Response:
    ent = request.state.ent
    gid = parse_grant_id(grant_id, "id")
    grant = grant_from_mapping(await read_json(request, ent.settings.max_body_bytes), grant_id=gid)
    result = await ent.catalog.put_grant(grant)
    await ent.follower.catch_up()  # read-your-writes in this worker without min_revision
    return _json(
        {"grant": grant.to_json(), "revision": result.revision, "changed": result.changed},
        201 if result.created else 200,
    )


@router.get("/grants/{grant_id:path}", summary="One grant")
async def get_grant(request: Request, grant_id: GrantId, token: Admin) -> Response:
    grant = await request.state.ent.catalog.get_grant(parse_grant_id(grant_id, "id"))
    return _json(grant.to_json())


@router.delete("/grants/{grant_id:path}", summary="Revoke a grant")
async def delete_grant(request: Request, grant_id: GrantId, token: Admin) -> Response:
    ent = request.state.ent
    revision = await ent.catalog.delete_grant(parse_grant_id(grant_id, "id"))
    await ent.follower.catch_up()
    return _json({"deleted": grant_id, "revision": revision})


@router.get("/grants", summary="Grants by resource and/or subject, by id (keyset-paginated)")
async def list_grants(
    request: Request,
    token: Admin,
    resource: Annotated[str | None, Query(max_length=240)] = None,
    subject: Annotated[str | None, Query(max_length=260)] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    grants = await request.state.ent.catalog.list_grants(
        resource=parse_resource(resource) if resource is not None else None,
        subject=parse_subject(subject) if subject is not None else None,
        after=decode_cursor(cursor, parse_grant_id) if cursor else None,
        limit=limit,
    )
    next_cursor = encode_cursor(grants[-1].id) if len(grants) == limit else None
    return _json({"items": [g.to_json() for g in grants], "next_cursor": next_cursor})


@router.put(
    "/resources/{resource_id:path}",
    summary="Declare a resource and its parents (a cycle, or a path over 16 levels, is refused)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "parents": {
                                "type": "array",
                                "items": {"type": "string"},
                                "maxItems": 64,
                            }
                        },
                    }
                }
            },
        }
    },
)
async def put_resource(request: Request, resource_id: ResourceId, token: Admin) -> Response:
    ent = request.state.ent
    rid = parse_resource(resource_id, "id")
    resource = resource_from_mapping(
        await read_json(request, ent.settings.max_body_bytes), resource_id=rid
    )
    result = await ent.catalog.put_resource(resource)
    await ent.follower.catch_up()
    return _json(
        {"resource": resource.to_json(), "revision": result.revision, "changed": result.changed},
        201 if result.created else 200,
    )


@router.get("/resources/{resource_id:path}", summary="A resource and its parents")
async def get_resource(request: Request, resource_id: ResourceId, token: Admin) -> Response:
    resource = await request.state.ent.catalog.get_resource(parse_resource(resource_id, "id"))
    return _json(resource.to_json())
