"""One change-feed follower per host: the workers of a host share it over a Unix socket.

Without sharing, every worker LISTENs on the primary (one connection each) and
polls the change log. With ``ENTITLEMENTS_FEED_SOCKET`` (which ``entitlements serve
--workers N`` sets for its workers), the first worker to take an exclusive
``flock`` on ``<socket>.lock`` becomes the host's *leader*: it alone LISTENs and
reads the log, and after every read (every NOTIFY, and every poll interval even
when nothing changed) it writes the page to each sibling connected to its socket,
one JSON line per page::

    {"from": 41, "to": 42, "changes": [[42, "resource", "label:acme"]]}
    {"keys": 1}                      (the signing keys changed)

A sibling applies each page to its caches exactly as if it had read it itself;
a page that starts after the sibling's revision (it connected late, or missed
lines) makes it read the gap from Postgres once. When the leader goes away (its
process ends: the kernel drops the lock and the socket closes), the siblings see
the end of the stream and race for the lock: one becomes the leader, the others
connect to it. Until then a sibling's caches go stale and, past the staleness
bound, checks read Postgres (fail safe, never stale).

The socket's directory must be private to the service's user (0700, ours), since
whatever a sibling reads from it decides what its caches may keep; otherwise
sharing is refused and each worker follows on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Final

import orjson

from entitlements.domain.model import Change

log = logging.getLogger("entitlements.changes")

MAX_BUFFERED: Final = 8 << 20
"""A sibling that lets this much go unread is dropped (it reconnects and reads the gap)."""

MAX_LINE: Final = 64 << 20
"""The longest page line a sibling accepts (a page holds at most ~20k short entries)."""


def private_directory(path: Path) -> bool:
    """Create ``path``'s directory (0700) if needed; True if it is ours and private."""
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
    except OSError as exc:
        log.warning("cannot use %s for the shared change feed: %s", directory, exc)
        return False
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "%s is not private to this user (owner and mode 0700 needed): each worker"
            " follows the change feed on its own",
            directory,
        )
        return False
    return True


def take_lead(path: Path) -> IO[bytes] | None:
    """The host's leadership (an exclusive ``flock`` on ``<path>.lock``), or None if a
    sibling holds it. Held for as long as the returned file stays open."""
    lock = open(path.with_name(path.name + ".lock"), "ab")  # noqa: SIM115 - held open
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return None
    return lock


def page_line(before: int, reached: int, changes: Sequence[Change]) -> bytes:
    return (
        orjson.dumps(
            {
                "from": before,
                "to": reached,
                "changes": [[c.revision, c.kind, c.key] for c in changes],
            }
        )
        + b"\n"
    )


KEYS_LINE: Final = b'{"keys":1}\n'


class FeedServer:
    """The leader's side: every sibling connected to the socket gets every line."""

    def __init__(self, path: Path, lock: IO[bytes]) -> None:
        self.path = path
        self.lock = lock
        self._server: asyncio.AbstractServer | None = None
        self._siblings: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a dead leader's socket: we hold the lock now
        self._server = await asyncio.start_unix_server(self._connected, path=str(self.path))
        os.chmod(self.path, 0o600)

    @property
    def siblings(self) -> int:
        return len(self._siblings)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._siblings.add(writer)
        try:
            await reader.read()  # siblings never write: this returns when they go
        except (ConnectionError, OSError):
            pass
        finally:
            self._siblings.discard(writer)
            writer.close()

    def publish(self, line: bytes) -> None:
        for writer in list(self._siblings):
            if writer.is_closing():
                self._siblings.discard(writer)
                continue
            if writer.transport.get_write_buffer_size() > MAX_BUFFERED:
                log.warning("a worker stopped reading the shared change feed; dropping it")
                self._siblings.discard(writer)
                writer.close()
                continue
            writer.write(line)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._siblings):
            writer.close()
        self._siblings.clear()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.lock.close()  # releases the flock: a sibling takes over


def parse_line(line: bytes) -> dict[str, Any]:
    """One line from the leader; ValueError if it is not one."""
    message = orjson.loads(line)
    if not isinstance(message, dict):
        raise ValueError("not an object")
    return message


def changes_of(message: dict[str, Any], after: int) -> list[Change]:
    """The entries of a page line after revision ``after``."""
    return [
        Change(int(revision), str(kind), str(key))
        for revision, kind, key in message["changes"]
        if int(revision) > after
    ]


__all__ = [
    "KEYS_LINE",
    "MAX_LINE",
    "FeedServer",
    "changes_of",
    "page_line",
    "parse_line",
    "private_directory",
    "take_lead",
]
