"""Following the change log: Postgres LISTEN/NOTIFY with a polling backstop.

Every write records what it touched in ``changes`` and NOTIFYs. Each process
runs one ``ChangeFollower`` that reads the log after the last revision it saw
and hands the entries to its listeners (cache invalidation, revoked tokens).
A NOTIFY makes that immediate; the poll bounds the delay even if the LISTEN
connection was lost, so a worker is never staler than the poll interval.

LISTEN is session state: behind a transaction-mode pooler it must use a direct
connection (``dsn``: ``ENTITLEMENTS_DATABASE_LISTEN_URL``); with ``dsn=None`` the
follower only polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from entitlements.domain.model import Change
from entitlements.errors import StoreUnavailableError
from entitlements.store.changes import NOTIFY_CHANNEL, PostgresChangeLog
from entitlements.store.feed_share import (
    KEYS_LINE,
    MAX_LINE,
    FeedServer,
    changes_of,
    page_line,
    parse_line,
    private_directory,
    take_lead,
)
from entitlements.store.keys import KEYS_CHANNEL
from entitlements.store.pool import connect

log = logging.getLogger("entitlements.changes")

LISTEN_APPLICATION = "entitlements-listen"
"""The ``application_name`` of the LISTEN connection (``pg_stat_activity`` tells it apart)."""

PAGE = 20_000
STOP_WAIT = 1.0  # seconds per attempt to stop the follower's task
STOP_ATTEMPTS = 5

Listener = Callable[[Sequence[Change], int], Awaitable[None]]


class ChangeFollower:
    """Reads the change log after ``revision`` and dispatches it, forever, until stopped."""

    def __init__(
        self,
        store: PostgresChangeLog,
        dsn: str | None,
        *,
        poll_interval: float = 1.0,
        on_keys: Callable[[], Coroutine[Any, Any, None]] | None = None,
        share: Path | None = None,
    ) -> None:
        self.store = store
        # One follower per host (store.feed_share): the leader reads, siblings listen to it.
        self.share = share if share is not None and private_directory(share) else None
        self._server: FeedServer | None = None
        self.db_reads = 0
        """Pages this follower read from Postgres (a sibling reads none while it has a leader)."""
        self.dsn = dsn
        self.poll_interval = poll_interval
        self.on_keys = on_keys
        self.revision = 0
        self.listeners: list[Listener] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._advanced = asyncio.Condition()
        self._stopping = False

    @property
    def leading(self) -> bool:
        """Whether this follower reads the log for its host's siblings."""
        return self._server is not None

    def add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)

    async def start(self, revision: int) -> None:
        self.revision = revision
        self._task = asyncio.create_task(self._run(), name="entitlements-change-follower")

    async def follow_from(self, revision: int) -> None:
        """Replay the log after ``revision`` to the listeners, then follow it from there."""
        self.revision = revision
        await self.catch_up()
        await self.start(self.revision)

    async def stop(self) -> None:
        """Stop following; returns within a few seconds whatever the follower was doing."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            # A cancellation can be lost in a library's timeout helper (Python 3.11's
            # wait_for returns a result that arrived with it): the loop also ends on the
            # flag, and the cancel is repeated until the task is done.
            for _ in range(STOP_ATTEMPTS):
                task.cancel()
                done, _pending = await asyncio.wait({task}, timeout=STOP_WAIT)
                if done:
                    break
            else:
                log.error("change follower did not stop; leaving it behind")
        await self._close_listen()
        server, self._server = self._server, None
        if server is not None:
            await server.close()  # releases the lead: a sibling takes over

    async def catch_up(self) -> int:
        """Apply every change up to now; returns the revision reached."""
        async with self._lock:
            return await self._catch_up()

    async def _catch_up(self) -> int:
        while True:
            before = self.revision
            page = await self.store.changes_since(self.revision, limit=PAGE)
            self.db_reads += 1
            for listener in self.listeners:
                await listener(page.changes, page.reached)
            if self._server is not None:
                self._server.publish(page_line(before, max(before, page.reached), page.changes))
            if page.reached > self.revision:
                self.revision = page.reached
                async with self._advanced:
                    self._advanced.notify_all()
            if not page.more:
                return self.revision

    async def wait_past(self, revision: int, timeout: float) -> bool:
        """Wait until the follower has applied a revision after ``revision`` (or time out)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout), self._advanced:
                await self._advanced.wait_for(lambda: self.revision > revision)
        return self.revision > revision

    async def _run(self) -> None:
        while not self._stopping:
            if self.share is not None and self._server is None:
                lock = take_lead(self.share)
                if lock is None:
                    await self._follow_leader(self.share)
                    continue
                server = FeedServer(self.share, lock)
                try:
                    await server.start()
                except OSError as exc:
                    log.warning("cannot share the change feed on %s: %s", self.share, exc)
                    lock.close()
                    self.share = None
                else:
                    self._server = server
                    log.info("following the change feed for this host's workers")
            try:
                await self._ensure_listening()
                await self.catch_up()
            except StoreUnavailableError:
                await self._close_listen()
            except Exception:  # a follower must survive anything and keep trying
                log.exception("change follower failed; retrying")
                await self._close_listen()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            self._wake.clear()

    async def _ensure_listening(self) -> None:
        if self.dsn is None:
            return  # behind a pooler with no direct DSN: the poll alone follows the log
        if self._conn is not None and not self._conn.is_closed():
            return
        try:
            self._conn = await connect(self.dsn, timeout=5.0, application_name=LISTEN_APPLICATION)
            await self._conn.add_listener(NOTIFY_CHANNEL, self._notified)
            await self._conn.add_listener(KEYS_CHANNEL, self._keys_notified)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            await self._close_listen()

    def _notified(self, *args: object) -> None:
        self._wake.set()

    def _keys_notified(self, *args: object) -> None:
        if self._server is not None:
            self._server.publish(KEYS_LINE)
        if self.on_keys is not None:
            task = asyncio.get_running_loop().create_task(self.on_keys())
            self._tasks.add(task)  # keep a reference until done (asyncio holds only weak ones)
            task.add_done_callback(self._tasks.discard)

    async def _follow_leader(self, path: Path) -> None:
        """Apply what the host's leader publishes until it goes away (then the caller
        races for the lead)."""
        try:
            reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE)
        except OSError:
            await asyncio.sleep(0.05)  # the leader is starting, or has just gone
            return
        try:
            while not self._stopping:
                # The leader writes at least every poll interval: silence means it hangs.
                async with asyncio.timeout(max(5.0, 5 * self.poll_interval)):
                    line = await reader.readline()
                if not line:
                    return
                message = parse_line(line)
                if "keys" in message:
                    self._keys_notified()
                else:
                    await self._apply_shared(message)
        except (OSError, ValueError, KeyError, TypeError, TimeoutError, StoreUnavailableError):
            log.debug("the shared change feed broke off; following again", exc_info=True)
        except Exception:  # a follower must survive anything and keep trying
            log.exception("following the shared change feed failed; retrying")
        finally:
            writer.close()

    async def _apply_shared(self, message: dict[str, Any]) -> None:
        async with self._lock:
            if int(message["from"]) > self.revision:
                await self._catch_up()  # a gap (connected late): read it ourselves, once
            reached = max(int(message["to"]), self.revision)
            changes = changes_of(message, self.revision)
            for listener in self.listeners:
                await listener(changes, reached)
            if reached > self.revision:
                self.revision = reached
                async with self._advanced:
                    self._advanced.notify_all()

    async def _close_listen(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                async with asyncio.timeout(2.0):
                    await conn.close()
            except Exception:
                conn.terminate()
