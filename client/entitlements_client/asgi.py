"""A plain ASGI middleware: verify the bearer token once, at the door.

::

    app = EntitlementsMiddleware(app, ent)          # ent: AsyncEntitlements or TokenVerifier

Every HTTP or WebSocket request must carry ``Authorization: Bearer <token>``;
the verified token lands in ``scope["state"]["token"]`` (``request.state.token``
in Starlette/FastAPI) and the raw token in ``scope["state"]["bearer"]``. A
missing or invalid token is answered here: HTTP 401 problem+json with
``WWW-Authenticate: Bearer`` (``error="invalid_token"`` when one was sent), or
a WebSocket close with code 1008. ``optional=True`` lets requests without a
token through (an invalid one is still refused); ``exclude_paths`` are never
checked (health probes). ``cookie=CookieAuth([...])`` also takes the token from an
HttpOnly cookie when no ``Authorization`` header is sent, and answers 403 to a
state-changing request authenticated by it whose ``Origin`` is not listed (CSRF;
``entitlements_client.cookies``). No framework is imported.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import TYPE_CHECKING, Any

import orjson

from ._errors import InvalidTokenError
from .bearer import bearer_token, www_authenticate
from .cookies import CookieAuth, CsrfError
from .verify import TokenVerifier, VerifiedToken

if TYPE_CHECKING:
    from ._async import AsyncEntitlements

__all__ = ["EntitlementsMiddleware", "bearer_token", "www_authenticate"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class EntitlementsMiddleware:
    """Verify bearer tokens for an ASGI app; see the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        verifier: TokenVerifier | AsyncEntitlements,
        *,
        optional: bool = False,
        exclude_paths: Collection[str] = (),
        state_key: str = "token",
        cookie: CookieAuth | None = None,
    ) -> None:
        self.app = app
        self.cookie = cookie
        self.optional = optional
        self.exclude_paths = frozenset(exclude_paths)
        self.state_key = state_key
        if isinstance(verifier, TokenVerifier):
            self._verify: Callable[[str], Awaitable[VerifiedToken]] = verifier.averify
        else:
            self._verify = verifier.verify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope.get("path") in self.exclude_paths:
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", ()):
            if name.lower() == b"authorization":
                header = value.decode("latin-1")
                break
        token = bearer_token(header)
        error: InvalidTokenError | None = None
        if token is None and header is None and self.cookie is not None:
            token = self._from_cookie(scope)
            if token is not None and kind == "http":
                try:
                    self.cookie.check_origin(scope.get("method", "GET"), _header(scope, b"origin"))
                except CsrfError as exc:
                    await _forbidden(exc.message, send)
                    return
        if token is None:
            if self.optional and header is None:
                await self.app(scope, receive, send)
                return
        else:
            try:
                verified = await self._verify(token)
            except InvalidTokenError as exc:
                error = exc
            else:
                state = scope.setdefault("state", {})
                state[self.state_key] = verified
                state["bearer"] = token
                await self.app(scope, receive, send)
                return
        await self._refuse(kind, error, send)

    def _from_cookie(self, scope: Scope) -> str | None:
        assert self.cookie is not None
        return self.cookie.token(_header(scope, b"cookie"))

    @staticmethod
    async def _refuse(kind: str, error: InvalidTokenError | None, send: Send) -> None:
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        detail = (
            error.message if error is not None else "an Authorization: Bearer token is required"
        )
        body = orjson.dumps(
            {
                "type": "urn:entitlements:problem:invalid-token",
                "title": "Invalid or missing access token",
                "status": 401,
                "detail": detail,
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", www_authenticate(error).encode("ascii", "replace")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, wanted: bytes) -> str | None:
    """The header ``wanted`` (lower-case), joined as ASGI allows repeats (cookies: "; ")."""
    found = [v.decode("latin-1") for n, v in scope.get("headers", ()) if n.lower() == wanted]
    if not found:
        return None
    return "; ".join(found) if wanted == b"cookie" else found[0]


async def _forbidden(detail: str, send: Send) -> None:
    body = orjson.dumps(
        {
            "type": "urn:entitlements:problem:forbidden",
            "title": "Forbidden",
            "status": 403,
            "detail": detail,
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
