"""Applying ``schema.sql`` at start, and only when it changed.

``schema.sql`` is idempotent, but running it is not free: ``CREATE INDEX IF NOT
EXISTS`` and ``ALTER TABLE ... IF NOT EXISTS`` take their table locks before they
find there is nothing to do. While an import holds its rows, a starting worker
(or ``token mint``, ``keys rotate``) would wait behind it until its pool timeout,
and every query on those tables would queue behind that wait. So the SHA-256 of
the text last applied is kept in ``ent_schema``, and a start with the same text
runs no DDL at all. A new text (an upgrade) is applied under the ``SCHEMA`` lock
with a bounded lock wait: if tables are busy it fails clearly instead of queueing.
"""

from __future__ import annotations

import hashlib
from importlib import resources as importlib_resources
from pathlib import Path

import asyncpg

from entitlements.errors import StoreUnavailableError
from entitlements.store.locks import AdvisoryLock

UPGRADE_LOCK_WAIT = "5s"
"""How long applying a changed schema waits for a table lock before giving up."""


def schema_sql() -> str:
    """The text of ``schema.sql`` (shipped in the package, kept identical to the repo root)."""
    packaged = importlib_resources.files("entitlements").joinpath("schema.sql")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "schema.sql").read_text(encoding="utf-8")


async def applied_digest(conn: asyncpg.Connection) -> str | None:
    """The digest of the schema text last applied to this database (None: never)."""
    if await conn.fetchval("SELECT to_regclass('ent_schema') IS NULL"):
        return None
    digest: str | None = await conn.fetchval("SELECT digest FROM ent_schema")
    return digest


async def apply_schema(pool: asyncpg.Pool) -> bool:
    """Bring the database up to ``schema.sql``; returns whether any DDL ran."""
    sql = schema_sql()
    digest = hashlib.sha256(sql.encode()).hexdigest()
    async with pool.acquire() as conn:
        if await applied_digest(conn) == digest:
            return False
        async with conn.transaction():
            # Two processes starting at once must not race on CREATE ... IF NOT EXISTS.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", AdvisoryLock.SCHEMA)
            if await applied_digest(conn) == digest:  # the other one just did it
                return False
            await conn.execute(f"SET LOCAL lock_timeout = '{UPGRADE_LOCK_WAIT}'")
            try:
                await conn.execute(sql)
            except asyncpg.LockNotAvailableError:
                raise StoreUnavailableError(
                    "cannot apply the new schema: its tables stayed locked for over"
                    f" {UPGRADE_LOCK_WAIT} (an import running?); start again when it is done"
                ) from None
            await conn.execute(
                """INSERT INTO ent_schema (singleton, digest) VALUES (true, $1)
                   ON CONFLICT (singleton) DO UPDATE SET digest = EXCLUDED.digest""",
                digest,
            )
    return True
