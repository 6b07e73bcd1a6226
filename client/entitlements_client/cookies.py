"""Tokens in an HttpOnly cookie, for browser front ends (issue 15). No framework imported.

A browser app keeps the access token where its scripts cannot read it: an
``HttpOnly`` cookie set by your login endpoint, e.g.::

    Set-Cookie: entitlements_token=<token>; HttpOnly; Secure; SameSite=Strict; Path=/

``SameSite=Strict`` keeps the cookie off every cross-site request (the strongest
CSRF defence; links from other sites arrive logged out). ``SameSite=Lax`` sends it
on top-level cross-site navigations (GET), so links from other sites arrive logged
in; state-changing methods are still kept off. Either way, a browser sends the
cookie by itself, so the glue adds a second defence: a state-changing request
(anything but GET, HEAD, OPTIONS) authenticated by the cookie must carry an
``Origin`` that ``allowed_origins`` lists, or it is refused with 403. A request
with ``Authorization: Bearer`` is not a CSRF risk (no browser adds that header by
itself) and is checked as before.

``CookieAuth`` is shared by the FastAPI dependency (``entitlements_client.fastapi``:
``require(..., cookie=CookieAuth(...))``) and the ASGI middleware
(``EntitlementsMiddleware(app, ent, cookie=CookieAuth(...))``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = ["SAFE_METHODS", "CookieAuth", "CsrfError"]

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that must not change state, so need no CSRF check."""
MAX_COOKIE_HEADER: Final = 16_384


class CsrfError(Exception):
    """A state-changing request authenticated by the cookie came from an origin not
    allowed (or named none). Answered with 403."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CookieAuth:
    """Read the token from the cookie ``name`` when there is no ``Authorization`` header;
    ``allowed_origins``: the exact origins (``https://app.example.com``) whose pages may
    make state-changing requests with the cookie."""

    __slots__ = ("allowed_origins", "name")

    def __init__(
        self, allowed_origins: Iterable[str] = (), *, name: str = "entitlements_token"
    ) -> None:
        if not name or any(c in name for c in ' ;,="\t\r\n'):
            raise ValueError(f"{name!r} is not a cookie name")
        origins = frozenset(allowed_origins)
        for origin in origins:
            if origin == "*" or origin.endswith("/") or "://" not in origin:
                raise ValueError(f"{origin!r} is not an exact origin (scheme://host[:port])")
        self.allowed_origins = origins
        self.name = name

    def __repr__(self) -> str:
        return f"CookieAuth({sorted(self.allowed_origins)!r}, name={self.name!r})"

    def token(self, cookie_header: str | None) -> str | None:
        """The token in the ``Cookie`` header, or None."""
        if not cookie_header or len(cookie_header) > MAX_COOKIE_HEADER:
            return None
        for part in cookie_header.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == self.name:
                value = value.strip().strip('"')
                return value or None
        return None

    def check_origin(self, method: str, origin: str | None) -> None:
        """Refuse (``CsrfError``) a state-changing request whose ``Origin`` is not allowed."""
        if method.upper() in SAFE_METHODS:
            return
        if origin is None:
            raise CsrfError(
                "a state-changing request authenticated by a cookie must carry an Origin header"
            )
        if origin not in self.allowed_origins:
            raise CsrfError(f"requests from the origin {origin!r} may not change state")
