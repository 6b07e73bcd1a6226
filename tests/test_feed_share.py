"""One change-feed follower per host: four workers, one LISTEN connection.

Four app instances ("workers") in this process stand for ``entitlements serve
--workers 4`` (the lead is an ``flock`` per open file, so instances in one process
contend for it exactly as processes do). Postgres itself counts the LISTEN
connections (``pg_stat_activity`` rows with the follower's ``application_name``).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import asyncpg
import pytest
from support import Api, eventually, running, settings_for

from entitlements.api.wiring import APPLICATION_NAME
from entitlements.store.follower import LISTEN_APPLICATION
from entitlements.store.postgres import PostgresStore, bump_revision

WORKERS = 4


@pytest.fixture
def feed_socket() -> Iterator[Path]:
    # Short: a Unix socket path must fit in 108 bytes (pytest's tmp_path may not).
    base = Path(tempfile.mkdtemp(prefix="ent-feed-"))
    try:
        yield base / "feed" / "feed.sock"
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def connections(pg_dsn: str, application: str) -> int:
    conn = await asyncpg.connect(pg_dsn)
    try:
        n = await conn.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND application_name = $1""",
            application,
        )
        return int(n)
    finally:
        await conn.close()


async def start_workers(stack: AsyncExitStack, pg_dsn: str, feed_socket: Path | None) -> list[Api]:
    settings = settings_for(pg_dsn, feed_socket=feed_socket, staleness=10.0, pool_min_size=1)
    apis = []
    for _ in range(WORKERS):
        client, state = await stack.enter_async_context(running(settings))
        apis.append(Api(client, state))
    return apis


async def test_four_workers_hold_one_listen_connection_not_four(
    clean: PostgresStore, pg_dsn: str, feed_socket: Path
) -> None:
    async with AsyncExitStack() as stack:
        await start_workers(stack, pg_dsn, None)
        await eventually(lambda: _listening(pg_dsn, WORKERS), timeout=5.0)
        before = await connections(pg_dsn, LISTEN_APPLICATION)
    async with AsyncExitStack() as stack:
        apis = await start_workers(stack, pg_dsn, feed_socket)
        assert await eventually(lambda: _listening(pg_dsn, 1), timeout=5.0)
        after = await connections(pg_dsn, LISTEN_APPLICATION)
        pools = await connections(pg_dsn, APPLICATION_NAME)
        assert [a.state.follower.leading for a in apis].count(True) == 1
    assert (before, after) == (WORKERS, 1), (before, after)
    assert pools >= WORKERS  # the pools are per worker still (a pooler shares those)


async def _listening(pg_dsn: str, n: int) -> bool:
    return await connections(pg_dsn, LISTEN_APPLICATION) == n


async def test_siblings_follow_the_leader_without_reading_postgres_and_survive_its_end(
    clean: PostgresStore, pg_dsn: str, feed_socket: Path
) -> None:
    async with AsyncExitStack() as stack:
        apis = await start_workers(stack, pg_dsn, feed_socket)
        assert await eventually(lambda: _one_leader(apis), timeout=5.0)
        leader = next(a for a in apis if a.state.follower.leading)
        siblings = [a for a in apis if a is not leader]
        user = f"u{uuid.uuid4().hex[:8]}"
        token = leader.token(user)
        track = f"track:{uuid.uuid4().hex[:8]}"
        question = {"resource": track, "action": "stream", "territory": "GB"}
        for api in siblings:  # each caches a deny
            assert (await api.check(token, **question))["allowed"] is False
        reads = [a.state.follower.db_reads for a in siblings]

        # A write through the *leader*'s store (not through a sibling, which would
        # catch up itself): the siblings only learn of it from the shared feed.
        await leader.put_grant(
            "g-share", subject=f"user:{user}", resource=track, actions=["stream"],
            territories=["*"],
        )  # fmt: skip
        for api in siblings:
            assert await eventually(partial(_allowed, api, token, question), timeout=3.0)
        await asyncio.sleep(1.2)  # more than a poll interval: the leader polled meanwhile
        assert [a.state.follower.db_reads for a in siblings] == reads  # no sibling read the log

        # The leader stops (its process would end): a sibling takes over the feed.
        await leader.state.follower.stop()
        assert await eventually(lambda: _one_leader(siblings), timeout=5.0)
        new_leader = next(a for a in siblings if a.state.follower.leading)
        rest = [a for a in siblings if a is not new_leader]
        for api in rest:  # each caches an allow
            assert (await api.check(token, **question))["allowed"] is True
        # A write from elsewhere (another host).
        async with clean.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM grants WHERE id = 'g-share'")
            await bump_revision(conn, [("user", user)])
        for api in rest:
            assert await eventually(partial(_denied, api, token, question), timeout=3.0)
        assert await eventually(lambda: _listening(pg_dsn, 1), timeout=5.0)


async def _one_leader(apis: list[Api]) -> bool:
    return [a.state.follower.leading for a in apis].count(True) == 1


async def _allowed(api: Api, token: str, question: dict[str, str]) -> bool:
    return bool((await api.check(token, **question))["allowed"])


async def _denied(api: Api, token: str, question: dict[str, str]) -> bool:
    return not await _allowed(api, token, question)
