"""Who is calling: bearer tokens verified by the SDK's one verifier.

Every route states who may call it by the dependency it takes:
``caller`` (any valid access token), ``checker`` (an access token or an
exchanged token limited to some resources), ``require_scope(...)``. The rules
themselves (which scope a use case needs, what an exchanged token may ask) are
the service's: ``entitlements.service.access``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request

from entitlements.errors import UnauthenticatedError
from entitlements.service import access
from entitlements.service.access import (
    EXCHANGE_TYP,
    SCOPE_ADMIN,
    SCOPE_CHECK_ANY,
    SCOPE_EXCHANGE,
    SCOPE_IMPORT,
    is_exchanged,
)
from entitlements.service.access import require_listed as resource_allowed
from entitlements_client import InvalidTokenError, TokenVerifier, VerifiedToken
from entitlements_client.bearer import bearer_token as parse_bearer

__all__ = [
    "EXCHANGE_TYP",
    "SCOPE_ADMIN",
    "SCOPE_CHECK_ANY",
    "SCOPE_EXCHANGE",
    "SCOPE_IMPORT",
    "Authenticator",
    "bearer_token",
    "caller",
    "checker",
    "is_exchanged",
    "require_scope",
    "resource_allowed",
]


@dataclass(frozen=True, slots=True)
class Authenticator:
    """Verifies bearer tokens: ordinary access tokens, and exchanged ones where a route accepts them."""

    access: TokenVerifier
    exchanged: TokenVerifier
    on_unknown_key: Callable[[], Awaitable[bool]]

    async def verify(self, request: Request, *, allow_exchanged: bool) -> VerifiedToken:
        return await self.verify_token(bearer_token(request), allow_exchanged=allow_exchanged)

    async def verify_token(self, token: str, *, allow_exchanged: bool) -> VerifiedToken:
        """The same rule for a token that did not arrive in this request's own
        ``Authorization`` header (the gateway check reads the forwarded one)."""
        try:
            return await self._verify(self.access, token)
        except InvalidTokenError as exc:
            if not (allow_exchanged and exc.code == "bad_type"):
                raise UnauthenticatedError(f"token rejected: {exc.code}", exc.code) from exc
        try:
            return await self._verify(self.exchanged, token)
        except InvalidTokenError as exc:
            raise UnauthenticatedError(f"token rejected: {exc.code}", exc.code) from exc

    async def _verify(self, verifier: TokenVerifier, token: str) -> VerifiedToken:
        try:
            return await verifier.averify(token)
        except InvalidTokenError as exc:
            # Our own keys live in Postgres: a kid we do not know may be a key
            # another process just rotated in. Re-read (rate-limited) and retry once.
            if exc.code == "unknown_key" and await self.on_unknown_key():
                return await verifier.averify(token)
            raise


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if header is None:
        raise UnauthenticatedError("an Authorization: Bearer token is required")
    token = parse_bearer(header)
    if token is None:
        raise UnauthenticatedError("the Authorization header must be 'Bearer <token>'")
    return token


def _authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.state.ent.auth
    return auth


async def caller(request: Request) -> VerifiedToken:
    """Any valid access token (not an exchanged one)."""
    return await _authenticator(request).verify(request, allow_exchanged=False)


async def checker(request: Request) -> VerifiedToken:
    """A valid access token, or an exchanged token (limited to its ``resources``)."""
    return await _authenticator(request).verify(request, allow_exchanged=True)


def require_scope(scope: str) -> Callable[[Request], Awaitable[VerifiedToken]]:
    """A dependency admitting only access tokens that carry ``scope``."""

    async def dependency(request: Request) -> VerifiedToken:
        token = await caller(request)
        access.require_scope(token, scope)
        return token

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency
