"""A real PgBouncer (the OS package) in transaction pooling mode, in front of a Postgres.

Its configuration and user list live in a temporary directory; it listens on
its own free port on 127.0.0.1 (no Unix socket), logs to stderr (captured in
``pgbouncer.log`` next to its configuration) and is stopped by PID. PgBouncer
refuses to run as root, so as root it runs as the servers' unprivileged user.

Every database name is passed through (``* = host=… port=…``): a client asking
PgBouncer for database ``X`` gets a server connection to ``X`` upstream. Client
auth is ``trust``; PgBouncer logs in upstream as the connecting user, with the
password from the upstream DSN when it has one. An upstream on a Unix socket
(``?host=/dir``, the embedded Postgres) works too: PgBouncer then runs as the
owner of that directory.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from binaries import require_binary
from processes import (
    RunAs,
    ServerProcess,
    free_port,
    make_owned_dir,
    server_user,
    servers_tempdir,
    wait_for,
)

__all__ = ["PgBouncer", "Upstream", "pgbouncer_version"]

# /usr/sbin is not on every user's PATH; Debian installs pgbouncer there.
SEARCH = (Path("/usr/sbin"), Path("/usr/local/sbin"))


class Upstream:
    """Where a Postgres DSN points: host (or Unix socket directory), port, user, password."""

    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        self.host = (query.get("host") or [parts.hostname or "127.0.0.1"])[0]
        self.port = int((query.get("port") or [str(parts.port or 5432)])[0])
        self.user = parts.username or "postgres"
        self.password = parts.password or ""


def pgbouncer_version(binary: Path) -> tuple[int, ...]:
    """``(1, 18, 0)`` for PgBouncer 1.18.0."""
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", out)
    if match is None:
        raise RuntimeError(f"unrecognised pgbouncer --version output: {out!r}")
    return tuple(int(g or 0) for g in match.groups())


def _run_as_for(upstream: Upstream) -> RunAs | None:
    """Who PgBouncer runs as: the servers' user; but for an upstream on a Unix socket in
    a private directory (the embedded Postgres's), that directory's owner, the one user
    who can reach the socket."""
    default = server_user()
    if default is None or not upstream.host.startswith("/"):
        return default
    try:
        owner = os.stat(upstream.host).st_uid
    except OSError:
        return default
    if owner == 0:
        return default
    entry = pwd.getpwuid(owner)
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class PgBouncer:
    """One PgBouncer process in front of ``upstream_dsn``'s server.

    ``dsn_for(dsn)`` is ``dsn`` (same database, user, password) through
    PgBouncer; ``dsn(database)`` names a database directly. ``settings``
    overrides or adds ``[pgbouncer]`` options (e.g. ``default_pool_size``, or
    ``max_prepared_statements`` on PgBouncer ≥ 1.21); ``version`` is the binary's.
    """

    def __init__(self, upstream_dsn: str, settings: dict[str, str] | None = None) -> None:
        self.binary = require_binary("pgbouncer", "pgbouncer", search=SEARCH)
        self.version = pgbouncer_version(self.binary)
        self.upstream = Upstream(upstream_dsn)
        self.run_as = _run_as_for(self.upstream)
        self.base = servers_tempdir("entitlements-pgbouncer-")
        make_owned_dir(self.base, self.run_as, 0o755)
        self.port = free_port()
        self.settings = settings or {}
        self.process = self._process()
        self.startup_seconds = 0.0

    def _config(self) -> str:
        up = self.upstream
        options = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(self.base / "userlist.txt"),
            "pool_mode": "transaction",
            "max_client_conn": "2000",
            "default_pool_size": "20",
            "ignore_startup_parameters": "extra_float_digits",
            # A client waiting for an unreachable upstream fails in 30 s, not 120.
            "query_wait_timeout": "30",
            "admin_users": up.user,
            "stats_users": up.user,
            **self.settings,
        }
        lines = [
            "[databases]",
            f"* = host={up.host} port={up.port}",
            "",
            "[pgbouncer]",
            *(f"{k} = {v}" for k, v in options.items()),
            "",
        ]
        return "\n".join(lines)

    def _process(self) -> ServerProcess:
        config = self.base / "pgbouncer.ini"
        config.write_text(self._config())
        users = self.base / "userlist.txt"
        users.write_text(f"{_quote(self.upstream.user)} {_quote(self.upstream.password)}\n")
        for f in (config, users):
            f.chmod(0o644)  # readable by the server user (trust auth: nothing secret here)
        return ServerProcess(
            "pgbouncer",
            [self.binary, config],
            self.base,
            run_as=self.run_as,
            stop_signal=signal.SIGTERM,  # 1.18: immediate shutdown (SIGINT waits for clients)
            death_signal=signal.SIGTERM,
        )

    def dsn(self, database: str, user: str | None = None) -> str:
        up = self.upstream
        who = user or up.user
        secret = f":{up.password}" if up.password and user is None else ""
        return f"postgresql://{who}{secret}@127.0.0.1:{self.port}/{database}"

    def dsn_for(self, dsn: str) -> str:
        """The same DSN (database, user, password, options) pointed at this PgBouncer."""
        parts = urlsplit(dsn)
        query = {k: v for k, v in parse_qs(parts.query).items() if k not in {"host", "port"}}
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, doseq=True)))

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.running

    async def _listening(self) -> bool:
        def probe() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        return await asyncio.to_thread(probe)

    async def start(self, timeout: float = 15.0) -> float:
        """Start it and wait until it listens; the seconds that took."""
        started = time.monotonic()
        for attempt in range(3):
            self.process.start()
            try:
                await wait_for(
                    self._listening,
                    f"PgBouncer on port {self.port}",
                    timeout=timeout,
                    alive=[self.process],
                )
                break
            except RuntimeError:
                if "in use" not in self.process.log_tail() or attempt == 2:
                    raise
                self.port = free_port()  # taken meanwhile: another port
                self.process = self._process()
        self.startup_seconds = time.monotonic() - started
        return self.startup_seconds

    async def stop(self) -> None:
        """Stop it by PID (server connections close with it)."""
        await asyncio.to_thread(self.process.stop)

    async def close(self) -> None:
        await self.stop()
        await asyncio.to_thread(shutil.rmtree, self.base, True)
