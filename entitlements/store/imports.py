"""Imports in Postgres: their record in ``imports``, and opening one import's transaction.

``entitlements.service.imports`` reads and validates the file; it opens a session
here (``PostgresImportStore.session``) and hands the batches to it
(``store.import_writer``, which stages, COPYs and merges them).

- **Serialized**: every import holds the ``IMPORT`` advisory lock for its
  transaction, so imports never interleave and files sharing grant ids cannot
  deadlock (``PostgresImportSession.begin`` waits for it at most ``lock_wait``).
- **Bookkeeping**: the ``imports`` row is written outside the import's transaction
  (a failed import stays on record) and finalised inside it on commit.
- **Alive or dead**: while an import runs, its transaction holds a two-key advisory
  lock (``IMPORT_LIVE_CLASS``, ``live_key(id)``). A killed import loses it with its
  transaction; the next import, or a GET of it, then finds its row ``running`` with
  nobody holding the lock and marks it failed (``_REAP_SQL``).

Every lock and table of an import lives in its one transaction (no session state),
so an import works through PgBouncer in transaction pooling mode.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Final

import asyncpg

from entitlements.errors import NotFoundError
from entitlements.store.import_connection import ImportConnection
from entitlements.store.import_writer import PostgresImportSession
from entitlements.store.locks import IMPORT_LIVE_CLASS
from entitlements.store.pool import OnPool, connect, translate_errors

_REAP_SQL: Final = f"""
UPDATE imports SET status = 'failed', finished_at = now(),
    report = report || jsonb_build_object(
        'status', 'failed',
        'finished_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'error_count', 1,
        'errors', jsonb_build_array(jsonb_build_object('line', NULL, 'field', '', 'message',
            'the import process stopped before finishing (killed, crashed or disconnected);'
            || ' nothing from it was imported')))
WHERE status = 'running' AND ($1::text IS NULL OR id = $1)
  AND pg_try_advisory_xact_lock({IMPORT_LIVE_CLASS}, ('x' || substr(md5(id), 1, 8))::bit(32)::int)
"""

_START_SQL: Final = """
INSERT INTO imports (id, status, format, source, created_by, created_at, report)
VALUES ($1, 'running', $2, $3, $4, $5, $6::text::jsonb)
"""


def live_key(import_id: str) -> int:
    """The int4 key of an import's liveness lock (the same formula as ``_REAP_SQL``)."""
    # md5 because Postgres has it built in (the reaper computes the same key in SQL);
    # this is a lock key, not a security measure.
    digest = hashlib.md5(import_id.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


class PostgresImportStore(OnPool):
    """Imports in Postgres (the ``ImportStore`` port).

    With ``dsn`` each import opens a connection of its own for its transaction,
    so a long upload never holds one of the pool's connections (which serve
    checks); the pool is used for the short bookkeeping statements. Without it,
    the transaction borrows a pool connection (the pool then needs two or more).
    """

    def __init__(self, pool: asyncpg.Pool, *, dsn: str | None = None, pooled: bool = False) -> None:
        super().__init__(pool)
        self.dsn = dsn
        self.pooled = pooled  # dsn is a transaction-mode pooler: no named statements

    async def report(self, import_id: str) -> dict[str, Any]:
        """The stored report of an import (a dead ``running`` one is marked failed first)."""
        async with translate_errors():
            await self.pool.execute(_REAP_SQL, import_id)
            row = await self.pool.fetchrow(
                "SELECT status, report FROM imports WHERE id = $1", import_id
            )
        if row is None:
            raise NotFoundError(f"no import {import_id!r}")
        return {**row["report"], "status": row["status"]}

    @contextlib.asynccontextmanager
    async def session(
        self,
        import_id: str,
        *,
        format: str,
        source: str | None,
        created_by: str,
        started_at: datetime,
        report: str,
        timeout: float,
    ) -> AsyncIterator[PostgresImportSession]:
        """The import's transaction, begun, marked live, and on record as ``running``
        (``report``: its JSON text). Every statement on it may take ``timeout`` seconds.

        The body must end it: ``commit``, or ``end`` (failed or dry run). Connection
        failures in the body come out as ``StoreUnavailableError``.
        """
        async with translate_errors():
            own = self.dsn is not None
            conn = await (
                connect(self.dsn, pooled=self.pooled)
                if self.dsn is not None
                else self.pool.acquire()
            )
            try:
                db = ImportConnection(conn, timeout)
                await db.execute("BEGIN")
                try:
                    # Live from here until the transaction ends, however it ends.
                    live = live_key(import_id)
                    await db.execute(
                        "SELECT pg_advisory_xact_lock($1, $2)", IMPORT_LIVE_CLASS, live
                    )
                    await self.pool.execute(_REAP_SQL, None)
                    await self.pool.execute(
                        _START_SQL, import_id, format, source, created_by, started_at, report
                    )
                except BaseException:
                    with contextlib.suppress(Exception):
                        await db.execute("ROLLBACK")
                    raise
                yield PostgresImportSession(self.pool, db, import_id)
            finally:
                await (conn.close() if own else self.pool.release(conn))


__all__ = ["PostgresImportSession", "PostgresImportStore", "live_key"]
