"""The SDK's local decision cache: bounded, time-exact, dropped by the change feed.

Keyed by ``(subject, roles, resource, action, territory)`` — everything the
service's answer depends on besides time and data. Rules:

- An entry never outlives the decision's ``valid_until`` (the next instant the
  answer could change by time alone) nor ``max_age``.
- An entry is served only while it is younger than ``staleness`` *or* the
  change feed has answered within ``staleness`` (so every change up to then
  has been applied). Without a feed, entries simply live ``staleness``
  seconds. Either way a revoked right is never served from here for longer
  than ``staleness`` after the revoke reached the service's change log.
- The feed drops exactly what it names: ``user`` → that subject's entries;
  ``all`` → everything; ``token`` → the jti is remembered as revoked. A
  ``resource`` change applies to that resource *and its descendants*: the
  service sends each decision's ``ancestors``, so the entries for that resource
  and those whose resource sits under it go, and nothing else. For a decision
  without ``ancestors`` (a service older than this SDK) descendants are
  invisible, so such entries of another type than the changed resource go too
  (a label or release changed while tracks are cached). Same-type nesting (a
  release inside a release) is assumed absent for them unless
  ``nested_same_type=True``, which makes every resource change drop them all.
- A decision computed at a revision older than the newest change already
  applied is not stored: it may predate that change.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ._models import Decision

__all__ = ["CacheKey", "DecisionCache"]

#: (subject, roles, resource, action, territory)
CacheKey = tuple[str, tuple[str, ...], str, str, str]


@dataclass(slots=True)
class _Entry:
    decision: Decision
    stored_at: float
    expires_at: float


class DecisionCache:
    """Bounded LRU of decisions with change-feed invalidation. Thread-safe.

    ``clock`` is monotonic seconds, ``wallclock`` epoch seconds (both injectable
    for tests). ``maxsize=0`` turns caching off.
    """

    def __init__(
        self,
        maxsize: int,
        *,
        max_age: float,
        staleness: float,
        nested_same_type: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.maxsize = maxsize
        self.max_age = max_age
        self.staleness = staleness
        self.nested_same_type = nested_same_type
        self._clock = clock
        self._wallclock = wallclock
        self._lock = threading.Lock()
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._by_subject: dict[str, set[CacheKey]] = {}
        self._by_resource: dict[str, set[CacheKey]] = {}
        #: Entries whose decision came without ``ancestors``, by resource type.
        self._blind: dict[str, set[CacheKey]] = {}
        #: Revision of the change feed applied so far; None until the feed is followed.
        self.cursor: int | None = None
        self._following = False
        self._feed_ok_at: float | None = None
        #: Token ids the feed reported revoked.
        self.revoked_jtis: set[str] = set()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    # -- lookups -----------------------------------------------------------------------

    def get(
        self, key: CacheKey, min_revision: int | None = None, *, count: bool = True
    ) -> Decision | None:
        """The remembered decision for ``key`` if it may still be served, else None.
        ``count=False`` leaves the hit/miss statistics alone."""
        if not self.maxsize:
            return None
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if (
                entry is None
                or entry.expires_at <= now
                or (min_revision is not None and entry.decision.revision < min_revision)
                or (now - entry.stored_at > self.staleness and not self._fresh(now))
            ):
                self.misses += count
                return None
            self._entries.move_to_end(key)
            self.hits += count
            return entry.decision

    def feed_fresh(self) -> bool:
        """Whether the change feed answered (caught up) within the staleness bound."""
        with self._lock:
            return self._fresh(self._clock())

    def _fresh(self, now: float) -> bool:
        return self._feed_ok_at is not None and now - self._feed_ok_at <= self.staleness

    # -- writes ------------------------------------------------------------------------

    def follow(self) -> None:
        """From now on entries may live ``max_age`` (the feed will drop them)."""
        with self._lock:
            self._following = True

    def unfollow(self) -> None:
        """The feed is gone for good: entries live ``staleness`` again."""
        with self._lock:
            self._following = False
            self._feed_ok_at = None

    def put(self, key: CacheKey, decision: Decision) -> bool:
        """Remember ``decision``; False when it must not be cached (see module docstring).

        While following the feed, the first decision stored sets the feed's
        starting revision: every change after it will be seen.
        """
        if not self.maxsize:
            return False
        now = self._clock()
        expires = now + (self.max_age if self._following else self.staleness)
        if decision.valid_until is not None:
            expires = min(expires, now + decision.valid_until.timestamp() - self._wallclock())
        if expires <= now:
            return False
        with self._lock:
            if self._following:
                if self.cursor is None:
                    self.cursor = decision.revision
                elif decision.revision < self.cursor:
                    return False
            self._remove(key)
            self._entries[key] = _Entry(decision, now, expires)
            self._index(key, decision.ancestors)
            while len(self._entries) > self.maxsize:
                self._remove(next(iter(self._entries)))
        return True

    def clear(self) -> None:
        """Drop every decision."""
        with self._lock:
            self._clear()

    def apply(
        self, changes: Iterable[tuple[int, str, str]], revision: int, *, caught_up: bool
    ) -> int:
        """Apply one page of the change feed (``(revision, kind, key)`` rows), advance the
        cursor to ``revision``; ``caught_up`` marks the feed fresh now. Returns how many
        entries were dropped."""
        now = self._clock()
        dropped = 0
        with self._lock:
            before = len(self._entries)
            for _rev, kind, key in changes:
                if kind == "user":
                    for k in list(self._by_subject.get(key, ())):
                        self._remove(k)
                elif kind == "resource":
                    self._drop_resource(key)
                elif kind == "token":
                    self.revoked_jtis.add(key)
                else:  # "all", or a kind this SDK does not know: be safe
                    self._clear()
            dropped = before - len(self._entries)
            if self.cursor is None or revision > self.cursor:
                self.cursor = revision
            if caught_up:
                self._feed_ok_at = now
        return dropped

    def apply_page(self, body: object) -> tuple[bool, bool]:
        """Apply one ``GET /v1/changes`` answer; returns ``(more, empty)``. A page that is
        not exactly the documented shape raises ValueError and changes nothing."""
        if not isinstance(body, dict):
            raise ValueError("a change page must be an object")
        revision, changes, more = body.get("revision"), body.get("changes"), body.get("more")
        if isinstance(revision, bool) or not isinstance(revision, int):
            raise ValueError("bad 'revision'")
        if not isinstance(changes, list) or not isinstance(more, bool):
            raise ValueError("bad 'changes' or 'more'")
        rows: list[tuple[int, str, str]] = []
        for c in changes:
            if not isinstance(c, dict):
                raise ValueError("bad change")
            rev, kind, key = c.get("revision"), c.get("kind"), c.get("key")
            if not isinstance(rev, int) or not isinstance(kind, str) or not isinstance(key, str):
                raise ValueError("bad change")
            rows.append((rev, kind, key))
        self.apply(rows, revision, caught_up=not more)
        return more, not rows

    # -- internals (lock held) ---------------------------------------------------------

    def _drop_resource(self, resource: str) -> None:
        for k in list(self._by_resource.get(resource, ())):
            self._remove(k)
        if not self._blind:
            return
        kind = resource.split(":", 1)[0]
        # Entries without ancestors: anything of another type may sit under it.
        for t in list(self._blind):
            if self.nested_same_type or t != kind:
                for k in list(self._blind.get(t, ())):
                    self._remove(k)

    def _clear(self) -> None:
        self._entries.clear()
        self._by_subject.clear()
        self._by_resource.clear()
        self._blind.clear()

    def _index(self, key: CacheKey, ancestors: tuple[str, ...] | None) -> None:
        subject, _roles, resource, _action, _territory = key
        _add(self._by_subject, subject, key)
        _add(self._by_resource, resource, key)
        if ancestors is None:
            _add(self._blind, resource.split(":", 1)[0], key)
        else:
            for a in ancestors:
                _add(self._by_resource, a, key)

    def _remove(self, key: CacheKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        subject, _roles, resource, _action, _territory = key
        _discard(self._by_subject, subject, key)
        _discard(self._by_resource, resource, key)
        ancestors = entry.decision.ancestors
        if ancestors is None:
            _discard(self._blind, resource.split(":", 1)[0], key)
        else:
            for a in ancestors:
                _discard(self._by_resource, a, key)


def _add(index: dict[str, set[CacheKey]], name: str, key: CacheKey) -> None:
    index.setdefault(name, set()).add(key)


def _discard(index: dict[str, set[CacheKey]], name: str, key: CacheKey) -> None:
    keys = index.get(name)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[name]
