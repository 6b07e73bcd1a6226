"""Exceptions raised by the entitlements SDK.

One root, branches by cause::

    EntitlementsClientError          root: catch this to catch everything the SDK raises
    ├── InvalidTokenError            the caller's token is not acceptable (HTTP 401); has ``.code``
    │   └── TokenRejectedError       the service answered 401 for a forwarded token
    ├── ForbiddenError               the token is fine but the call is refused (HTTP 403)
    │   └── NotAllowedError          ``ensure``: the service answered, and the answer is no
    ├── InvalidRequestError          the question is not valid (422; also a ValueError)
    └── UnavailableError             the service or a key endpoint could not answer (fail closed)

``InvalidToken``, ``Forbidden`` and ``Unavailable`` are aliases with the names
used in docs/design.md.

Messages are short and safe to log or return to a client: they never contain
the token, any part of it, or key material. Anything more detailed belongs in
the server's own logs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import httpx

    from entitlements_client._models import Decision

__all__ = [
    "INVALID_TOKEN_CODES",
    "EntitlementsClientError",
    "Forbidden",
    "ForbiddenError",
    "InvalidRequestError",
    "InvalidToken",
    "InvalidTokenError",
    "NotAllowedError",
    "TokenRejectedError",
    "Unavailable",
    "UnavailableError",
]


class EntitlementsClientError(Exception):
    """Root of every exception the SDK raises on purpose."""


# Stable machine codes for InvalidTokenError.code, with the default message for
# each. They are part of the public contract (metrics, logs, tests): add codes,
# never rename them.
INVALID_TOKEN_CODES: Final[dict[str, str]] = {
    "malformed": "token is not a well-formed compact JWS",
    "too_large": "token is larger than allowed",
    "bad_signature": "token signature is invalid",
    "unknown_key": "token was signed by a key that is not trusted",
    "keys_unavailable": "the issuer's signing keys could not be loaded",
    "expired": "token has expired",
    "not_yet_valid": "token is not valid yet",
    "bad_issuer": "token issuer is not trusted",
    "bad_audience": "token is not meant for this audience",
    "bad_type": "token type is not accepted",
    "missing_claim": "token lacks a required claim",
    "bad_claim": "token claim has an invalid value",
    "lifetime_exceeded": "token lifetime exceeds the issuer's maximum",
    "revoked": "token has been revoked",
    "revocation_check_failed": "token revocation status could not be checked",
    "unsupported_header": "token uses a header parameter that is not supported",
    "bad_algorithm": "token algorithm is not accepted for this key",
    "rejected_by_service": "the entitlements service refused the token",
    "unbound": "token is not bound to a request",
    "wrong_request": "token was minted for another request",
}


class InvalidTokenError(EntitlementsClientError):
    """The token must not be trusted. Maps to HTTP 401 ``error="invalid_token"``.

    ``code`` is one of the stable short codes in :data:`INVALID_TOKEN_CODES`;
    ``message`` (also ``str(exc)``) is a short human sentence that is safe to
    send back to the client.
    """

    code: str
    message: str

    def __init__(self, code: str, message: str | None = None) -> None:
        self.code = code
        self.message = message or INVALID_TOKEN_CODES.get(code, "token is invalid")
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class _HTTPError(EntitlementsClientError):
    """Base for errors that may stem from one HTTP exchange (as httpx's ``RequestError``)."""

    request: httpx.Request | None
    response: httpx.Response | None

    def __init__(
        self,
        message: str,
        *,
        request: httpx.Request | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(message)
        self.request = request
        self.response = response


class ForbiddenError(_HTTPError):
    """The caller is authenticated but not allowed (HTTP 403)."""

    def __init__(
        self,
        message: str = "forbidden",
        *,
        request: httpx.Request | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(message, request=request, response=response)


class UnavailableError(_HTTPError):
    """The answer could not be obtained (timeout, 5xx, connection refused); fail closed."""

    def __init__(
        self,
        message: str = "service unavailable",
        *,
        request: httpx.Request | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(message, request=request, response=response)


# Names used in docs/design.md.
InvalidToken = InvalidTokenError
Forbidden = ForbiddenError
Unavailable = UnavailableError


class InvalidRequestError(_HTTPError, ValueError):
    """The question itself is not valid (bad resource, action, territory, ``at``,
    ``min_revision`` ahead of every write…): raised before any I/O when the SDK can
    tell, else from the service's 4xx answer (``request``/``response`` then set).
    Also a :class:`ValueError`."""

    def __init__(
        self,
        message: str,
        *,
        request: httpx.Request | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(message, request=request, response=response)


class TokenRejectedError(InvalidTokenError):
    """The service answered 401 for the caller's forwarded token: an
    :class:`InvalidTokenError` that also carries the HTTP ``request`` and ``response``."""

    request: httpx.Request | None
    response: httpx.Response | None

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        request: httpx.Request | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(code, message)
        self.request = request
        self.response = response


class NotAllowedError(ForbiddenError):
    """Raised by ``ensure``: the service answered, and the answer is no.

    ``decision`` is that answer (``decision.reason`` says why: ``territory``,
    ``expired``, ``not_licensed``…).
    """

    decision: Decision

    def __init__(self, decision: Decision) -> None:
        super().__init__(f"not allowed: {decision.reason}")
        self.decision = decision

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.decision,))
