"""Exchanged tokens in Postgres (``exchanged_tokens``): the ``ExchangedTokenStore`` port.

Every exchanged token is recorded, so that it can be revoked; a revocation bumps
the revision with a ``('token', jti)`` change, which every process's follower
adds to its revoked set.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from entitlements.errors import NotFoundError
from entitlements.store.audit import record_audit
from entitlements.store.changes import REVISION_SQL, bump_revision
from entitlements.store.pool import OnPool, translate_errors


class PostgresTokenStore(OnPool):
    """The exchanged tokens' records and their revocation."""

    async def record_exchange(
        self,
        jti: str,
        *,
        subject: str,
        actor: str,
        audience: str,
        scope: str,
        expires_at: datetime,
    ) -> None:
        async with translate_errors():
            await self.pool.execute(
                """INSERT INTO exchanged_tokens (jti, subject, actor, audience, scope, expires_at)
                   VALUES ($1, $2, $3, $4, $5, $6)""",
                jti,
                subject,
                actor,
                audience,
                scope,
                expires_at,
            )

    async def revoke(
        self, jti: str, authorize: Callable[[str, str], None], *, actor: str = "unknown"
    ) -> int:
        """Revoke ``jti`` once ``authorize(subject, actor)`` (the token's user and holder)
        has not raised; returns the revision (unchanged if it was revoked already).
        ``NotFoundError`` if no such token was exchanged."""
        async with translate_errors(), self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT subject, actor, revoked_at FROM exchanged_tokens WHERE jti = $1 FOR UPDATE",
                jti,
            )
            if row is None:
                raise NotFoundError("no exchanged token with that jti")
            authorize(row["subject"], row["actor"])
            if row["revoked_at"] is not None:
                revision: int = await conn.fetchval(REVISION_SQL)
                return revision
            await conn.execute("UPDATE exchanged_tokens SET revoked_at = now() WHERE jti = $1", jti)
            await record_audit(
                conn, actor, "token.revoke", detail={"jti": jti, "subject": row["subject"]}
            )
            return await bump_revision(conn, [("token", jti)])

    async def revoked_jtis(self) -> set[str]:
        """The revoked tokens that may still be presented (expired over a minute ago: gone)."""
        async with translate_errors():
            rows = await self.pool.fetch(
                """SELECT jti FROM exchanged_tokens
                   WHERE revoked_at IS NOT NULL AND expires_at > now() - interval '1 minute'"""
            )
        return {r["jti"] for r in rows}


__all__ = ["PostgresTokenStore"]
