"""Reading ``Authorization: Bearer <token>`` (RFC 6750 §2.1): one parser for the whole
system — the SDK's ASGI middleware and FastAPI dependency, and the service's API.

The one whitespace rule: only HTTP's optional whitespace counts (spaces and tabs,
RFC 9110 §5.6.3). The value is ``Bearer`` (in any case), a space, then the token;
spaces and tabs around the whole value and around the token are dropped, and
the token must not be empty. The token itself is not judged here: the verifier
refuses anything that is not a compact JWS.
"""

from __future__ import annotations

from typing import Final

from ._errors import InvalidTokenError

__all__ = ["bearer_token", "www_authenticate"]

_OWS: Final = " \t"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip(_OWS).partition(" ")
    token = token.strip(_OWS)
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def www_authenticate(error: InvalidTokenError | None) -> str:
    """The ``WWW-Authenticate`` value for a 401 (RFC 6750 §3)."""
    if error is None:
        return "Bearer"
    description = error.message.replace("\\", "").replace('"', "'")
    return f'Bearer error="invalid_token", error_description="{description}"'
