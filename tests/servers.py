"""Fixtures that start real servers for the scale-out tests (a pytest plugin).

Loaded by ``tests/conftest.py`` (``pytest_plugins``), so every test module can
ask for these by name. Each starts real processes on free ports in temporary
directories and stops them by PID at teardown; a machine without the binary
skips the test naming the OS package to install (under ``CI=true`` it fails
instead — see ``binaries.require_binary``).

- ``pg_replication`` → :class:`pg_replication.PostgresReplication`: an
  ``initdb``'d primary and a ``pg_basebackup``'d streaming replica, database
  ``entitlements`` on both. Session-wide servers; before each test the replica
  is running, replaying, and caught up.
- ``pgbouncer`` → :class:`pgbouncer_server.PgBouncer` in transaction mode in
  front of the suite's Postgres (``admin_dsn``); ``pgbouncer.dsn_for(pg_dsn)``
  is the suite's database through it. ``pgbouncer_factory(dsn, settings=None)``
  starts more (e.g. in front of ``pg_replication.primary_dsn``).
- ``redis_cluster`` → :class:`redis_cluster.RedisClusterServers`: 3 masters +
  3 replicas. Session-wide; before each test every node is running, the
  cluster ``ok`` and replicas in sync (a master killed by the previous test
  is back, as a replica).

The time each takes to start is printed in pytest's terminal summary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from pg_replication import PostgresReplication
from pgbouncer_server import PgBouncer
from redis_cluster import RedisClusterServers

PgBouncerFactory = Callable[..., Awaitable[PgBouncer]]

_startup: list[tuple[str, float, dict[str, float]]] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "servers: starts real server processes (Postgres replication, PgBouncer, Redis Cluster)",
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _startup:
        return
    terminalreporter.section("server fixtures: start-up time")
    for name, total, steps in _startup:
        detail = ", ".join(f"{k} {v:.2f} s" for k, v in steps.items())
        terminalreporter.write_line(f"{name}: {total:.2f} s" + (f" ({detail})" if detail else ""))


def _record(name: str, steps: dict[str, float]) -> None:
    _startup.append((name, sum(steps.values()), dict(steps)))


# --- Postgres primary + streaming replica ------------------------------------------


@pytest.fixture(scope="session")
async def pg_replication_servers() -> AsyncIterator[PostgresReplication]:
    """The primary and replica processes, started once per session."""
    pair = await PostgresReplication.start()
    _record(
        f"postgres {pair.server_version} primary + replica ({pair.primary.bindir})",
        pair.startup_seconds,
    )
    try:
        yield pair
    finally:
        await pair.close()


@pytest.fixture
async def pg_replication(pg_replication_servers: PostgresReplication) -> PostgresReplication:
    """The pair, reset for this test: both running, replay resumed, replica caught up."""
    await pg_replication_servers.reset()
    return pg_replication_servers


# --- PgBouncer ------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def pgbouncer_factory() -> AsyncIterator[PgBouncerFactory]:
    """``await pgbouncer_factory(upstream_dsn, settings=None)`` → a started PgBouncer.

    Every one started is stopped (by PID) at the end of the session at the
    latest; ``await bouncer.close()`` stops one sooner.
    """
    started: list[PgBouncer] = []

    async def start(upstream_dsn: str, settings: dict[str, str] | None = None) -> PgBouncer:
        bouncer = PgBouncer(upstream_dsn, settings)
        started.append(bouncer)
        await bouncer.start()
        _record(
            f"pgbouncer {'.'.join(map(str, bouncer.version))}", {"start": bouncer.startup_seconds}
        )
        return bouncer

    try:
        yield start
    finally:
        for bouncer in reversed(started):
            await bouncer.close()


@pytest.fixture(scope="session")
async def pgbouncer(admin_dsn: str, pgbouncer_factory: PgBouncerFactory) -> PgBouncer:
    """PgBouncer (transaction mode) in front of the suite's Postgres, for the session."""
    return await pgbouncer_factory(admin_dsn)


# --- Redis Cluster ----------------------------------------------------------------------


@pytest.fixture(scope="session")
async def redis_cluster_servers() -> AsyncIterator[RedisClusterServers]:
    """Six redis-server processes joined into one cluster, started once per session."""
    cluster = await RedisClusterServers.start()
    _record("redis cluster (3 masters + 3 replicas)", cluster.startup_seconds)
    try:
        yield cluster
    finally:
        await cluster.close()


@pytest.fixture
async def redis_cluster(redis_cluster_servers: RedisClusterServers) -> RedisClusterServers:
    """The cluster, reset for this test: every node up, ``ok``, replicas in sync."""
    await redis_cluster_servers.reset()
    return redis_cluster_servers
