"""The change feed: ``GET /v1/changes?since=REV`` (long poll). Caller: scope entitlements:check:any.

What changed after a revision (resources whose grants or parents changed,
users whose own grants changed, revoked token ids), so SDK caches can drop
exactly what is stale. The feed names users, so only trusted services read it.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from entitlements.api.auth import SCOPE_CHECK_ANY, require_scope
from entitlements_client import VerifiedToken

router = APIRouter(prefix="/v1", tags=["changes"])

MAX_WAIT = 30.0


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
)
async def changes(
    request: Request,
    token: Annotated[VerifiedToken, Depends(require_scope(SCOPE_CHECK_ANY))],
    since: Annotated[int, Query(ge=0, lt=2**63)],
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0.0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Response:
    ent = request.state.ent
    if wait > 0:
        # The in-process follower already tracks the newest revision (NOTIFY-driven), so
        # waiting costs no database query; the feed itself is read once something is new.
        await ent.follower.wait_past(since, wait)
    page = await ent.store.changes_since(since, limit=limit)
    body = {
        "revision": page.reached,
        "changes": [{"revision": c.revision, "kind": c.kind, "key": c.key} for c in page.changes],
        "more": page.more,
    }
    return Response(orjson.dumps(body), media_type="application/json")
