"""Bulk import over HTTP: ``POST /v1/imports`` and ``GET /v1/imports/{id}``, scope
``entitlements:import``.

The body (CSV or NDJSON: by ``?format=``, else by ``Content-Type``) is read
chunk by chunk as it arrives and fed to the import, never held whole, so an
upload of any size uses flat memory. A DDEX ERN message (``application/xml`` or
``?format=ddex``: one message per upload) is spooled to a temporary file and
read from there (the server's mapping: ``ENTITLEMENTS_DDEX_MAPPING``); the report
then has a ``ddex`` object (``service.ddex_report``). The POST answers once the import has
committed or failed, with its report: 200 for a commit or a dry run, 422
(problem+json, the report under ``import``) when the file was refused, so
nothing was imported. ``GET`` returns the same report later.

Imports run one at a time. One that waits longer than
``ENTITLEMENTS_IMPORT_LOCK_WAIT`` for another is refused with 409 and
``Retry-After``; an upload whose body stops arriving for longer than
``ENTITLEMENTS_UPLOAD_STALL_TIMEOUT`` is refused with 408 (both roll back; the
stalled one frees the lock for the next).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from entitlements.api.auth import SCOPE_IMPORT, require_scope
from entitlements.api.openapi import AUTH, PROBLEM, STORE, answers, json_response
from entitlements.api.problems import problem
from entitlements.domain.parsers import SOURCE_PATTERN, anchored
from entitlements.domain.values import parse_text
from entitlements.service.import_formats import Format, Kind
from entitlements.service.imports import ImportOptions
from entitlements_client import VerifiedToken

router = APIRouter(prefix="/v1", tags=["imports"])
MAX_IMPORT_ID_LENGTH = 64
Importer = Annotated[VerifiedToken, Depends(require_scope(SCOPE_IMPORT))]

CONTENT_TYPES: dict[str, Format] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/x-jsonlines": "ndjson",
    "application/jsonlines": "ndjson",
    "application/xml": "ddex",
    "text/xml": "ddex",
}

_COUNT = {"type": "integer"}
_COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}
DDEX_SCHEMA: dict[str, Any] = {
    "type": ["object", "null"],
    "description": "DDEX imports: what the messages said and did (null for CSV and NDJSON)",
    "properties": {
        **{
            k: _COUNT
            for k in (
                "messages",
                "test_messages",
                "stale_messages",
                "releases",
                "deals",
                "grants",
                "links_added",
                "links_removed",
                "stale_count",
            )
        },
        "skipped_deals": _COUNTS,
        "skipped_resources": _COUNTS,
        "stale": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "message_id": {"type": "string"},
                    "release": {"type": "string"},
                    "created": {"type": "string", "format": "date-time"},
                    "applied": {"type": "string", "format": "date-time"},
                },
            },
        },
        "lines": {
            "type": "array",
            "description": "one per message, in the order applied",
            "items": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "message_id": {"type": "string"},
                    "sender": {"type": "string"},
                    "type": {"enum": ["NewReleaseMessage", "PurgeReleaseMessage"]},
                    "version": {"type": "string"},
                    "created": {"type": "string", "format": "date-time"},
                    "test": {"type": "boolean"},
                    "status": {"enum": ["applied", "stale", "partly_stale", "test", "read"]},
                    **{
                        k: _COUNT
                        for k in (
                            "releases",
                            "deals",
                            "grants",
                            "inserted",
                            "updated",
                            "unchanged",
                            "deleted",
                            "links_added",
                            "links_removed",
                            "stale",
                        )
                    },
                    "skipped_deals": _COUNTS,
                },
            },
        },
    },
}

REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "status": {"enum": ["running", "committed", "failed", "dry_run"]},
        "format": {"enum": ["csv", "ndjson", "ddex"]},
        "kind": {"enum": ["grant", "resource"]},
        "source": {"type": ["string", "null"]},
        "dry_run": {"type": "boolean"},
        "skip_invalid": {"type": "boolean"},
        "counts": {
            "type": "object",
            "properties": {
                k: {"type": "integer"}
                for k in ("rows", "inserted", "updated", "unchanged", "deleted", "rejected")
            },
        },
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "line": {"type": ["integer", "null"]},
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
        "error_count": {"type": "integer"},
        "notes": {"type": "array", "items": {"type": "string"}},
        "revision": {"type": ["integer", "null"]},
        "started_at": {"type": "string", "format": "date-time"},
        "finished_at": {"type": ["string", "null"], "format": "date-time"},
        "created_by": {"type": "string"},
        "ddex": DDEX_SCHEMA,
    },
}

_BODY = {"schema": {"type": "string", "format": "binary"}}
_REFUSED: dict[str, Any] = {
    "allOf": [
        {"$ref": "#/components/schemas/Problem"},
        {"type": "object", "properties": {"import": REPORT_SCHEMA}},
    ],
    "description": "a refused file carries its report under `import`",
}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def format_of(request: Request, explicit: Format | None) -> Format | None:
    """``?format=`` wins; else the media type of ``Content-Type``; else unknown."""
    if explicit is not None:
        return explicit
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return CONTENT_TYPES.get(media)


@router.post(
    "/imports",
    summary="Bulk-import grants or resources (CSV or NDJSON body, streamed; or one DDEX ERN"
    " message; all or nothing)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": _BODY, "application/x-ndjson": _BODY, "application/xml": _BODY},
        }
    },
    responses={
        **answers(
            {200: json_response(REPORT_SCHEMA, "committed, or a dry run")},
            AUTH,
            408,
            409,
            415,
            STORE,
            described={
                408: "the body stopped arriving; nothing was imported",
                409: "another import is still running (Retry-After); nothing was imported",
                415: "neither ?format= nor a known Content-Type",
            },
        ),
        422: {
            "description": "the file or the options were refused; nothing was imported",
            "content": {PROBLEM: {"schema": _REFUSED}},
        },
    },
)
async def create_import(
    request: Request,
    token: Importer,
    format: Annotated[Literal["csv", "ndjson", "ddex"] | None, Query()] = None,
    kind: Annotated[Literal["grant", "resource"], Query()] = "grant",
    dry_run: Annotated[bool, Query()] = False,
    skip_invalid: Annotated[bool, Query()] = False,
    replace_source: Annotated[
        str | None,
        Query(max_length=100, json_schema_extra={"pattern": anchored(SOURCE_PATTERN)}),
    ] = None,
) -> Response:
    chosen = format_of(request, format)
    if chosen is None:
        return problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "send text/csv, application/x-ndjson or application/xml (a DDEX ERN message),"
            " or say ?format=csv|ndjson|ddex",
        )
    chosen_kind: Kind = kind
    options = ImportOptions(
        format=chosen,
        kind=chosen_kind,
        dry_run=dry_run,
        skip_invalid=skip_invalid,
        replace_source=replace_source,
        created_by=token.subject,
    )
    length = request.headers.get("content-length", "")
    size = int(length) if length.isdigit() else None  # a large NDJSON upload: read in parallel
    # A client that goes away mid-upload raises ClientDisconnect here: the import rolls
    # back, records itself failed, and problems.py logs one line.
    report = await request.state.ent.imports.run(request.stream(), options, size_hint=size)
    body = report.to_json()
    location = {"Location": f"/v1/imports/{report.id}"}
    if report.ok:
        return _json(body, headers=location)
    return problem(
        422,
        "import-failed",
        "The import was refused; nothing was imported",
        f"{report.error_count} problem(s); the first: {_first(body)}",
        headers=location,
        errors=body["errors"],
        **{"import": body},
    )


@router.get(
    "/imports/{import_id}",
    summary="The report of an import",
    responses=answers(
        {200: json_response(REPORT_SCHEMA, "the report")},
        AUTH,
        404,
        422,
        STORE,
        described={404: "no import with this id"},
    ),
)
async def get_import(
    request: Request,
    token: Importer,
    import_id: Annotated[
        str,
        Path(
            max_length=MAX_IMPORT_ID_LENGTH,
            json_schema_extra={"pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"},
        ),
    ],
) -> Response:
    import_id = parse_text(import_id, "import_id", MAX_IMPORT_ID_LENGTH)
    return _json(await request.state.ent.imports.get(import_id))


def _first(body: dict[str, Any]) -> str:
    errors = body["errors"]
    if not errors:
        return "unknown"
    e = errors[0]
    where = f"line {e['line']}" if e["line"] is not None else "the file"
    return f"{where}{' ' + e['field'] if e['field'] else ''}: {e['message']}"
