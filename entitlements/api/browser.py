"""What browsers need (issue 15): security headers on every response, and CORS.

``SecurityHeaders`` is a plain ASGI middleware (BaseHTTPMiddleware would cost the
hot path a task and a buffered body): it adds ``X-Content-Type-Options: nosniff``
and ``Referrer-Policy: no-referrer`` to every response, and ``Cache-Control:
no-store`` to every response that does not set its own (tokens, decisions and
errors must not sit in a shared cache; the JWKS sets its own). The server does not
name its software: ``entitlements serve`` runs uvicorn with ``server_header=False``.

CORS is Starlette's ``CORSMiddleware`` (also plain ASGI), only when
``ENTITLEMENTS_CORS_ORIGINS`` lists origins. It answers preflights before routing,
so the lean routes (``api.lean``), which know only their own methods, are covered.
"""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from entitlements.settings import Settings

SECURITY_HEADERS: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
NO_STORE: Final = (b"cache-control", b"no-store")
CORS_METHODS: Final = ("GET", "POST", "PUT", "DELETE")
CORS_HEADERS: Final = ("Authorization", "Content-Type", "X-Request-ID")
CORS_MAX_AGE: Final = 600


class SecurityHeaders:
    """Adds the security headers to every HTTP response (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.extend(SECURITY_HEADERS)
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append(NO_STORE)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: FastAPI, settings: Settings) -> None:
    """CORS for the configured origins (if any), inside the security headers, which are
    outermost: every response gets them, preflights and refusals included."""
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=CORS_METHODS,
            allow_headers=CORS_HEADERS,
            allow_credentials=settings.cors_credentials,
            expose_headers=("Retry-After",),
            max_age=CORS_MAX_AGE,
        )
    app.add_middleware(SecurityHeaders)


__all__ = ["CORS_HEADERS", "CORS_METHODS", "SECURITY_HEADERS", "SecurityHeaders", "install"]
