"""The import's Postgres side on its own: its record, and how long it counts as alive.

PgBouncer in transaction pooling mode hands a server connection to another client
between transactions, so nothing of an import may outlive its transaction there
(issue 16): not its tables, not its locks.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

from entitlements.store.import_writer import PostgresImportSession
from entitlements.store.imports import PostgresImportStore
from entitlements.store.postgres import PostgresStore

STARTED = datetime(2026, 1, 1, tzinfo=UTC)


def session(
    imports: PostgresImportStore, import_id: str
) -> AbstractAsyncContextManager[PostgresImportSession]:
    return imports.session(
        import_id,
        format="ndjson",
        source=None,
        created_by="test",
        started_at=STARTED,
        report=f'{{"id": "{import_id}", "status": "running"}}',
        timeout=30.0,
    )


async def test_an_import_is_alive_exactly_as_long_as_its_transaction(clean: PostgresStore) -> None:
    imports = PostgresImportStore(clean.pool)
    async with session(imports, "i1") as running:
        assert (await imports.report("i1"))["status"] == "running"
        # The transaction ends, the connection lives on (as a server connection behind
        # PgBouncer would, serving someone else): the import is dead, and is found so.
        await running.db.execute("ROLLBACK")
        stored = await imports.report("i1")
    assert stored["status"] == "failed"
    assert "stopped before finishing" in stored["errors"][0]["message"]


async def test_staging_tables_do_not_outlive_the_import(clean: PostgresStore) -> None:
    imports = PostgresImportStore(clean.pool)
    async with session(imports, "i2") as running:
        assert await running.begin(lock_wait=5.0) is not None
        conn = running.db.conn
        assert await conn.fetchval("SELECT to_regclass('pg_temp.imp_g') IS NOT NULL")
        await running.end("failed", STARTED, '{"id": "i2", "status": "failed"}')
        assert await conn.fetchval("SELECT to_regclass('pg_temp.imp_g') IS NULL")
        assert not await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
    assert (await imports.report("i2"))["status"] == "failed"
