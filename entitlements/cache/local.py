"""The in-process cache (L1) and the change index that decides what is still valid.

Entries are grant sets (a resource's view, a user's own grants), each stamped
with the revision it was read at. Instead of hunting down every entry a write
affects (a label deal touches every track under it), the cache remembers the
revision at which each key last changed, as announced by the change feed, and
checks an entry against its keys on use: an entry is valid when nothing it
depends on changed after it was read. That check is a few dict look-ups, and
it also validates entries coming back from Redis.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from entitlements.domain.change import Change
from entitlements.domain.decision import CheckData

RESOURCE: Final = "r"
USER: Final = "u"

Key = tuple[str, str]


class ChangeIndex:
    """What changed, and when: the last revision per key since a floor.

    ``floor``: entries read before it are invalid whatever their keys (set by an
    'all' change, or when the index is compacted to bound its memory).
    ``revision``: every change up to here has been applied.
    ``fresh_at``: monotonic time of the last successful catch-up with the feed;
    cached answers are only served while it is within the staleness bound.
    """

    def __init__(
        self, *, max_keys: int = 200_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self.floor = 0
        self.revision = 0
        self.fresh_at = float("-inf")
        self._last: dict[Key, int] = {}

    def start(self, revision: int) -> None:
        """Begin at ``revision``: anything read before it is not trusted.

        Not fresh until the first ``apply``/``caught_up``: a worker replays the
        change log from here before it serves anything from a cache.
        """
        self.floor = max(self.floor, revision)
        self.revision = max(self.revision, revision)

    def apply(self, events: Iterable[Change], revision: int) -> int:
        """Record changes up to ``revision``; returns how many keys were invalidated."""
        n = 0
        for e in events:
            if e.kind == "all":
                self.floor = max(self.floor, e.revision)
                self._last.clear()
            elif e.kind == "resource":
                self._last[(RESOURCE, e.key)] = e.revision
            elif e.kind == "user":
                self._last[(USER, e.key)] = e.revision
            else:
                continue
            n += 1
        self.revision = max(self.revision, revision)
        self.fresh_at = self.clock()
        if len(self._last) > self.max_keys:
            # Bound memory: forget per-key history and distrust everything older.
            self.floor = self.revision
            self._last.clear()
        return n

    def caught_up(self, revision: int) -> None:
        """The feed had nothing new up to ``revision``: we are fresh as of now."""
        self.revision = max(self.revision, revision)
        self.fresh_at = self.clock()

    def is_fresh(self, bound: float) -> bool:
        return self.clock() - self.fresh_at <= bound

    def valid(self, kind: str, key: str, data: CheckData) -> bool:
        """True if nothing ``data`` depends on changed after it was read."""
        read_at = data.revision
        if read_at < self.floor:
            return False
        last = self._last
        if last.get((kind, key), 0) > read_at:
            return False
        if kind == RESOURCE:
            for ancestor in data.ancestors:
                if last.get((RESOURCE, ancestor), 0) > read_at:
                    return False
        return True


class LocalCache:
    """A bounded LRU of grant sets, validated against a ``ChangeIndex`` on every hit."""

    def __init__(self, index: ChangeIndex, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.index = index
        self.max_entries = max_entries
        self._entries: OrderedDict[Key, CheckData] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, kind: str, key: str) -> CheckData | None:
        k = (kind, key)
        data = self._entries.get(k)
        if data is None:
            return None
        if not self.index.valid(kind, key, data):
            del self._entries[k]
            return None
        self._entries.move_to_end(k)
        return data

    def put(self, kind: str, key: str, data: CheckData) -> None:
        k = (kind, key)
        current = self._entries.get(k)
        if current is not None and current.revision > data.revision:
            return  # never replace a newer read with an older one
        self._entries[k] = data
        self._entries.move_to_end(k)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def keys(self) -> Sequence[Key]:
        return list(self._entries)
