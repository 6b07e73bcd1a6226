"""The change feed as callers read it: what changed after a revision, as a long poll.

The feed names users (whose own grants changed) and revoked token ids, so only
trusted services read it (``SCOPE_CHECK_ANY``).
"""

from __future__ import annotations

from typing import Final, Protocol

from entitlements.service.access import SCOPE_CHECK_ANY, require_scope
from entitlements.service.ports import ChangeFeed
from entitlements.store.results import ChangePage
from entitlements_client import VerifiedToken

MAX_WAIT: Final = 30.0
"""The longest a caller may wait for something new (seconds)."""
MAX_PAGE: Final = 10_000


class Follower(Protocol):
    """Whatever tracks the newest revision in this process (the change follower)."""

    async def wait_past(self, revision: int, timeout: float) -> bool: ...


class ChangeFeedService:
    """Pages of the change log, waiting (without a query) until something is new."""

    scope = SCOPE_CHECK_ANY

    def __init__(self, log: ChangeFeed, follower: Follower) -> None:
        self.log = log
        self.follower = follower

    def authorize(self, caller: VerifiedToken) -> None:
        require_scope(caller, self.scope)

    async def since(
        self, caller: VerifiedToken, revision: int, *, wait: float, limit: int
    ) -> ChangePage:
        """What changed after ``revision``, waiting up to ``wait`` seconds for it."""
        self.authorize(caller)
        if wait > 0:
            # The in-process follower already tracks the newest revision (NOTIFY-driven), so
            # waiting costs no database query; the feed itself is read once something is new.
            await self.follower.wait_past(revision, min(wait, MAX_WAIT))
        return await self.log.changes_since(revision, limit=limit)


__all__ = ["MAX_WAIT", "ChangeFeedService", "Follower"]
