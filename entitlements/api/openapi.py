"""The OpenAPI document: what each route takes and every answer it can give.

Routes declare their answers with ``answers(...)`` next to their handler, and
request bodies with ``json_body(...)``; the lean routes (``api.lean``) carry
their whole operation. ``build(app)`` assembles the document from the routes
themselves and states what holds for all of them:

- every error is ``application/problem+json`` (RFC 9457, ``PROBLEM_SCHEMA``),
  FastAPI's own request validation errors included;
- an operation that can answer 401 takes a bearer token (``security``); one
  that cannot is public.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.utils import get_openapi

from entitlements.api.lean import LeanRoute

PROBLEM: Final = "application/problem+json"
_PROBLEM_REF: Final = "#/components/schemas/Problem"
JSON: Final = "application/json"

PROBLEM_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "description": "a stable code: urn:entitlements:problem:*"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "one entry per refused field (422)",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {
                    "field": {"type": "string", "description": "a dotted path; '' the body"},
                    "message": {"type": "string"},
                    "line": {
                        "type": ["integer", "null"],
                        "description": "an import file's line (null: the file as a whole)",
                    },
                },
            },
        },
        "token_error": {"type": "string", "description": "why the token was refused (401)"},
    },
}

_RETRY_AFTER: Final = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
_ERRORS: Final[dict[int, tuple[str, dict[str, Any]]]] = {
    400: ("The request is not valid: `errors` names each refused field", {}),
    401: (
        "No bearer token, or one that does not verify",
        {
            "WWW-Authenticate": {
                "description": 'Bearer error="invalid_token"',
                "required": True,
                "schema": {"type": "string"},
            }
        },
    ),
    403: ("The token is valid but does not allow this call", {}),
    404: ("Not found", {}),
    408: (
        "The request body stopped arriving; nothing was done",
        {"Connection": {"required": True, "schema": {"const": "close"}}},
    ),
    409: ("Busy with other work past the wait; nothing was done", _RETRY_AFTER),
    413: ("The request body is over its limit (ENTITLEMENTS_MAX_BODY_BYTES)", {}),
    415: ("Not a media type this operation reads", {}),
    422: ("The request is not valid: `errors` names each refused field", {}),
    503: ("Postgres is unavailable: fail closed", _RETRY_AFTER),
}

AUTH: Final = (401, 403)
"""A route that takes a bearer token (and may refuse it)."""
BODY: Final = (408, 413, 422)
"""A route that reads a JSON body."""
STORE: Final = (503,)
"""A route that reads or writes Postgres."""


def problem_response(status: int, description: str | None = None) -> dict[str, Any]:
    text, headers = _ERRORS[status]
    response: dict[str, Any] = {
        "description": description or text,
        "content": {PROBLEM: {"schema": {"$ref": _PROBLEM_REF}}},
    }
    if headers:
        response["headers"] = dict(headers)
    return response


def answers(
    ok: Mapping[int, Mapping[str, Any]],
    *errors: int | Iterable[int],
    described: Mapping[int, str] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """An operation's ``responses``: its successes (``{status: response}``) and the error
    statuses it can answer (each a problem+json response; ``described`` words one for
    this operation)."""
    out: dict[int | str, dict[str, Any]] = {status: dict(r) for status, r in ok.items()}
    codes: set[int] = set()
    for item in errors:
        codes.update([item] if isinstance(item, int) else item)
    for status in sorted(codes):
        out[status] = problem_response(status, (described or {}).get(status))
    return out


def json_response(schema: Mapping[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": dict(schema)}}}


def json_body(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads a JSON body itself (not through FastAPI)."""
    return {"requestBody": {"required": True, "content": {JSON: {"schema": dict(schema)}}}}


def build(app: FastAPI) -> dict[str, Any]:
    """The document of ``app``: FastAPI's for its routes, the lean routes' own, then the
    rules above applied to every operation."""
    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    paths: dict[str, Any] = doc.setdefault("paths", {})
    for route in app.routes:
        if isinstance(route, LeanRoute):
            for method in sorted(route.documented_methods):
                # A copy, JSON-ready, as FastAPI's operations are.
                paths.setdefault(route.path, {})[method.lower()] = jsonable_encoder(route.operation)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    components["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "an access token (RFC 9068) of a trusted issuer, or an exchanged one",
        }
    }
    for operations in paths.values():
        for operation in operations.values():
            responses = {str(k): v for k, v in operation.get("responses", {}).items()}
            for status, response in list(responses.items()):
                if int(status) >= 400:
                    responses[status] = _problem_only(int(status), response)
            operation["responses"] = responses
            operation["security"] = [{"bearer": []}] if "401" in responses else []
    return doc


def _problem_only(status: int, response: Mapping[str, Any]) -> dict[str, Any]:
    """An error answer as it is served: problem+json only. (FastAPI adds JSON content to
    every declared response, and its own 422 schema where it validates parameters; a
    route may declare a richer problem, which is kept.)"""
    out = dict(response)
    content = response.get("content") or {}
    out["content"] = {PROBLEM: content.get(PROBLEM) or {"schema": {"$ref": _PROBLEM_REF}}}
    if status in _ERRORS:
        text, headers = _ERRORS[status]
        if response.get("description") in (None, "", "Validation Error"):
            out["description"] = text
        if headers and "headers" not in response:
            out["headers"] = dict(headers)
    return out


__all__ = [
    "AUTH",
    "BODY",
    "PROBLEM",
    "PROBLEM_SCHEMA",
    "STORE",
    "answers",
    "build",
    "json_body",
    "json_response",
    "problem_response",
]
