"""The service's own signing keys: generating them, JWKS, and minting tokens.

Lifecycle (kept in Postgres by ``entitlements.store.keys``): ``active`` (the one
key that signs) → ``published`` (still in the JWKS, so tokens it signed keep
verifying, until ``publish_until``: the longest lifetime any token it signed can
have) → ``retired`` (gone from the JWKS). A rotation creates the new key and
demotes the old one in one transaction.

Private keys are stored as PEM in the ``signing_keys`` table: protect the
database as you would any secret store. They never leave this module and the
store: repr, logs, errors and the API only ever show the public JWK and the ``kid``.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from entitlements.errors import BackendError

Algorithm = Literal["EdDSA", "ES256"]
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key pair. ``private`` is excluded from repr and comparisons."""

    kid: str
    alg: Algorithm
    state: str
    public_jwk: Mapping[str, Any]
    created_at: datetime
    publish_until: datetime | None
    private: PrivateKey = field(repr=False, compare=False)


def generate(alg: Algorithm) -> tuple[PrivateKey, dict[str, Any]]:
    """A fresh key pair and its public JWK (``kid`` = RFC 7638 thumbprint)."""
    private: PrivateKey
    if alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        members = {"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}
    else:
        private = ec.generate_private_key(ec.SECP256R1())
        numbers = private.public_key().public_numbers()
        members = {
            "crv": "P-256",
            "kty": "EC",
            "x": _b64(numbers.x.to_bytes(32, "big")),
            "y": _b64(numbers.y.to_bytes(32, "big")),
        }
    canonical = ",".join(f'"{k}":"{v}"' for k, v in sorted(members.items()))
    kid = _b64(hashlib.sha256(("{" + canonical + "}").encode()).digest())
    return private, {**members, "kid": kid, "alg": alg, "use": "sig"}


def private_pem(private: PrivateKey) -> str:
    """The private key as unencrypted PKCS#8 PEM (how ``signing_keys`` stores it)."""
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def load_private_pem(pem: str) -> PrivateKey:
    """A stored private key back; ``BackendError`` for a type we do not sign with."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise BackendError("a stored signing key has an unsupported type")
    return key


def jwks(keys: Sequence[SigningKey]) -> dict[str, Any]:
    """The public JWKS of the keys that are active or still published."""
    return {"keys": [dict(k.public_jwk) for k in keys if k.state in {"active", "published"}]}


def mint(
    key: SigningKey,
    *,
    issuer: str,
    audience: str,
    subject: str,
    ttl: float,
    roles: Sequence[str] = (),
    scopes: Sequence[str] = (),
    tenant: str | None = None,
    typ: str = "at+jwt",
    extra: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> tuple[str, dict[str, Any]]:
    """Sign a token with ``key``; returns the token and its claims."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": issued,
        "exp": issued + int(ttl),
        "jti": uuid.uuid4().hex,
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    if roles:
        claims["roles"] = list(roles)
    if tenant is not None:
        claims["tid"] = tenant
    if extra:
        claims.update(extra)
    token = jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": key.kid, "typ": typ})
    return token, claims
