"""entitlements_client: verify access tokens locally, ask fine-grained rights questions fast.

The one token verifier of the entitlements system lives here; the service
itself uses it, so every service verifies tokens the same way.
"""

from entitlements_client._errors import (
    INVALID_TOKEN_CODES,
    EntitlementsClientError,
    Forbidden,
    ForbiddenError,
    InvalidToken,
    InvalidTokenError,
    Unavailable,
    UnavailableError,
)
from entitlements_client.jwks import KeySet, PublicKey, parse_jwks
from entitlements_client.verify import (
    CacheInfo,
    IssuerConfig,
    TokenVerifier,
    VerifiedToken,
    parse_duration,
)

__all__ = [
    "INVALID_TOKEN_CODES",
    "CacheInfo",
    "EntitlementsClientError",
    "Forbidden",
    "ForbiddenError",
    "InvalidToken",
    "InvalidTokenError",
    "IssuerConfig",
    "KeySet",
    "PublicKey",
    "TokenVerifier",
    "Unavailable",
    "UnavailableError",
    "VerifiedToken",
    "parse_duration",
    "parse_jwks",
]
