"""entitlements_client: verify access tokens locally, ask fine-grained rights questions fast.

The one token verifier of the entitlements system lives here; the service
itself uses it, so every service verifies tokens the same way.
"""

from entitlements_client._errors import (
    EntitlementsClientError,
    Forbidden,
    ForbiddenError,
    InvalidToken,
    InvalidTokenError,
    Unavailable,
    UnavailableError,
)
from entitlements_client.jwks import KeySet
from entitlements_client.verify import IssuerConfig, TokenVerifier, VerifiedToken, parse_duration

__all__ = [
    "EntitlementsClientError",
    "Forbidden",
    "ForbiddenError",
    "InvalidToken",
    "InvalidTokenError",
    "IssuerConfig",
    "KeySet",
    "TokenVerifier",
    "Unavailable",
    "UnavailableError",
    "VerifiedToken",
    "parse_duration",
]
