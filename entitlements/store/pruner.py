"""Keeping the change log bounded: each worker prunes it now and then, one at a time.

Every write records what it touched in ``changes``; nothing else ever removes a
row. The pruner deletes entries older than the retention and raises the log's
floor, so a reader asking from before it is told "everything changed"
(``PostgresChangeLog.changes_since``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from entitlements import metrics
from entitlements.errors import StoreUnavailableError
from entitlements.store.changes import PostgresChangeLog

log = logging.getLogger("entitlements.changes")

PRUNE_EVERY = 600.0
"""Seconds between prunes (±25 %, so workers started together spread out)."""


class ChangePruner:
    """Prunes the change log at start-up and then every ``every`` seconds, until stopped.

    ``retention`` 0 keeps the log forever (the pruner does not run).
    """

    def __init__(self, store: PostgresChangeLog, retention: float, *, every: float = PRUNE_EVERY):
        self.store = store
        self.retention = retention
        self.every = every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.retention > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="entitlements-change-pruner")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task}, timeout=5)

    async def prune(self) -> int:
        """One pass: returns how many entries went (0 when another worker is pruning)."""
        removed = await self.store.prune_changes(self.retention)
        if removed:
            metrics.CHANGES_PRUNED.inc(removed)
            log.info("pruned %d change-log entries older than %.0f s", removed, self.retention)
        return removed

    async def _run(self) -> None:
        while True:
            try:
                await self.prune()
            except StoreUnavailableError:
                pass  # Postgres is away: the next pass catches up
            except Exception:  # a background task must survive anything
                log.exception("pruning the change log failed; trying again later")
            await asyncio.sleep(self.every * random.uniform(0.75, 1.25))
