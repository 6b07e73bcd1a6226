"""The service's signing keys in Postgres (``signing_keys``): the ``KeyStore`` port.

The key material and its rules (generation, PEM, JWKS) are ``entitlements.keys``';
this module keeps their lifecycle: one ``active`` key, rotated in one transaction
under the ``SIGNING_KEYS`` lock, so workers starting together agree on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg

from entitlements.keys.signing import (
    Algorithm,
    SigningKey,
    generate,
    load_private_pem,
    private_pem,
)
from entitlements.store.audit import record_audit
from entitlements.store.locks import AdvisoryLock
from entitlements.store.pool import OnPool, translate_errors

KEYS_CHANNEL: Final = "entitlements_keys"
"""NOTIFY channel of a rotation (every process reloads its keys)."""


class PostgresKeyStore(OnPool):
    """Signing keys in Postgres; new keys use ``alg`` unless a rotation names another."""

    def __init__(self, pool: asyncpg.Pool, alg: Algorithm = "EdDSA") -> None:
        super().__init__(pool)
        self.alg = alg

    async def ensure_active(self) -> SigningKey:
        """The active key, creating the first one on a new database."""
        async with translate_errors(), self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", AdvisoryLock.SIGNING_KEYS)
            row = await conn.fetchrow("SELECT * FROM signing_keys WHERE state = 'active'")
            if row is None:
                row = await self._insert(conn, self.alg)
        return _key(row)

    async def rotate(
        self, publish_for: float, alg: Algorithm | None = None, *, actor: str = "unknown"
    ) -> SigningKey:
        """Make a new active key; the old one stays published for ``publish_for`` seconds.

        ``publish_for`` must be at least the longest lifetime of any token the
        old key may have signed, so that every such token keeps verifying. The
        rotation is audited under ``actor``.
        """
        async with translate_errors(), self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", AdvisoryLock.SIGNING_KEYS)
            await conn.execute(
                """UPDATE signing_keys SET state = 'published', publish_until = $1
                   WHERE state = 'active'""",
                datetime.now(UTC) + timedelta(seconds=publish_for),
            )
            row = await self._insert(conn, alg or self.alg)
            await record_audit(
                conn, actor, "key.rotate", detail={"kid": row["kid"], "alg": row["alg"]}
            )
            await conn.execute(f"SELECT pg_notify('{KEYS_CHANNEL}', $1)", row["kid"])
        return _key(row)

    async def retire_expired(self) -> int:
        """Retire the published keys whose tokens have all expired; returns how many."""
        async with translate_errors():
            status = await self.pool.execute(
                """UPDATE signing_keys SET state = 'retired'
                   WHERE state = 'published' AND publish_until < now()"""
            )
        return int(status.split()[-1])

    async def list(self, *, include_retired: bool = False) -> list[SigningKey]:
        """The active and still published keys, newest first (``include_retired``: all)."""
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
            private_pem(private),
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
        private=load_private_pem(row["private_pem"]),
    )


__all__ = ["KEYS_CHANNEL", "PostgresKeyStore"]
