"""The request-body stall bound, in process (``tests/test_edge_limits.py`` does it over a socket).

Only waiting for the client counts: an import that waits for its turn longer than
the bound, with its body already sent, must still go through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from support import running, settings_for
from test_import_helpers import grant_record, ndjson_lines

from entitlements.store.locks import AdvisoryLock
from entitlements.store.postgres import PostgresStore

STALL = 1.0
HEADERS = {"Content-Type": "application/x-ndjson"}


async def test_a_body_that_stops_arriving_is_refused_with_408(
    clean: PostgresStore, pg_dsn: str
) -> None:
    async def stalls() -> AsyncIterator[bytes]:
        yield ndjson_lines([grant_record(1)])
        await asyncio.sleep(STALL * 5)
        yield ndjson_lines([grant_record(2)])

    settings = settings_for(pg_dsn, upload_stall_timeout=STALL)
    async with running(settings) as (client, state):
        token = state.tokens.mint_access("ops", scopes=("entitlements:import",), ttl=60)
        started = time.monotonic()
        response = await client.post(
            "/v1/imports",
            content=stalls(),
            headers=HEADERS | {"Authorization": f"Bearer {token}"},
        )
        took = time.monotonic() - started
    assert response.status_code == 408, response.text
    assert response.headers["connection"] == "close"
    assert response.json()["type"] == "urn:entitlements:problem:upload-stalled"
    assert STALL * 0.9 <= took < STALL * 4, took
    assert await clean.pool.fetchval("SELECT count(*) FROM grants") == 0
    assert await clean.pool.fetchval("SELECT status FROM imports") == "failed"


async def test_waiting_for_the_import_lock_longer_than_the_bound_is_no_stall(
    clean: PostgresStore, pg_dsn: str
) -> None:
    settings = settings_for(pg_dsn, upload_stall_timeout=STALL, import_lock_wait=10)
    async with running(settings) as (client, state):
        token = state.tokens.mint_access("ops", scopes=("entitlements:import",), ttl=60)
        async with clean.pool.acquire() as other:
            async with other.transaction():
                await other.execute("SELECT pg_advisory_xact_lock($1)", AdvisoryLock.IMPORT)
                upload = asyncio.create_task(
                    client.post(
                        "/v1/imports",
                        content=ndjson_lines([grant_record(1)]),
                        headers=HEADERS | {"Authorization": f"Bearer {token}"},
                    )
                )
                await asyncio.sleep(STALL * 2.5)  # another import runs meanwhile
                assert not upload.done()
            response = await asyncio.wait_for(upload, 30)
    assert response.status_code == 200, response.text
    assert response.json()["counts"]["inserted"] == 1
