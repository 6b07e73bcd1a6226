"""entitlements_client: verify access tokens locally, ask fine-grained rights questions fast.

::

    from entitlements_client import AsyncEntitlements, service_issuer

    ent = AsyncEntitlements(
        "https://entitlements.internal",
        verifier=[service_issuer("https://entitlements.internal",
                                 issuer="entitlements", audience="entitlements")],
        service_token=load_service_token,      # optional: scope entitlements:check:any
    )
    decision = await ent.authorize(token, "track:USRC17607839", "stream", "GB")
    if decision:                               # bool(decision) is decision.allowed
        ...

:class:`Entitlements` is the same client for blocking code. Both verify the
token locally (a token seen before costs a lookup), apply an optional coarse
gate with no network, then answer from a bounded local cache or the service,
coalescing concurrent checks into batches; they fail closed with
:class:`InvalidTokenError`, :class:`ForbiddenError` or :class:`UnavailableError`.
``entitlements_client.fastapi`` has a FastAPI dependency; :class:`EntitlementsMiddleware`
is a plain ASGI middleware.

The one token verifier of the entitlements system lives here too; the service
itself uses it, so every service verifies tokens the same way.
"""

from entitlements_client._async import AsyncEntitlements
from entitlements_client._errors import (
    INVALID_TOKEN_CODES,
    EntitlementsClientError,
    Forbidden,
    ForbiddenError,
    InvalidRequestError,
    InvalidToken,
    InvalidTokenError,
    NotAllowedError,
    TokenRejectedError,
    Unavailable,
    UnavailableError,
)
from entitlements_client._models import (
    BreakerPolicy,
    Check,
    ClientStats,
    Decision,
    Reason,
    RetryPolicy,
)
from entitlements_client._sync import Entitlements
from entitlements_client.asgi import EntitlementsMiddleware
from entitlements_client.cookies import CookieAuth, CsrfError
from entitlements_client.issuers import service_issuer
from entitlements_client.jwks import KeySet, PublicKey, parse_jwks
from entitlements_client.verify import (
    CacheInfo,
    IssuerConfig,
    TokenVerifier,
    VerifiedToken,
    check_binding,
    parse_duration,
)

__all__ = [
    "INVALID_TOKEN_CODES",
    "AsyncEntitlements",
    "BreakerPolicy",
    "CacheInfo",
    "Check",
    "ClientStats",
    "CookieAuth",
    "CsrfError",
    "Decision",
    "Entitlements",
    "EntitlementsClientError",
    "EntitlementsMiddleware",
    "Forbidden",
    "ForbiddenError",
    "InvalidRequestError",
    "InvalidToken",
    "InvalidTokenError",
    "IssuerConfig",
    "KeySet",
    "NotAllowedError",
    "PublicKey",
    "Reason",
    "RetryPolicy",
    "TokenRejectedError",
    "TokenVerifier",
    "Unavailable",
    "UnavailableError",
    "VerifiedToken",
    "check_binding",
    "parse_duration",
    "parse_jwks",
    "service_issuer",
]
