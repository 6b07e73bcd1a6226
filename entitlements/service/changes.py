"""The change feed as callers read it: what changed after a revision, as a long poll.

The feed names users (whose own grants changed) and revoked token ids, so only
trusted services read it (``SCOPE_CHECK_ANY``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from entitlements.domain.change import Change
from entitlements.service.access import SCOPE_CHECK_ANY, require_scope
from entitlements_client import VerifiedToken

MAX_WAIT: Final = 30.0
"""The longest a caller may wait for something new (seconds)."""
MAX_PAGE: Final = 10_000


class FeedPage(Protocol):
    """A page of the change log: its entries, the revision it reaches, whether more follow."""

    @property
    def changes(self) -> Sequence[Change]: ...

    @property
    def reached(self) -> int: ...

    @property
    def more(self) -> bool: ...


class ChangeLog(Protocol):
    async def changes_since(self, revision: int, limit: int = ...) -> FeedPage: ...


class Follower(Protocol):
    async def wait_past(self, revision: int, timeout: float) -> bool: ...


class ChangeFeedService:
    """Pages of the change log, waiting (without a query) until something is new."""

    scope = SCOPE_CHECK_ANY

    def __init__(self, log: ChangeLog, follower: Follower) -> None:
        self.log = log
        self.follower = follower

    def authorize(self, caller: VerifiedToken) -> None:
        require_scope(caller, self.scope)

    async def since(
        self, caller: VerifiedToken, revision: int, *, wait: float, limit: int
    ) -> FeedPage:
        """What changed after ``revision``, waiting up to ``wait`` seconds for it."""
        self.authorize(caller)
        if wait > 0:
            # The in-process follower already tracks the newest revision (NOTIFY-driven), so
            # waiting costs no database query; the feed itself is read once something is new.
            await self.follower.wait_past(revision, min(wait, MAX_WAIT))
        return await self.log.changes_since(revision, limit=limit)


__all__ = ["MAX_WAIT", "ChangeFeedService", "FeedPage"]
