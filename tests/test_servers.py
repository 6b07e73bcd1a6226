"""The server fixtures work: real replication, a real PgBouncer, a real Redis Cluster.

Cheap proofs (a few seconds each) that ``tests/servers.py`` starts what it says;
the feature tests of issue 16 build on these fixtures.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest
from binaries import require_binary
from pg_replication import PostgresReplication
from pgbouncer_server import PgBouncer
from redis.asyncio.cluster import RedisCluster
from redis_cluster import RedisClusterServers
from servers import PgBouncerFactory

pytestmark = pytest.mark.servers


# --- require_binary: skip on a laptop, fail in CI -----------------------------------


def test_missing_binary_skips_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"apt-get install no-such-pkg"):
        require_binary("no-such-binary-3f9a", "no-such-pkg")


def test_missing_binary_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install no-such-pkg"):
        require_binary("no-such-binary-3f9a", "no-such-pkg")


def test_present_binary_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert os.access(require_binary("sh", "dash"), os.X_OK)


# --- Postgres primary + streaming replica ------------------------------------------


@pytest.fixture
async def table(pg_replication: PostgresReplication) -> AsyncIterator[str]:
    """A fresh table on the primary, already replayed on the replica."""
    name = f"smoke_{uuid.uuid4().hex[:8]}"
    await primary_execute(pg_replication, f"CREATE TABLE {name} (id int PRIMARY KEY)")
    await pg_replication.wait_caught_up()
    yield name
    await primary_execute(pg_replication, f"DROP TABLE {name}")


async def primary_execute(pair: PostgresReplication, sql: str) -> None:
    conn = await asyncpg.connect(pair.primary_dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def replica_count(pair: PostgresReplication, table: str) -> int:
    conn = await asyncpg.connect(pair.replica_dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


async def test_replica_follows_a_write_on_the_primary(
    pg_replication: PostgresReplication, table: str
) -> None:
    assert pg_replication.primary.port != pg_replication.replica.port
    await primary_execute(pg_replication, f"INSERT INTO {table} VALUES (1), (2)")
    await pg_replication.wait_caught_up()
    assert await replica_count(pg_replication, table) == 2

    conn = await asyncpg.connect(pg_replication.replica_dsn)
    try:
        assert await pg_replication.replica.client_connections(pg_replication.database) == 1
        assert await conn.fetchval("SELECT pg_is_in_recovery()") is True
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute(f"INSERT INTO {table} VALUES (3)")
    finally:
        await conn.close()


async def test_paused_replay_hides_a_write_until_resumed(
    pg_replication: PostgresReplication, table: str
) -> None:
    await pg_replication.pause_replay()
    await primary_execute(pg_replication, f"INSERT INTO {table} VALUES (1)")
    # The WAL has reached the replica; only its replay is held back.
    await pg_replication.wait_received()
    assert await pg_replication.lag_bytes() > 0
    assert await replica_count(pg_replication, table) == 0

    await pg_replication.resume_replay()
    await pg_replication.wait_caught_up()
    assert await replica_count(pg_replication, table) == 1
    assert await pg_replication.lag_bytes() == 0


async def test_stopped_replica_refuses_and_catches_up_after_start(
    pg_replication: PostgresReplication, table: str
) -> None:
    pid = pg_replication.replica.pid
    await pg_replication.stop_replica("immediate")
    assert not pg_replication.replica.running
    with pytest.raises(OSError):
        await asyncpg.connect(pg_replication.replica_dsn, timeout=2)

    await primary_execute(pg_replication, f"INSERT INTO {table} VALUES (1)")
    await pg_replication.start_replica()
    assert pg_replication.replica.pid != pid
    await pg_replication.wait_caught_up()
    assert await replica_count(pg_replication, table) == 1


# --- PgBouncer ------------------------------------------------------------------------


async def test_pgbouncer_answers_in_transaction_mode(pgbouncer: PgBouncer, pg_dsn: str) -> None:
    conn = await asyncpg.connect(pgbouncer.dsn_for(pg_dsn), statement_cache_size=0)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT $1::int + 1", 41) == 42
        database = urlsplit(pg_dsn).path.lstrip("/")
        assert await conn.fetchval("SELECT current_database()") == database
        async with conn.transaction():
            assert await conn.fetchval("SELECT $1::text", "in a transaction") == "in a transaction"
    finally:
        await conn.close()


async def test_pgbouncer_shares_one_server_connection_between_clients(
    pgbouncer_factory: PgBouncerFactory, pg_dsn: str
) -> None:
    """Transaction pooling: with one server connection, five open clients all get it.

    (In session mode the second client would wait for the first to disconnect.)
    """
    bouncer = await pgbouncer_factory(pg_dsn, {"default_pool_size": "1"})
    try:
        clients = [
            await asyncpg.connect(bouncer.dsn_for(pg_dsn), statement_cache_size=0) for _ in range(5)
        ]
        try:
            pids = [
                await asyncio.wait_for(c.fetchval("SELECT pg_backend_pid()"), 5) for c in clients
            ]
        finally:
            for c in clients:
                await c.close()
        assert len(set(pids)) == 1
    finally:
        await bouncer.close()
    assert not bouncer.running


# --- Redis Cluster ------------------------------------------------------------------------


async def test_redis_cluster_serves_every_slot_and_survives_a_killed_master(
    redis_cluster: RedisClusterServers,
) -> None:
    masters = await redis_cluster.masters()
    assert len(masters) == 3
    assert len(await redis_cluster.replicas()) == 3

    client = RedisCluster.from_url(redis_cluster.seed_url, decode_responses=True)
    try:
        keys = [f"smoke:{uuid.uuid4().hex[:6]}:{i}" for i in range(60)]
        for key in keys:
            await client.set(key, key.upper())
        owners = {(await redis_cluster.master_for_key(k)).port for k in keys}
        assert owners == {m.port for m in masters}  # the keys really span all three masters
        assert [await client.get(k) for k in keys] == [k.upper() for k in keys]

        await redis_cluster.wait_replicas_synced()
        dead = await redis_cluster.kill_master_for_key(keys[0])
        assert not dead.running
        promoted = await redis_cluster.wait_failover(dead)
        assert promoted.port != dead.port
        assert (await redis_cluster.master_for_key(keys[0])).port == promoted.port

        assert [await client.get(k) for k in keys] == [k.upper() for k in keys]
        await client.set(keys[0], "after failover")
        assert await client.get(keys[0]) == "after failover"
    finally:
        await client.aclose()

    # The next test gets a whole cluster again: the dead master rejoins as a replica.
    await redis_cluster.reset()
    assert dead.running
    assert dead.port in {r.port for r in await redis_cluster.replicas()}
