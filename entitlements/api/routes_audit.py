"""The audit of changes (issue 15): ``GET /v1/audit``, for admins (``entitlements:admin``).

HTTP over ``AdminService.audit``, which owns the rules; the entries are written by
the stores in the transaction of each change.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from entitlements.api.openapi import AUTH, STORE, answers, json_response
from entitlements.api.routes_admin import Admin, ResourceFilter, _admin
from entitlements.domain.parsers import (
    GRANT_ID_PATTERN,
    MAX_ID_LENGTH,
    anchored,
)
from entitlements.service.admin import MAX_ACTOR
from entitlements.service.checks import MAX_PAGE
from entitlements.store.results import AuditEntry

router = APIRouter(prefix="/v1", tags=["admin"])

_NULLABLE_TEXT: Final = {"anyOf": [{"type": "string"}, {"type": "null"}]}
_ENTRY: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["id", "at", "actor", "action", "resource", "grant", "before", "after", "detail"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "at": {"type": "string", "format": "date-time"},
        "actor": {
            "type": "string",
            "description": "who made the change: a token's namespaced subject, or cli:<os user>",
        },
        "action": {
            "enum": [
                "grant.put",
                "grant.delete",
                "resource.put",
                "import",
                "key.rotate",
                "token.revoke",
            ]
        },
        "resource": _NULLABLE_TEXT,
        "grant": _NULLABLE_TEXT,
        "before": {"description": "the grant or resource before (null: it did not exist)"},
        "after": {"description": "the grant or resource after (null: it was deleted)"},
        "detail": {"description": "an import's report, a key's kid, a revoked token's jti"},
    },
}


def entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at.isoformat().replace("+00:00", "Z"),
        "actor": entry.actor,
        "action": entry.action,
        "resource": entry.resource,
        "grant": entry.grant,
        "before": entry.before,
        "after": entry.after,
        "detail": entry.detail,
    }


@router.get(
    "/audit",
    summary="Who changed what, newest first (keyset-paginated; admins only)",
    description="Every grant, resource, import, key rotation and token revocation that"
    " changed something, with who made it and, for grants and resources, the values before"
    " and after. Needs the scope entitlements:admin.",
    responses=answers(
        {
            200: json_response(
                {
                    "type": "object",
                    "required": ["items", "next_cursor"],
                    "properties": {
                        "items": {"type": "array", "items": _ENTRY},
                        "next_cursor": _NULLABLE_TEXT,
                    },
                },
                "a page of audit entries, newest first",
            )
        },
        AUTH,
        422,
        STORE,
        described={422: "a parameter is not valid, or the cursor is not one this service issued"},
    ),
)
async def audit(
    request: Request,
    token: Admin,
    actor: Annotated[str | None, Query(min_length=1, max_length=MAX_ACTOR)] = None,
    resource: ResourceFilter = None,
    grant: Annotated[
        str | None,
        Query(max_length=MAX_ID_LENGTH, json_schema_extra={"pattern": anchored(GRANT_ID_PATTERN)}),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> Response:
    page = await _admin(request).audit(
        token, actor=actor, resource=resource, grant=grant, cursor=cursor, limit=limit
    )
    return Response(
        orjson.dumps(
            {"items": [entry_json(e) for e in page.items], "next_cursor": page.next_cursor}
        ),
        media_type="application/json",
    )


__all__ = ["entry_json", "router"]
