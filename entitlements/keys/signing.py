"""The service's own signing keys: lifecycle in Postgres, JWKS, and minting tokens.

Lifecycle: ``active`` (the one key that signs) → ``published`` (still in the
JWKS, so tokens it signed keep verifying, until ``publish_until``: the longest
lifetime any token it signed can have) → ``retired`` (gone from the JWKS).
A rotation creates the new key and demotes the old one in one transaction.

Private keys are stored as PEM in the ``signing_keys`` table: protect the
database as you would any secret store. They never leave this module: repr,
logs, errors and the API only ever show the public JWK and the ``kid``.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from entitlements.errors import BackendError
from entitlements.store.locks import AdvisoryLock
from entitlements.store.postgres import translate_errors

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


def _pem(private: PrivateKey) -> str:
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _load_pem(pem: str) -> PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise BackendError("a stored signing key has an unsupported type")
    return key


class SigningKeyStore:
    """Signing keys in Postgres."""

    def __init__(self, pool: asyncpg.Pool, alg: Algorithm = "EdDSA") -> None:
        self.pool = pool
        self.alg = alg

    async def ensure_active(self) -> SigningKey:
        """The active key, creating the first one on a new database."""
        async with translate_errors(), self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", AdvisoryLock.SIGNING_KEYS)
            row = await conn.fetchrow("SELECT * FROM signing_keys WHERE state = 'active'")
            if row is None:
                row = await self._insert(conn, self.alg)
        return _key(row)

    async def rotate(self, publish_for: float, alg: Algorithm | None = None) -> SigningKey:
        """Make a new active key; the old one stays published for ``publish_for`` seconds.

        ``publish_for`` must be at least the longest lifetime of any token the
        old key may have signed, so that every such token keeps verifying.
        """
        async with translate_errors(), self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", AdvisoryLock.SIGNING_KEYS)
            await conn.execute(
                """UPDATE signing_keys SET state = 'published', publish_until = $1
                   WHERE state = 'active'""",
                datetime.now(UTC) + timedelta(seconds=publish_for),
            )
            row = await self._insert(conn, alg or self.alg)
            await conn.execute("SELECT pg_notify('entitlements_keys', $1)", row["kid"])
        return _key(row)

    async def retire_expired(self) -> int:
        async with translate_errors():
            status = await self.pool.execute(
                """UPDATE signing_keys SET state = 'retired'
                   WHERE state = 'published' AND publish_until < now()"""
            )
        return int(status.split()[-1])

    async def list(self, *, include_retired: bool = False) -> list[SigningKey]:
        async with translate_errors():
            rows = await self.pool.fetch(
                """SELECT * FROM signing_keys
                   WHERE $1 OR state = 'active'
                      OR (state = 'published' AND publish_until > now())
                   ORDER BY created_at DESC""",
                include_retired,
            )
        return [_key(r) for r in rows]

    async def _insert(self, conn: asyncpg.Connection, alg: Algorithm) -> asyncpg.Record:
        private, jwk = generate(alg)
        row: asyncpg.Record = await conn.fetchrow(
            """INSERT INTO signing_keys (kid, alg, private_pem, public_jwk, state)
               VALUES ($1, $2, $3, $4, 'active') RETURNING *""",
            jwk["kid"],
            alg,
            _pem(private),
            jwk,
        )
        return row


def _key(row: Mapping[str, Any]) -> SigningKey:
    return SigningKey(
        kid=row["kid"],
        alg=row["alg"],
        state=row["state"],
        public_jwk=row["public_jwk"],
        created_at=row["created_at"],
        publish_until=row["publish_until"],
        private=_load_pem(row["private_pem"]),
    )


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
