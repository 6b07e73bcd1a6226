"""Advisory locks: one registry of keys, and no lock that makes unrelated work wait.

While an import runs (holding its lock, and row locks on the tables it writes),
minting a token, rotating the signing keys and starting a new API worker used to
wait until their pool timeout: the signing keys shared the import's advisory lock,
and every start ran schema.sql, whose DDL queues behind the import's table locks.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support import running, settings_for
from test_import_helpers import grant_record, ndjson_lines

import entitlements
from entitlements.cli.admin import mint_token, rotate_keys
from entitlements.service.imports import ImportLimits, ImportOptions, ImportService
from entitlements.store.imports import PostgresImportStore
from entitlements.store.locks import IMPORT_LIVE_CLASS, AdvisoryLock
from entitlements.store.postgres import PostgresStore

PACKAGE = Path(entitlements.__file__).parent
QUICK = 8.0  # seconds: far below "until the import ends", above a busy CI box's slowest start


def test_every_lock_key_is_unique() -> None:
    values = [lock.value for lock in AdvisoryLock]
    assert len(values) == len(set(values)) == len(AdvisoryLock.__members__)
    # The two-key class lives in Postgres' other key space, but a reader should not
    # have to know that to see that it names nothing else.
    assert IMPORT_LIVE_CLASS not in values


def test_no_module_writes_a_lock_key_of_its_own() -> None:
    literal_call = re.compile(r"advisory_\w*lock\(\s*\d")
    literal_key = re.compile(r"\b74188\d{2,}\b")
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "locks.py":
            continue
        text = path.read_text(encoding="utf-8")
        if literal_call.search(text) or literal_key.search(text):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []


class StalledImport:
    """A real import that has written its first row and then waits for more input."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.more = asyncio.Event()
        self.task: asyncio.Task[object] | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        yield ndjson_lines([grant_record(1)])
        await self.more.wait()
        yield ndjson_lines([grant_record(2)])

    async def __aenter__(self) -> StalledImport:
        service = ImportService(PostgresImportStore(self.store.pool), ImportLimits(batch_rows=1))
        self.task = asyncio.create_task(service.run(self.chunks(), ImportOptions(format="ndjson")))
        # Wait until it holds the import lock and a row lock on grants (its first row landed).
        async with self.store.pool.acquire() as conn:
            for _ in range(200):
                held = await conn.fetchval(
                    """SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                       WHERE c.relname = 'grants' AND l.mode = 'RowExclusiveLock'
                         AND l.granted AND l.pid <> pg_backend_pid()"""
                )
                if held:
                    return self
                await asyncio.sleep(0.05)
        raise AssertionError("the import never wrote its first row")

    async def __aexit__(self, *exc: object) -> None:
        self.more.set()
        assert self.task is not None
        report = await asyncio.wait_for(self.task, 30)
        assert getattr(report, "status", None) == "committed", report


async def test_while_an_import_runs_tokens_keys_and_a_new_worker_do_not_wait(
    clean: PostgresStore, pg_dsn: str
) -> None:
    settings = settings_for(pg_dsn, db_timeout=2.0)
    async with StalledImport(clean):
        token = await asyncio.wait_for(mint_token(settings, "ann", [], [], 60, None), QUICK)
        assert token.count(".") == 2
        rotated = await asyncio.wait_for(rotate_keys(settings), QUICK)
        assert rotated.startswith("active key is now")

        async def start_and_check() -> int:
            async with running(settings) as (client, state):
                ann = state.tokens.mint_access("ann", ttl=60)
                response = await client.post(
                    "/v1/check",
                    json={"resource": "track:t1", "action": "stream", "territory": "GB"},
                    headers={"Authorization": f"Bearer {ann}"},
                )
                return response.status_code

        assert await asyncio.wait_for(start_and_check(), QUICK) == 200


@pytest.mark.parametrize("lock", list(AdvisoryLock))
def test_each_lock_key_is_taken_by_someone(lock: AdvisoryLock) -> None:
    # A key nobody uses is a key someone will reuse by mistake.
    used = "".join(p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py"))
    assert f"AdvisoryLock.{lock.name}" in used
