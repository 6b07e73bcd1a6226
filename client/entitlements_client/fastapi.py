"""FastAPI glue (``pip install 'entitlements-client[fastapi]'``)::

    from entitlements_client.fastapi import require

    @app.get("/tracks/{id}/stream")
    async def stream(
        decision: Annotated[Decision, Depends(require(
            "stream",
            resource=lambda request: f"track:{request.path_params['id']}",
            territory=lambda request: request.headers.get("x-country", ""),
        ))],
    ) -> ...

The dependency verifies the bearer token, applies the coarse gate, asks for
the fine decision and returns the allowing :class:`Decision`; otherwise it
raises ``HTTPException``: 401 with ``WWW-Authenticate`` (no or bad token), 403
(gate failed, or the answer is no — the detail names the reason), 400 (the
question is malformed, e.g. no territory) or 503 with ``Retry-After`` (no
answer could be had: fail closed).

Browsers: ``cookie=CookieAuth(["https://app.example.com"])`` also reads the token from
an HttpOnly cookie when there is no ``Authorization`` header, and refuses (403) a
state-changing request authenticated by it whose ``Origin`` is not listed (CSRF; see
``entitlements_client.cookies`` for SameSite).

Which client: ``client=`` if given (an :class:`AsyncEntitlements` or a callable
taking the request), else ``request.state.entitlements`` (lifespan state),
else ``request.app.state.entitlements``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

from fastapi import HTTPException, Request

from ._async import AsyncEntitlements
from ._errors import ForbiddenError, InvalidRequestError, InvalidTokenError, UnavailableError
from ._models import Decision
from .bearer import bearer_token, www_authenticate
from .cookies import CookieAuth, CsrfError
from .verify import VerifiedToken, check_binding

__all__ = ["authenticated", "require"]

FromRequest: TypeAlias = Callable[[Request], Any]
ClientSource: TypeAlias = AsyncEntitlements | Callable[[Request], AsyncEntitlements] | None


async def _value(source: object, request: Request) -> Any:
    if not callable(source):
        return source
    value = source(request)
    if inspect.isawaitable(value):
        value = await value
    return value


def _client(request: Request, source: ClientSource) -> AsyncEntitlements:
    if isinstance(source, AsyncEntitlements):
        return source
    if source is not None:
        return source(request)
    found = getattr(request.state, "entitlements", None)
    if found is None:
        found = getattr(request.app.state, "entitlements", None)
    if not isinstance(found, AsyncEntitlements):
        raise RuntimeError(
            "no AsyncEntitlements: pass client= or set request.state.entitlements"
            " (lifespan state) or app.state.entitlements"
        )
    return found


def _token(request: Request, cookie: CookieAuth | None = None) -> str:
    token = getattr(request.state, "bearer", None)
    if isinstance(token, str):
        return token
    header = request.headers.get("authorization")
    token = bearer_token(header)
    if token is None and header is None and cookie is not None:
        token = cookie.token(request.headers.get("cookie"))
        if token is not None:
            try:
                cookie.check_origin(request.method, request.headers.get("origin"))
            except CsrfError as exc:
                raise HTTPException(403, exc.message) from exc
    if token is None:
        raise HTTPException(
            401,
            "an Authorization: Bearer token is required",
            headers={"WWW-Authenticate": www_authenticate(None)},
        )
    return token


def _http_error(exc: Exception) -> HTTPException:
    if isinstance(exc, InvalidTokenError):
        return HTTPException(401, exc.message, headers={"WWW-Authenticate": www_authenticate(exc)})
    if isinstance(exc, InvalidRequestError):
        return HTTPException(400, str(exc))
    if isinstance(exc, ForbiddenError):
        return HTTPException(403, str(exc))
    seconds = "1"
    if isinstance(exc, UnavailableError) and exc.response is not None:
        seconds = exc.response.headers.get("retry-after", "1")
    return HTTPException(503, "entitlements are unavailable", headers={"Retry-After": seconds})


def require(
    action: str,
    *,
    resource: str | FromRequest,
    territory: str | FromRequest,
    client: ClientSource = None,
    require_roles: Sequence[str] = (),
    require_scopes: Sequence[str] = (),
    min_revision: FromRequest | None = None,
    cookie: CookieAuth | None = None,
) -> Callable[[Request], Awaitable[Decision]]:
    """A dependency allowing the request only if the caller may do ``action``.

    ``resource`` and ``territory`` are values or callables of the request (sync
    or async); ``min_revision`` optionally a callable returning a write's
    revision (e.g. from a header) or None. ``cookie``: also accept the token from
    an HttpOnly cookie (module docstring). Returns the allowing
    :class:`Decision` (its ``attributes`` carry e.g. the licensed quality).
    """

    async def dependency(request: Request) -> Decision:
        ent = _client(request, client)
        token = _token(request, cookie)
        try:
            decision = await ent.authorize(
                token,
                await _value(resource, request),
                action,
                await _value(territory, request),
                min_revision=await _value(min_revision, request),
                require_roles=require_roles,
                require_scopes=require_scopes,
            )
        except (InvalidTokenError, ForbiddenError, UnavailableError, InvalidRequestError) as exc:
            raise _http_error(exc) from exc
        if not decision.allowed:
            raise HTTPException(403, f"not allowed: {decision.reason}")
        return decision

    dependency.__name__ = f"require_{action}"
    return dependency


def authenticated(
    *,
    client: ClientSource = None,
    require_roles: Sequence[str] = (),
    require_scopes: Sequence[str] = (),
    cookie: CookieAuth | None = None,
    bound_to_request: bool = False,
) -> Callable[[Request], Awaitable[VerifiedToken]]:
    """A dependency returning the caller's verified token (401 if none or invalid,
    403 if it lacks a required role or scope, or fails the cookie's CSRF check). No
    network.

    ``bound_to_request``: behind the entitlements gateway check, the token is the
    per-request token it minted; it must name this request's method and raw path
    (``check_binding``), else 401 — a token replayed on another request is refused.
    """

    async def dependency(request: Request) -> VerifiedToken:
        ent = _client(request, client)
        token = _token(request, cookie)
        try:
            verified = await ent.verify(token)
            if bound_to_request:
                raw = request.scope.get("raw_path") or request.url.path.encode()
                check_binding(verified, request.method, raw.decode("latin-1"))
            if require_roles or require_scopes:
                ent._gate(verified, require_roles, require_scopes)
        except (InvalidTokenError, ForbiddenError) as exc:
            raise _http_error(exc) from exc
        return verified

    return dependency
