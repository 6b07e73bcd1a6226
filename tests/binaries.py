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


def postgres_bindirs() -> list[Path]:
    """Candidate directories holding one Postgres version's server binaries, best first.

    ``initdb`` on PATH (resolved: Debian links it from /usr/local/bin or wraps it),
    then ``pg_config --bindir``, then every ``/usr/lib/postgresql/<version>/bin``
    (Debian, Ubuntu; newest first) and ``/usr/pgsql-<version>/bin`` (RPM).
    """
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    from_pg_config = _pg_config_bindir()
    if from_pg_config is not None:
        candidates.append(from_pg_config)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    candidates.extend(debian)
    candidates.extend(sorted(Path("/usr").glob("pgsql-*/bin"), reverse=True))
    unique: list[Path] = []
    for c in candidates:
        if c not in unique:
            unique.append(c)
    return unique


def postgres_bindir() -> Path:
    """One directory with ``initdb``, ``postgres`` and ``pg_basebackup`` of the same version.

    The three must come from one installation: a replica built by another
    version's ``pg_basebackup`` does not start. Skips (fails under CI) naming the
    ``postgresql`` package when no such directory exists.
    """
    for directory in postgres_bindirs():
        if all(os.access(directory / tool, os.X_OK) for tool in POSTGRES_TOOLS):
            return directory
    missing(
        f"{', '.join(POSTGRES_TOOLS)} (one Postgres installation) not found: "
        "install the OS package 'postgresql' (apt-get install postgresql)"
    )
