"""The change feed: ``GET /v1/changes?since=REV`` (long poll). Caller: scope entitlements:check:any.

What changed after a revision (resources whose grants or parents changed,
users whose own grants changed, revoked token ids), so SDK caches can drop
exactly what is stale. The feed names users, so only trusted services read it.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from entitlements.api.auth import SCOPE_CHECK_ANY, require_scope
from entitlements.api.openapi import AUTH, STORE, answers, json_response
from entitlements.service.changes import MAX_PAGE, MAX_WAIT, ChangeFeedService
from entitlements_client import VerifiedToken

router = APIRouter(prefix="/v1", tags=["changes"])

_PAGE: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["revision", "changes", "more"],
    "properties": {
        "revision": {"type": "integer", "minimum": 0},
        "changes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["revision", "kind", "key"],
                "properties": {
                    "revision": {"type": "integer", "minimum": 0},
                    "kind": {"enum": ["resource", "user", "token", "all"]},
                    "key": {"type": "string"},
                },
            },
        },
        "more": {"type": "boolean"},
    },
}


@router.get(
    "/changes",
    summary="What changed after a revision (long poll up to `wait` seconds)",
    description=(
        "Returns `{revision, changes: [{revision, kind, key}], more}`. kind is `resource`"
        " (that resource and everything under it), `user` (that user's own grants), `token`"
        " (a revoked jti) or `all` (drop every cached answer; also the first entry when"
        " `since` is older than the log keeps, see ENTITLEMENTS_CHANGES_RETENTION). Call"
        " again with `since=<revision>`; `more: true` means call again at once. A page"
        " holds whole revisions: those of the first `limit` entries, the last one complete"
        " (a revision has at most 10,000 entries)."
    ),
    responses=answers({200: json_response(_PAGE, "a page of the change log")}, AUTH, 422, STORE),
)
async def changes(
    request: Request,
    token: Annotated[VerifiedToken, Depends(require_scope(SCOPE_CHECK_ANY))],
    since: Annotated[int, Query(ge=0, lt=2**63)],
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0.0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
) -> Response:
    feed: ChangeFeedService = request.state.ent.feed
    page = await feed.since(token, since, wait=wait, limit=limit)
    body = {
        "revision": page.reached,
        "changes": [{"revision": c.revision, "kind": c.kind, "key": c.key} for c in page.changes],
        "more": page.more,
    }
    return Response(orjson.dumps(body), media_type="application/json")
