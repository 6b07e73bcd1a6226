"""Errors → HTTP, in exactly one place: RFC 9457 problem+json with stable ``type`` codes.

Nothing else in the package knows about status codes. An unexpected exception
becomes a bare 500 problem that names no internals; the details go to the log.
A client that goes away before its request body has arrived is no error of
ours: one line in the log, no traceback, no 500.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match

from entitlements.errors import (
    AccessError,
    BusyError,
    EntitlementsError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    StoreUnavailableError,
    UnauthenticatedError,
    UploadStalledError,
)

log = logging.getLogger("entitlements.api")

PROBLEM_BASE = "urn:entitlements:problem:"


def problem(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {"type": PROBLEM_BASE + code, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


def unauthenticated(detail: str, code: str) -> Response:
    return problem(
        401,
        "invalid-token",
        "Invalid or missing access token",
        detail,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        token_error=code,  # the verifier's stable reason (expired, bad_signature, ...)
    )


def error_response(exc: Exception) -> Response:
    """The one mapping from an exception to the response a client sees."""
    if isinstance(exc, InvalidInputError):
        return problem(
            422,
            "invalid-request",
            "The request is not valid",
            str(exc),
            errors=[e.as_dict() for e in exc.errors],
        )
    if isinstance(exc, NotFoundError):
        return problem(404, "not-found", "Not found", str(exc))
    if isinstance(exc, PayloadTooLargeError):
        return problem(413, "payload-too-large", "Request body too large", str(exc))
    if isinstance(exc, UploadStalledError):
        # The rest of the body may still arrive: this connection cannot serve another request.
        return problem(
            408,
            "upload-stalled",
            "The request body stopped arriving",
            str(exc),
            headers={"Connection": "close"},
        )
    if isinstance(exc, UnauthenticatedError):
        return unauthenticated(str(exc), exc.code)
    if isinstance(exc, PermissionDeniedError):
        return problem(403, "forbidden", "Forbidden", str(exc))
    if isinstance(exc, BusyError):
        return problem(
            409,
            "busy",
            "Busy: try again later",
            str(exc),
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, StoreUnavailableError):
        return problem(
            503,
            "unavailable",
            "The rights store is unavailable",
            "try again shortly",
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, AccessError | EntitlementsError):
        return problem(400, "bad-request", "Bad request", str(exc))
    log.exception("unhandled error", exc_info=exc)
    return problem(500, "internal", "Internal error")


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path. (Starlette answers 405 from the first
    route whose path matched, which names only its own methods: the grant routes are
    three, one per method.)"""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    )


def install(app: FastAPI) -> None:
    """Register the handlers on an app (ours, and FastAPI's own validation/HTTP errors)."""

    async def on_error(request: Request, exc: Exception) -> Response:
        return error_response(exc)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return problem(exc.status_code, code, str(exc.detail), headers=headers)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ())[1:])
                or str(e.get("loc", ("",))[0]),
                "message": str(e.get("msg", "invalid")),
            }
            for e in exc.errors()
        ]
        return problem(422, "invalid-request", "The request is not valid", errors=errors)

    async def on_disconnect(request: Request, exc: Exception) -> Response:
        # Reading the body found the client gone (starlette raises ClientDisconnect from
        # request.stream()). Whatever the route had begun is rolled back by the error
        # itself (an import records itself failed); the answer below reaches nobody.
        log.info(
            "%s %s: the client disconnected before its request body was complete",
            request.method,
            request.url.path,
        )
        return problem(400, "client-disconnected", "The request body was interrupted")

    app.add_exception_handler(EntitlementsError, on_error)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    # Registered for its own class, so starlette's ExceptionMiddleware answers it; the
    # catch-all below belongs to ServerErrorMiddleware, which logs and re-raises.
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(Exception, on_error)
