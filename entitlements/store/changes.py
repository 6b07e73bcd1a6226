"""The revision and the change log: bumping the revision, recording what a write
touched, reading the log after a revision, and pruning it.

Every write bumps the global revision as its last statement (``bump_revision``):
the revision row's lock then orders commits by revision, and the NOTIFY wakes
every process's follower.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import asyncpg

from entitlements.domain.model import Change, Grant
from entitlements.store.locks import AdvisoryLock
from entitlements.store.pool import OnPool, translate_errors
from entitlements.store.results import MAX_CHANGE_KEYS, ChangePage

NOTIFY_CHANNEL: Final = "entitlements_changes"

PRUNE_BATCH: Final = 50_000
"""Change-log rows looked at (and at most deleted) per pruning transaction."""

# One page of the change feed: the revisions of the first $2 entries after $1 (and
# after the floor: older entries may be gone), each revision whole.
_CHANGES_SINCE_SQL: Final = """
SELECT r.value AS current, r.changes_floor AS floor, p.last, p.n, c.revision, c.kind, c.key
FROM ent_revision r
CROSS JOIN LATERAL (
    SELECT max(x.revision) AS last, count(*) AS n FROM (
        SELECT revision FROM changes WHERE revision > greatest($1, r.changes_floor)
        ORDER BY revision LIMIT $2) x
) p
LEFT JOIN LATERAL (
    SELECT revision, kind, key FROM changes
    WHERE revision > greatest($1, r.changes_floor) AND revision <= p.last
    ORDER BY revision, kind, key
) c ON true
"""

# Where to cut the log: the last revision before the first entry recorded within
# the retention, looking at one page after the floor. A full page of old entries
# may end inside a revision: that revision waits for the next page. NULL: nothing
# to prune. Revisions only grow with time (a write takes its revision last, under
# ent_revision's row lock), so what is cut is a prefix of old entries.
_PRUNE_CUT_SQL: Final = """
WITH f AS (SELECT changes_floor AS floor FROM ent_revision),
page AS (
    SELECT c.revision, c.created_at < now() - make_interval(secs => $1) AS old
    FROM changes c, f WHERE c.revision > f.floor
    ORDER BY c.revision, c.kind, c.key LIMIT $2
),
s AS (
    SELECT min(revision) FILTER (WHERE NOT old) AS first_new, max(revision) AS last,
           count(*) AS n
    FROM page
),
cut AS (
    SELECT CASE WHEN s.first_new IS NOT NULL THEN s.first_new - 1
                WHEN s.n < $2 THEN s.last
                ELSE s.last - 1 END AS revision
    FROM s
)
SELECT cut.revision FROM cut, f WHERE cut.revision > f.floor
"""

REVISION_SQL: Final = "SELECT value FROM ent_revision"


async def read_revision(conn: Any) -> int:
    """The current revision, read on ``conn`` (a connection or the pool)."""
    return int(await conn.fetchval(REVISION_SQL))


async def bump_revision(conn: asyncpg.Connection, changes: Iterable[tuple[str, str]]) -> int:
    """Advance the global revision and record what it touched. Call last in a write transaction."""
    revision: int = await conn.fetchval("UPDATE ent_revision SET value = value + 1 RETURNING value")
    rows = sorted(set(changes))
    if len(rows) > MAX_CHANGE_KEYS:
        rows = [("all", "*")]
    if rows:
        await conn.executemany(
            "INSERT INTO changes (revision, kind, key) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            [(revision, kind, key) for kind, key in rows],
        )
    await conn.execute(f"SELECT pg_notify('{NOTIFY_CHANNEL}', $1)", str(revision))
    return revision


def grant_changes(grants: Iterable[Grant]) -> set[tuple[str, str]]:
    """The change-feed entries a write to these grants produces."""
    out: set[tuple[str, str]] = set()
    for g in grants:
        if g.subject.startswith("user:"):
            out.add(("user", g.subject[5:]))
        else:
            out.add(("resource", g.resource))
    return out


class PostgresChangeLog(OnPool):
    """The revision and the change log (``ChangeFeed`` and the pruner's side of it)."""

    async def revision(self) -> int:
        async with translate_errors():
            return await read_revision(self.pool)

    async def changes_since(self, revision: int, limit: int = 1000) -> ChangePage:
        """Changes after ``revision``, oldest first, in whole revisions: the revisions of
        the first ``limit`` entries of the log, each complete (a revision holds at most
        MAX_CHANGE_KEYS entries, so a page holds fewer than ``limit + MAX_CHANGE_KEYS``).
        A page never ends inside a revision, so a reader always moves on.

        Asked from before the log's floor (older entries were pruned), the page starts
        with ``Change(floor, "all", "*")``: everything up to the floor may have changed.
        """
        async with translate_errors():
            rows = await self.pool.fetch(_CHANGES_SINCE_SQL, revision, limit)
        head = rows[0]
        current, floor = int(head["current"]), int(head["floor"])
        found = [
            Change(r["revision"], r["kind"], r["key"]) for r in rows if r["revision"] is not None
        ]
        more = head["n"] == limit
        reached = int(head["last"]) if more else current
        if revision < floor:
            found.insert(0, Change(floor, "all", "*"))
        return ChangePage(found, max(reached, revision), more)

    async def prune_changes(self, older_than: float, *, batch: int = PRUNE_BATCH) -> int:
        """Delete change-log entries recorded more than ``older_than`` seconds ago (whole
        revisions, oldest first, at most ``batch`` rows per transaction) and raise the
        floor past them. Returns how many entries went. One pruner at a time: while
        another prunes, this returns at once."""
        if batch <= MAX_CHANGE_KEYS:
            raise ValueError(f"batch must exceed one revision's most entries ({MAX_CHANGE_KEYS})")
        removed = 0
        async with translate_errors(), self.pool.acquire() as conn:
            while True:
                async with conn.transaction():
                    if not await conn.fetchval(
                        "SELECT pg_try_advisory_xact_lock($1)", AdvisoryLock.PRUNE
                    ):
                        return removed
                    cut = await conn.fetchval(_PRUNE_CUT_SQL, float(older_than), batch)
                    if cut is None:
                        return removed
                    status = await conn.execute("DELETE FROM changes WHERE revision <= $1", cut)
                    await conn.execute("UPDATE ent_revision SET changes_floor = $1", cut)
                removed += int(status.rsplit(" ", 1)[1])


__all__ = [
    "MAX_CHANGE_KEYS",
    "NOTIFY_CHANNEL",
    "PRUNE_BATCH",
    "ChangePage",
    "PostgresChangeLog",
    "bump_revision",
    "grant_changes",
    "read_revision",
]
