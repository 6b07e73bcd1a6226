"""Grant and resource administration (scope ``entitlements:admin``): HTTP over the
``AdminService``, which owns the rules."""

from __future__ import annotations

from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from entitlements.api.auth import SCOPE_ADMIN, require_scope
from entitlements.api.body import read_json
from entitlements.api.openapi import AUTH, BODY, STORE, answers, json_body, json_response
from entitlements.domain.grant import GRANT_INPUT_SCHEMA, GRANT_SCHEMA
from entitlements.domain.parsers import (
    GRANT_ID_PATTERN,
    MAX_ID_LENGTH,
    MAX_RESOURCE_LENGTH,
    MAX_SUBJECT_LENGTH,
    RESOURCE_PATTERN,
    SUBJECT_PATTERN,
    anchored,
)
from entitlements.domain.resource import RESOURCE_INPUT_SCHEMA, RESOURCE_SCHEMA
from entitlements.service.admin import AdminService, Body
from entitlements_client import VerifiedToken

router = APIRouter(prefix="/v1", tags=["admin"])
Admin = Annotated[VerifiedToken, Depends(require_scope(SCOPE_ADMIN))]
# A listing's optional ``resource`` filter (grants here, the audit log in routes_audit).
ResourceFilter = Annotated[
    str | None,
    Query(
        max_length=MAX_RESOURCE_LENGTH, json_schema_extra={"pattern": anchored(RESOURCE_PATTERN)}
    ),
]

_WRITE: Final = {
    "revision": {"type": "integer", "minimum": 0, "description": "the revision after the write"},
    "changed": {"type": "boolean", "description": "false: identical to what was stored"},
}


def _written(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": [name, *_WRITE], "properties": {name: schema, **_WRITE}}


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _admin(request: Request) -> AdminService:
    service: AdminService = request.state.ent.admin
    return service


def _body(request: Request) -> Body:
    async def read() -> object:
        return await read_json(request, request.state.ent.settings.max_body_bytes)

    return read


GrantId = Annotated[
    str,
    Path(
        max_length=MAX_ID_LENGTH,
        description="the grant's external id",
        json_schema_extra={"pattern": anchored(GRANT_ID_PATTERN)},
    ),
]
ResourceId = Annotated[
    str,
    Path(
        max_length=MAX_RESOURCE_LENGTH,
        description="type:id",
        json_schema_extra={"pattern": anchored(RESOURCE_PATTERN)},
    ),
]
_NO_GRANT: Final = {404: "no grant with this id"}


@router.put(
    "/grants/{grant_id:path}",
    summary="Create or replace a grant (idempotent)",
    openapi_extra=json_body(GRANT_INPUT_SCHEMA),
    status_code=200,
    responses=answers(
        {
            200: json_response(_written("grant", GRANT_SCHEMA), "replaced (or unchanged)"),
            201: json_response(_written("grant", GRANT_SCHEMA), "created"),
        },
        AUTH,
        BODY,
        STORE,
        described={
            422: "a field is not valid, the window is empty (valid_until must be later than"
            " valid_from), or the body's id is not the URL's"
        },
    ),
)
async def put_grant(request: Request, grant_id: GrantId, token: Admin) -> Response:
    written = await _admin(request).put_grant(token, grant_id, _body(request))
    return _json(
        {
            "grant": written.grant.to_json(),
            "revision": written.revision,
            "changed": written.changed,
        },
        201 if written.created else 200,
    )


@router.get(
    "/grants/{grant_id:path}",
    summary="One grant",
    responses=answers(
        {200: json_response(GRANT_SCHEMA, "the grant")}, AUTH, 404, 422, STORE, described=_NO_GRANT
    ),
)
async def get_grant(request: Request, grant_id: GrantId, token: Admin) -> Response:
    return _json((await _admin(request).get_grant(token, grant_id)).to_json())


@router.delete(
    "/grants/{grant_id:path}",
    summary="Revoke a grant",
    responses=answers(
        {
            200: json_response(
                {
                    "type": "object",
                    "required": ["deleted", "revision"],
                    "properties": {
                        "deleted": {"type": "string", "description": "the grant's id"},
                        "revision": _WRITE["revision"],
                    },
                },
                "revoked",
            )
        },
        AUTH,
        404,
        422,
        STORE,
        described=_NO_GRANT,
    ),
)
async def delete_grant(request: Request, grant_id: GrantId, token: Admin) -> Response:
    revision = await _admin(request).delete_grant(token, grant_id)
    return _json({"deleted": grant_id, "revision": revision})


@router.get(
    "/grants",
    summary="Grants by resource and/or subject, by id (keyset-paginated)",
    responses=answers(
        {
            200: json_response(
                {
                    "type": "object",
                    "required": ["items", "next_cursor"],
                    "properties": {
                        "items": {"type": "array", "items": GRANT_SCHEMA},
                        "next_cursor": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                    },
                },
                "a page of grants",
            )
        },
        AUTH,
        422,
        STORE,
        described={422: "a parameter is not valid, or the cursor is not one this service issued"},
    ),
)
async def list_grants(
    request: Request,
    token: Admin,
    resource: ResourceFilter = None,
    subject: Annotated[
        str | None,
        Query(
            max_length=MAX_SUBJECT_LENGTH,
            json_schema_extra={"pattern": anchored(SUBJECT_PATTERN)},
        ),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    page = await _admin(request).list_grants(
        token, resource=resource, subject=subject, cursor=cursor, limit=limit
    )
    return _json({"items": [g.to_json() for g in page.items], "next_cursor": page.next_cursor})


@router.put(
    "/resources/{resource_id:path}",
    summary="Declare a resource and its parents (a cycle, or a path over 16 levels, is refused)",
    openapi_extra=json_body(RESOURCE_INPUT_SCHEMA),
    responses=answers(
        {
            200: json_response(_written("resource", RESOURCE_SCHEMA), "replaced (or unchanged)"),
            201: json_response(_written("resource", RESOURCE_SCHEMA), "created"),
        },
        AUTH,
        BODY,
        STORE,
        described={
            422: "a field is not valid, a parent would make a cycle or a path over 16 levels,"
            " or the body's id is not the URL's"
        },
    ),
)
async def put_resource(request: Request, resource_id: ResourceId, token: Admin) -> Response:
    written = await _admin(request).put_resource(token, resource_id, _body(request))
    return _json(
        {
            "resource": written.resource.to_json(),
            "revision": written.revision,
            "changed": written.changed,
        },
        201 if written.created else 200,
    )


@router.get(
    "/resources/{resource_id:path}",
    summary="A resource and its parents",
    responses=answers(
        {200: json_response(RESOURCE_SCHEMA, "the resource")},
        AUTH,
        404,
        422,
        STORE,
        described={404: "no resource with this id"},
    ),
)
async def get_resource(request: Request, resource_id: ResourceId, token: Admin) -> Response:
    return _json((await _admin(request).get_resource(token, resource_id)).to_json())
