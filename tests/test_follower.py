"""The change follower stops when asked, whatever arrives at the same moment.

A worker that cannot stop its follower never finishes shutting down (uvicorn's
reload, a rolling deploy, and every test's app teardown wait for it).
"""

from __future__ import annotations

import asyncio

import pytest

from entitlements.store.follower import ChangeFollower
from entitlements.store.postgres import PostgresStore


@pytest.mark.parametrize("turns", range(6))
async def test_stop_returns_when_a_wake_up_lands_with_it(
    store: PostgresStore, pg_dsn: str, turns: int
) -> None:
    """A NOTIFY's wake-up a few loop turns before stop(): with Python 3.11's wait_for,
    one of these interleavings lost the cancellation and stop() waited forever."""
    follower = ChangeFollower(store, pg_dsn, poll_interval=30.0)
    await follower.start(await store.revision())
    await asyncio.sleep(0.3)  # caught up, listening, idle in its wait
    task = follower._task
    assert task is not None and not task.done()
    follower._notified()  # what a NOTIFY on entitlements_changes does
    for _ in range(turns):
        await asyncio.sleep(0)
    stopping = asyncio.ensure_future(follower.stop())
    done, _ = await asyncio.wait({stopping}, timeout=10)
    assert stopping in done, "stop() had not returned after 10 s"
    assert task.done()


async def test_a_stopped_follower_closes_its_listen_connection(
    store: PostgresStore, pg_dsn: str
) -> None:
    follower = ChangeFollower(store, pg_dsn, poll_interval=0.05)
    await follower.start(await store.revision())
    for _ in range(100):
        if follower._conn is not None:
            break
        await asyncio.sleep(0.05)
    assert follower._conn is not None
    pid = follower._conn.get_server_pid()

    async def listening() -> bool:
        query = await store.pool.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
        return bool(query and query.startswith("LISTEN"))

    assert await listening()
    await asyncio.wait_for(follower.stop(), 10)
    for _ in range(100):
        if not await listening():
            break
        await asyncio.sleep(0.05)
    assert not await listening()
