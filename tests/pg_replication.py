"""A private Postgres primary with a streaming hot-standby replica, for replica tests.

The machine's Postgres (127.0.0.1:5432) accepts no replication connections, so
this builds its own pair from the installed server binaries:

- ``initdb`` a primary (trust auth; ``wal_level=replica``, WAL senders, a
  replication slot, hot standby), start it on a free port, create the service's
  database on it;
- ``pg_basebackup -R -C -S replica`` a copy of it (streamed WAL, a standby
  signal and ``primary_conninfo`` written for us, a slot on the primary so WAL
  is kept while the replica is stopped) and start that on another free port.

Both are :class:`processes.ServerProcess` children, TCP on 127.0.0.1 only (no
Unix socket), stopped by PID. The helpers below pause and resume WAL replay,
stop and start the replica, and wait until it has replayed what the primary has
written. Built for tests: ``fsync=off``; nothing here is tuned for production.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from pathlib import Path
from typing import Literal

import asyncpg
from binaries import postgres_bindir
from processes import (
    RunAs,
    ServerProcess,
    free_port,
    make_owned_dir,
    run_command,
    server_user,
    servers_tempdir,
    wait_for,
)

__all__ = ["PostgresReplication", "PostgresServer", "StopMode"]

StopMode = Literal["smart", "fast", "immediate"]
_STOP_SIGNALS: dict[StopMode, signal.Signals] = {
    "smart": signal.SIGTERM,  # waits for every client to disconnect
    "fast": signal.SIGINT,  # ends sessions, clean shutdown
    "immediate": signal.SIGQUIT,  # no shutdown checkpoint: crash recovery on the next start
}

# The same settings for both servers (a standby needs max_connections etc. >= the primary's).
SETTINGS: dict[str, str] = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "hot_standby": "on",
    "hot_standby_feedback": "on",  # no query on the replica cancelled by vacuum on the primary
    "max_connections": "200",
    "shared_buffers": "32MB",
    "fsync": "off",  # test data: speed over durability
    "logging_collector": "off",
}

SLOT = "replica"
START_TIMEOUT = 30.0


class PortTakenError(RuntimeError):
    """The server could not bind its port (someone took it between our check and its bind)."""


async def _connect(dsn: str, timeout: float = 2.0) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=timeout)


class PostgresServer:
    """One postmaster on 127.0.0.1:``port`` over ``data_dir``, a child process of ours."""

    def __init__(
        self, name: str, bindir: Path, data_dir: Path, port: int, run_as: RunAs | None
    ) -> None:
        self.name = name
        self.bindir = bindir
        self.data_dir = data_dir
        self.run_as = run_as
        self.port = port
        self.process = self._process()

    def _process(self) -> ServerProcess:
        settings = {**SETTINGS, "port": str(self.port), "cluster_name": self.name}
        args: list[str] = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        return ServerProcess(
            self.name,
            args,
            self.data_dir.parent,
            run_as=self.run_as,
            stop_signal=signal.SIGINT,
            death_signal=signal.SIGQUIT,  # immediate shutdown: the postmaster ends its children
        )

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.running

    async def _accepts_connections(self) -> bool:
        try:
            conn = await _connect(self.dsn(), timeout=1.0)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        await conn.close()
        return True

    async def start(self, timeout: float = START_TIMEOUT) -> float:
        """Start it and wait until it accepts connections; the seconds that took."""
        started = time.monotonic()
        self.process.start()
        try:
            await wait_for(
                self._accepts_connections,
                f"Postgres {self.name} on port {self.port}",
                timeout=timeout,
                alive=[self.process],
            )
        except RuntimeError as exc:
            if "could not bind" in self.process.log_tail() or "in use" in self.process.log_tail():
                raise PortTakenError(str(exc)) from exc
            raise
        return time.monotonic() - started

    async def start_on_free_port(self, attempts: int = 3) -> float:
        """``start``, moving to another free port if someone took this one meanwhile."""
        for attempt in range(attempts):
            try:
                return await self.start()
            except PortTakenError:
                if attempt == attempts - 1:
                    raise
                self.port = free_port()
                self.process = self._process()
        raise AssertionError("unreachable")

    async def stop(self, mode: StopMode = "fast", timeout: float = 15.0) -> None:
        """Stop the postmaster by PID (``fast``: sessions end; ``immediate``: like a crash)."""
        await asyncio.to_thread(self.process.stop, _STOP_SIGNALS[mode], timeout)

    async def client_connections(self, database: str | None = None) -> int:
        """Client backends connected now (all databases, or one), not counting this probe."""
        count = await self.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
                 AND ($1::text IS NULL OR datname = $1)""",
            database,
        )
        return int(str(count))

    async def fetchval(self, query: str, *args: object, database: str = "postgres") -> object:
        """One value from a short-lived connection (for the helpers and for tests)."""
        conn = await _connect(self.dsn(database))
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()


class PostgresReplication:
    """A primary and one streaming replica of it; ``database`` exists on both.

    ``primary_dsn`` / ``replica_dsn`` name ``database``; ``primary.dsn("postgres")``
    and ``replica.dsn(...)`` any other. ``startup_seconds`` records what each
    start-up step took; ``server_version`` is the primary's (``SHOW server_version``).
    """

    def __init__(
        self, base: Path, primary: PostgresServer, replica: PostgresServer, database: str
    ) -> None:
        self.base = base
        self.primary = primary
        self.replica = replica
        self.database = database
        self.startup_seconds: dict[str, float] = {}
        self.server_version = ""

    @property
    def primary_dsn(self) -> str:
        return self.primary.dsn(self.database)

    @property
    def replica_dsn(self) -> str:
        return self.replica.dsn(self.database)

    # --- life cycle -------------------------------------------------------------------

    @classmethod
    async def start(cls, database: str = "entitlements") -> PostgresReplication:
        """initdb + start a primary, create ``database``, base-backup a replica, start it.

        Skips (fails under ``CI=true``) when the Postgres server binaries are missing.
        """
        run_as = server_user()
        bindir = postgres_bindir(for_other_user=run_as is not None)
        base = servers_tempdir("entitlements-pg-replication-")
        primary_dir = make_owned_dir(base / "primary" / "data", run_as)
        replica_dir = make_owned_dir(base / "replica" / "data", run_as)
        for d in (primary_dir.parent, replica_dir.parent):
            make_owned_dir(d, run_as, 0o755)
        primary = PostgresServer("primary", bindir, primary_dir, free_port(), run_as)
        replica = PostgresServer("replica", bindir, replica_dir, free_port(), run_as)
        pair = cls(base, primary, replica, database)
        try:
            await pair._build(bindir, run_as)
        except BaseException:
            await pair.close()
            raise
        return pair

    async def _build(self, bindir: Path, run_as: RunAs | None) -> None:
        timings = self.startup_seconds
        t = time.monotonic()
        await asyncio.to_thread(
            run_command,
            [
                bindir / "initdb", "-D", self.primary.data_dir, "-U", "postgres",
                "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
            ],
            run_as=run_as,
            cwd=self.base,
        )  # fmt: skip
        timings["initdb"] = time.monotonic() - t
        # initdb's pg_hba.conf already trusts replication from 127.0.0.1 with --auth=trust;
        # say so explicitly, in case a packaged template changes.
        hba = self.primary.data_dir / "pg_hba.conf"
        hba.write_text(hba.read_text() + "\nhost replication all 127.0.0.1/32 trust\n")
        timings["primary start"] = await self.primary.start_on_free_port()
        self.server_version = str(await self.primary.fetchval("SHOW server_version"))
        t = time.monotonic()
        await self.primary.fetchval(f'CREATE DATABASE "{self.database}"')
        timings["create database"] = time.monotonic() - t
        t = time.monotonic()
        await asyncio.to_thread(
            run_command,
            [
                bindir / "pg_basebackup",
                "--dbname", f"host=127.0.0.1 port={self.primary.port} user=postgres",
                "--pgdata", self.replica.data_dir,
                "--write-recovery-conf", "--wal-method=stream", "--checkpoint=fast",
                "--create-slot", "--slot", SLOT, "--no-sync",
            ],
            run_as=run_as,
            cwd=self.base,
        )  # fmt: skip
        timings["pg_basebackup"] = time.monotonic() - t
        t = time.monotonic()
        await self.replica.start_on_free_port()
        await self.wait_streaming()
        timings["replica start"] = time.monotonic() - t

    async def close(self) -> None:
        """Stop both servers by PID (replica first) and remove their directories."""
        for server in (self.replica, self.primary):
            await server.stop("fast")
        await asyncio.to_thread(shutil.rmtree, self.base, True)

    # --- replica state ----------------------------------------------------------------

    async def _streaming(self) -> bool:
        try:
            status = await self.replica.fetchval("SELECT status FROM pg_stat_wal_receiver")
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return status == "streaming"

    async def wait_streaming(self, timeout: float = START_TIMEOUT) -> float:
        """Wait until the replica's WAL receiver streams from the primary."""
        return await wait_for(
            self._streaming, "the replica to stream", timeout=timeout, alive=[self.replica.process]
        )

    async def primary_lsn(self) -> str:
        """The primary's WAL flushed so far (every committed write is at or before it)."""
        return str(await self.primary.fetchval("SELECT pg_current_wal_flush_lsn()::text"))

    async def replay_lsn(self) -> str | None:
        """How far the replica has applied WAL."""
        value = await self.replica.fetchval("SELECT pg_last_wal_replay_lsn()::text")
        return None if value is None else str(value)

    async def lag_bytes(self) -> int:
        """Bytes of WAL the primary has flushed and the replica not yet applied."""
        target = await self.primary_lsn()
        lag = await self.replica.fetchval(
            "SELECT pg_wal_lsn_diff($1::text::pg_lsn, pg_last_wal_replay_lsn())", target
        )
        return max(0, int(str(lag)))

    async def has_replayed(self, lsn: str) -> bool:
        done = await self.replica.fetchval(
            "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", lsn
        )
        return bool(done)

    async def has_received(self, lsn: str) -> bool:
        """Has the replica *received* (not necessarily applied) WAL up to ``lsn``?"""
        done = await self.replica.fetchval(
            "SELECT pg_last_wal_receive_lsn() >= $1::text::pg_lsn", lsn
        )
        return bool(done)

    async def wait_caught_up(self, timeout: float = 10.0) -> float:
        """Wait until the replica has applied everything the primary has flushed now."""
        target = await self.primary_lsn()
        return await wait_for(
            lambda: self.has_replayed(target),
            f"the replica to replay up to {target}",
            timeout=timeout,
            alive=[self.replica.process],
        )

    async def wait_received(self, timeout: float = 10.0) -> float:
        """Wait until the replica has received (not applied) what the primary has flushed."""
        target = await self.primary_lsn()
        return await wait_for(
            lambda: self.has_received(target),
            f"the replica to receive WAL up to {target}",
            timeout=timeout,
            alive=[self.replica.process],
        )

    # --- faults -----------------------------------------------------------------------

    async def replay_pause_state(self) -> str:
        """``not paused``, ``pause requested`` or ``paused`` (Postgres ≥ 14)."""
        return str(await self.replica.fetchval("SELECT pg_get_wal_replay_pause_state()"))

    async def pause_replay(self, timeout: float = 5.0) -> None:
        """Stop applying WAL on the replica (it keeps receiving it); wait until paused.

        From the moment the request returns, the startup process applies no new
        record; ``paused`` is reached when it next looks (at once when WAL is
        flowing, and within a moment otherwise).
        """
        await self.replica.fetchval("SELECT pg_wal_replay_pause()")

        async def paused() -> bool:
            return await self.replay_pause_state() == "paused"

        await wait_for(paused, "WAL replay to pause", timeout=timeout)

    async def resume_replay(self) -> None:
        await self.replica.fetchval("SELECT pg_wal_replay_resume()")

    async def stop_replica(self, mode: StopMode = "fast") -> None:
        """Stop the replica's postmaster by PID (``immediate``: as if it crashed)."""
        await self.replica.stop(mode)

    async def start_replica(self) -> float:
        """Start the replica again (same port, same data); wait until it streams."""
        started = time.monotonic()
        await self.replica.start()
        await self.wait_streaming()
        return time.monotonic() - started

    async def reset(self) -> None:
        """Back to normal for the next test: both running, replay on, replica caught up."""
        if not self.primary.running:
            await self.primary.start()
        if not self.replica.running:
            await self.start_replica()
        if await self.replay_pause_state() != "not paused":
            await self.resume_replay()
        await self.wait_streaming()
        await self.wait_caught_up()
