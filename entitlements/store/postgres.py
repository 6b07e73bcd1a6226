"""The Postgres store (asyncpg): the truth for grants, resources and revisions.

Reads used by checks are single statements, so each sees one snapshot and can
report the revision that snapshot holds. Writes bump the global revision as
their last statement; the revision row's lock then orders commits by revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from entitlements.domain.grant import GRANT_COLUMN_LIST, grant_from_record
from entitlements.domain.model import (
    MAX_DEPTH,
    Change,
    CheckData,
    Grant,
    Resource,
    grant_row,
    resource_type,
)
from entitlements.errors import (
    FieldError,
    InvalidInputError,
    NotFoundError,
    StoreUnavailableError,
)
from entitlements.store import schema
from entitlements.store.locks import AdvisoryLock
from entitlements.store.reconnect_log import quiet_reconnect_failures

log = logging.getLogger("entitlements")

# MAX_DEPTH (domain.model) counts levels: a path has at most MAX_DEPTH resources, so a
# resource has at most MAX_DEPTH - 1 ancestors above it in a row. The walks up for
# checks go MAX_DEPTH steps (depth 0 is the resource): one step beyond any legal path,
# so finding anything at depth MAX_DEPTH means the walk was cut off (``too_deep``).

_GRANT_COLUMNS = GRANT_COLUMN_LIST  # the grant's fields, in its declaration's order

# Connection-level failures: Postgres is down, restarting or unreachable.
_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


@dataclass(frozen=True, slots=True)
class WriteResult:
    revision: int
    changed: bool
    created: bool = False


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


@contextlib.asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Turn connection-level asyncpg failures into ``StoreUnavailableError``."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StoreUnavailableError() from exc


MAX_CHANGE_KEYS = 10_000
"""A write touching more keys than this records one ('all', '*') change: caches drop everything."""


@dataclass(frozen=True, slots=True)
class ChangePage:
    """A page of the change log: its entries, the revision it reaches (every change up
    to it is in this page or an earlier one), and whether more follow at once."""

    changes: list[Change]
    reached: int
    more: bool


# One page of the change feed: the revisions of the first $2 entries after $1 (and
# after the floor: older entries may be gone), each revision whole.
_CHANGES_SINCE_SQL = """
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

PRUNE_BATCH = 50_000
"""Change-log rows looked at (and at most deleted) per pruning transaction."""

# Where to cut the log: the last revision before the first entry recorded within
# the retention, looking at one page after the floor. A full page of old entries
# may end inside a revision: that revision waits for the next page. NULL: nothing
# to prune. Revisions only grow with time (a write takes its revision last, under
# ent_revision's row lock), so what is cut is a prefix of old entries.
_PRUNE_CUT_SQL = """
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
    await conn.execute("SELECT pg_notify('entitlements_changes', $1)", str(revision))
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


class PostgresStore:
    """Grants, resources, revisions and the change log in Postgres."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        timeout: float = 5.0,
        apply_schema: bool = True,
    ) -> PostgresStore:
        """Connect, and apply ``schema.sql`` (idempotent) unless told not to."""
        quiet_reconnect_failures()
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                command_timeout=timeout,
                timeout=timeout,
                init=_init_connection,
                # A restarted Postgres leaves dead sockets in the pool; recycle idle ones.
                max_inactive_connection_lifetime=60.0,
                # The check reads are planned in ~0.2 ms and run in ~0.08 ms; their generic
                # plan is the good one, so plan once per connection, not per check. Every
                # query here is written to have a good generic plan (no "$1 IS NULL OR").
                server_settings={"plan_cache_mode": "force_generic_plan"},
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailableError(
                f"cannot connect to Postgres: {type(exc).__name__}"
            ) from exc
        store = cls(pool)
        if apply_schema:
            async with translate_errors():
                await schema.apply_schema(pool)
        return store

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> int:
        async with translate_errors():
            return int(await self.pool.fetchval("SELECT value FROM ent_revision"))

    revision = ping

    # --- reads for checks -------------------------------------------------

    # One index probe per (ancestor, subject) pair, equality on both columns, kept a
    # parameterized nested loop (OFFSET 0): the cost is bounded by ancestors times subjects,
    # never by how many deals or purchases a resource has. Views (every subject that is
    # not one user) read the range subject < 'user:' of the same index (schema.sql).
    _ANCESTORS = f"""
        WITH RECURSIVE anc(id, depth) AS (
            SELECT r COLLATE "C", 0 FROM unnest($1::text[]) AS r
            UNION
            SELECT p.parent, a.depth + 1
            FROM anc a JOIN resource_parents p ON p.child = a.id
            WHERE a.depth < {MAX_DEPTH}
        ), ids AS (SELECT DISTINCT id AS rid FROM anc)
        SELECT (SELECT value FROM ent_revision) AS revision,
               (SELECT array_agg(rid) FROM ids) AS ancestors,
               (SELECT max(depth) FROM anc) >= {MAX_DEPTH} AS too_deep,
               g.*
        FROM (SELECT 1) one
    """
    _CHECK_SQL = (
        _ANCESTORS
        + f"""
        LEFT JOIN LATERAL (
            SELECT x.* FROM ids CROSS JOIN unnest($2::text[]) AS s(subj)
            CROSS JOIN LATERAL (
                SELECT {_GRANT_COLUMNS} FROM grants
                WHERE resource = ids.rid AND subject = s.subj OFFSET 0
            ) x
        ) g ON true
    """
    )
    _VIEW_SQL = (
        _ANCESTORS
        + f"""
        LEFT JOIN LATERAL (
            SELECT x.* FROM ids CROSS JOIN LATERAL (
                SELECT {_GRANT_COLUMNS} FROM grants
                WHERE resource = ids.rid AND subject < 'user:' OFFSET 0
            ) x
        ) g ON true
    """
    )

    async def load_check(self, resource: str, subjects: Sequence[str]) -> CheckData:
        """The resource's ancestors and every grant on them for these subjects, in one snapshot."""
        async with translate_errors():
            rows = await self.pool.fetch(self._CHECK_SQL, [resource], list(subjects))
        return _check_data(rows)

    async def load_resource_view(self, resource: str) -> CheckData:
        """Ancestors and the grants on them for every subject that is not one user.

        This is what a resource contributes to any caller's check, so it is the
        unit the cache keeps per resource.
        """
        async with translate_errors():
            rows = await self.pool.fetch(self._VIEW_SQL, [resource])
        return _check_data(rows)

    async def load_user_grants(self, user_id: str) -> CheckData:
        """Every grant whose subject is this one user (purchases, personal deals)."""
        async with translate_errors():
            rows = await self.pool.fetch(
                f"""SELECT (SELECT value FROM ent_revision) AS revision, NULL::text[] AS ancestors,
                           false AS too_deep, g.*
                    FROM (SELECT 1) one LEFT JOIN LATERAL (
                        SELECT {_GRANT_COLUMNS} FROM grants WHERE subject = $1
                    ) g ON true""",
                f"user:{user_id}",
            )
        return _check_data(rows)

    async def load_checks(
        self, resources: Sequence[str], subjects: Sequence[str] | None
    ) -> tuple[int, dict[str, CheckData]]:
        """``load_check`` for many resources in one round trip (batch checks, listing).

        ``subjects=None`` reads every grant that is not one user's: the
        resource views the cache keeps.
        """
        unique = sorted(set(resources))
        probe = (
            f"""SELECT x.* FROM unnest($2::text[]) AS s(subj) CROSS JOIN LATERAL (
                    SELECT {_GRANT_COLUMNS} FROM grants
                    WHERE resource = pairs.id AND subject = s.subj OFFSET 0) x"""
            if subjects is not None
            else f"""SELECT {_GRANT_COLUMNS} FROM grants
                    WHERE resource = pairs.id AND subject < 'user:' OFFSET 0"""
        )
        args: list[Any] = [unique] if subjects is None else [unique, list(subjects)]
        async with translate_errors():
            rows = await self.pool.fetch(
                f"""
                WITH RECURSIVE anc(root, id, depth) AS (
                    SELECT r COLLATE "C", r COLLATE "C", 0 FROM unnest($1::text[]) AS r
                    UNION
                    SELECT a.root, p.parent, a.depth + 1
                    FROM anc a JOIN resource_parents p ON p.child = a.id
                    WHERE a.depth < {MAX_DEPTH}
                ), pairs AS (SELECT DISTINCT root, id FROM anc)
                SELECT (SELECT value FROM ent_revision) AS revision,
                       ARRAY(SELECT DISTINCT root FROM anc WHERE depth = {MAX_DEPTH}) AS too_deep,
                       pairs.root, pairs.id AS ancestor, g.*
                FROM pairs LEFT JOIN LATERAL ({probe}) g ON true
                """,
                *args,
            )
        revision = int(rows[0]["revision"]) if rows else await self.revision()
        too_deep = set(rows[0]["too_deep"]) if rows else set()
        ancestors: dict[str, set[str]] = {r: {r} for r in unique}
        grants: dict[str, list[Grant]] = {r: [] for r in unique}
        for row in rows:
            ancestors[row["root"]].add(row["ancestor"])
            if row["id"] is not None:
                grants[row["root"]].append(grant_from_record(row))
        return revision, {
            r: CheckData(revision, frozenset(ancestors[r]), tuple(grants[r]), r in too_deep)
            for r in unique
        }

    # --- grants -----------------------------------------------------------

    async def put_grant(self, grant: Grant) -> WriteResult:
        """Create or replace a grant; an identical grant changes nothing (no new revision)."""
        async with translate_errors(), self.pool.acquire() as conn, conn.transaction():
            old = await conn.fetchrow(
                f"SELECT {_GRANT_COLUMNS} FROM grants WHERE id = $1 FOR UPDATE", grant.id
            )
            previous = grant_from_record(old) if old is not None else None
            if previous == grant:
                return WriteResult(await conn.fetchval("SELECT value FROM ent_revision"), False)
            await conn.execute(
                f"""INSERT INTO grants ({_GRANT_COLUMNS}, revision)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0)
                    ON CONFLICT (id) DO UPDATE SET
                      subject = EXCLUDED.subject, resource = EXCLUDED.resource,
                      actions = EXCLUDED.actions, territories = EXCLUDED.territories,
                      exclude_territories = EXCLUDED.exclude_territories,
                      valid_from = EXCLUDED.valid_from, valid_until = EXCLUDED.valid_until,
                      effect = EXCLUDED.effect, attributes = EXCLUDED.attributes,
                      source = EXCLUDED.source, updated_at = now()""",
                *grant_row(grant),
            )
            touched = [grant] + ([previous] if previous is not None else [])
            revision = await bump_revision(conn, grant_changes(touched))
            await conn.execute("UPDATE grants SET revision = $2 WHERE id = $1", grant.id, revision)
            return WriteResult(revision, True, created=previous is None)

    async def get_grant(self, grant_id: str) -> Grant:
        async with translate_errors():
            row = await self.pool.fetchrow(
                f"SELECT {_GRANT_COLUMNS} FROM grants WHERE id = $1", grant_id
            )
        if row is None:
            raise NotFoundError(f"no grant {grant_id!r}")
        return grant_from_record(row)

    async def delete_grant(self, grant_id: str) -> int:
        async with translate_errors(), self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"DELETE FROM grants WHERE id = $1 RETURNING {_GRANT_COLUMNS}", grant_id
            )
            if row is None:
                raise NotFoundError(f"no grant {grant_id!r}")
            return await bump_revision(conn, grant_changes([grant_from_record(row)]))

    async def list_grants(
        self,
        *,
        resource: str | None = None,
        subject: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[Grant]:
        """Grants filtered by resource and/or subject, ordered by id, keyset-paginated."""
        # Only the filters given appear in the SQL, so each shape has a good generic plan.
        conditions = ["id > $1"]
        args: list[Any] = [after or "", limit]
        for column, value in (("resource", resource), ("subject", subject)):
            if value is not None:
                args.append(value)
                conditions.append(f"{column} = ${len(args)}")
        async with translate_errors():
            rows = await self.pool.fetch(
                f"""SELECT {_GRANT_COLUMNS} FROM grants WHERE {" AND ".join(conditions)}
                    ORDER BY id LIMIT $2""",
                *args,
            )
        return [grant_from_record(r) for r in rows]

    # --- resources --------------------------------------------------------

    async def put_resource(self, resource: Resource) -> WriteResult:
        """Declare a resource and set its parents (auto-declaring unknown parents).

        Refuses a parent that would close a cycle or make any path of the graph
        longer than ``MAX_DEPTH`` levels, the subtree below the resource included.
        Graph writes are serialized by an advisory lock so two concurrent writes
        cannot build a cycle or too long a path between them.
        """
        async with translate_errors(), self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", AdvisoryLock.GRAPH)
            current = await conn.fetch(
                "SELECT parent FROM resource_parents WHERE child = $1 ORDER BY parent", resource.id
            )
            exists = await conn.fetchval("SELECT 1 FROM resources WHERE id = $1", resource.id)
            if exists and tuple(r["parent"] for r in current) == resource.parents:
                return WriteResult(await conn.fetchval("SELECT value FROM ent_revision"), False)
            await check_graph_write(conn, resource.id, resource.parents)
            ids = [resource.id, *resource.parents]
            await conn.execute(
                """INSERT INTO resources (id, type, revision)
                   SELECT r, split_part(r, ':', 1), 0 FROM unnest($1::text[]) AS r
                   ON CONFLICT (id) DO NOTHING""",
                ids,
            )
            await conn.execute("DELETE FROM resource_parents WHERE child = $1", resource.id)
            await conn.execute(
                """INSERT INTO resource_parents (child, parent)
                   SELECT $1, p FROM unnest($2::text[]) AS p""",
                resource.id,
                list(resource.parents),
            )
            revision = await bump_revision(conn, [("resource", resource.id)])
            await conn.execute(
                "UPDATE resources SET revision = $2, updated_at = now() WHERE id = $1",
                resource.id,
                revision,
            )
            return WriteResult(revision, True, created=not exists)

    async def get_resource(self, resource_id: str) -> Resource:
        async with translate_errors():
            rows = await self.pool.fetch(
                """SELECT r.id, p.parent FROM resources r
                   LEFT JOIN resource_parents p ON p.child = r.id
                   WHERE r.id = $1 ORDER BY p.parent""",
                resource_id,
            )
        if not rows:
            raise NotFoundError(f"no resource {resource_id!r}")
        return Resource(
            id=resource_id, parents=tuple(r["parent"] for r in rows if r["parent"] is not None)
        )

    # --- listing ----------------------------------------------------------

    async def listing_candidates(
        self,
        subjects: Sequence[str],
        action: str,
        *,
        type_: str | None,
        after: str | None,
        limit: int,
    ) -> list[str]:
        """Resources that an allow grant of these subjects reaches (directly or by descent).

        Ordered by id after ``after``: a keyset page of candidates, each still
        to be checked (a deny, a window, a territory or a graph too deep to walk
        whole may rule it out). The walk down stops ``MAX_DEPTH`` levels below a
        grant: what lies deeper is never a candidate (never listed, fail closed).
        """
        async with translate_errors():
            rows = await self.pool.fetch(
                f"""
                WITH RECURSIVE roots AS (
                    SELECT DISTINCT resource AS id FROM grants
                    WHERE subject = ANY($1::text[]) AND effect = 'allow' AND $2 = ANY(actions)
                ), tree(id, depth) AS (
                    SELECT id, 0 FROM roots
                    UNION
                    SELECT p.child, t.depth + 1
                    FROM tree t JOIN resource_parents p ON p.parent = t.id
                    WHERE t.depth < {MAX_DEPTH}
                )
                SELECT DISTINCT id FROM tree
                WHERE ($3::text IS NULL OR split_part(id, ':', 1) = $3)
                  AND ($4::text IS NULL OR id > $4)
                ORDER BY id LIMIT $5
                """,
                list(subjects),
                action,
                type_,
                after,
                limit,
            )
        return [r["id"] for r in rows]

    async def too_deep_resources(
        self, limit: int = 20, *, timeout: float | None = None
    ) -> tuple[int, list[str]]:
        """How many resources lie more than ``MAX_DEPTH`` levels deep (checks on them
        fail closed), and the first ``limit`` of them by id."""
        async with translate_errors():
            row = await self.pool.fetchrow(_TOO_DEEP_SQL, limit, timeout=timeout)
        return int(row["n"]), list(row["sample"])

    # --- change feed ------------------------------------------------------

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


# Walk up from the new parents and down from the child, one row per (resource, depth):
# the work is bounded by resources times MAX_DEPTH, never by the number of paths.
# Meeting the child above its new parents is a cycle. Each walk stops at MAX_DEPTH
# steps, which is already too many: the longest path through the child's new edges
# has above + 1 + below levels.
_GRAPH_WRITE_SQL = f"""
WITH RECURSIVE up(id, depth) AS (
    SELECT p COLLATE "C", 1 FROM unnest($1::text[]) AS p
    UNION
    SELECT rp.parent, u.depth + 1
    FROM up u JOIN resource_parents rp ON rp.child = u.id
    WHERE u.depth < {MAX_DEPTH} AND u.id <> $2
), down(id, depth) AS (
    SELECT $2 COLLATE "C", 0
    UNION
    SELECT rp.child, d.depth + 1
    FROM down d JOIN resource_parents rp ON rp.parent = d.id
    WHERE d.depth < {MAX_DEPTH}
)
SELECT bool_or(id = $2) AS cycle, max(depth) AS above, (SELECT max(depth) FROM down) AS below
FROM up
"""


def depth_refusal(above: int, below: int) -> str | None:
    """Why a resource with ``above`` levels of ancestors and ``below`` levels of
    descendants breaks the depth limit, or None if it does not. (A count that reached
    a walk's limit, ``MAX_DEPTH``, is a lower bound.)"""
    levels = above + 1 + below
    if levels <= MAX_DEPTH:
        return None
    count = str(levels) if max(above, below) < MAX_DEPTH else f"at least {levels}"
    return (
        f"the resource graph may be at most {MAX_DEPTH} levels deep; with these parents"
        f" a path through this resource would have {count} levels ({above} above it,"
        f" {below} below it)"
    )


async def check_graph_write(conn: asyncpg.Connection, child: str, parents: Sequence[str]) -> None:
    """Refuse parents that would close a cycle or make any path longer than ``MAX_DEPTH``
    levels, counting the levels above the parents and the subtree below ``child``."""
    if not parents:
        return  # no new edge: no path gets longer
    row = await conn.fetchrow(_GRAPH_WRITE_SQL, list(parents), child)
    if row["cycle"]:
        raise InvalidInputError(
            FieldError(
                "parents", f"would create a cycle: {child} is already an ancestor of a parent"
            )
        )
    refusal = depth_refusal(row["above"], row["below"])
    if refusal is not None:
        raise InvalidInputError(FieldError("parents", refusal))


# A resource lies too deep when a parent of it has MAX_DEPTH - 1 levels above it. On
# that chain every resource but the root and the last has a parent and a child, and
# so does each one's parent on the chain ("middle" edges: in a label/release/track
# catalogue there are none, and the walk ends at once). So levels are counted along
# middle edges only, layer k holding the resources with at least k levels above
# (a cycle keeps the layers full); what hangs under layer MAX_DEPTH - 1 is too deep.
_TOO_DEEP_SQL = f"""
WITH RECURSIVE mid AS MATERIALIZED (
    SELECT e.child, e.parent FROM resource_parents e
    WHERE EXISTS (SELECT 1 FROM resource_parents d WHERE d.parent = e.child)
      AND EXISTS (SELECT 1 FROM resource_parents u WHERE u.child = e.parent)
), layer(id, k) AS (
    SELECT DISTINCT parent, 1 FROM mid
    UNION
    SELECT m.child, l.k + 1 FROM layer l JOIN mid m ON m.parent = l.id
    WHERE l.k < {MAX_DEPTH - 1}
), deep AS (
    SELECT DISTINCT rp.child AS id
    FROM layer l JOIN resource_parents rp ON rp.parent = l.id
    WHERE l.k = {MAX_DEPTH - 1}
)
SELECT (SELECT count(*) FROM deep) AS n, ARRAY(SELECT id FROM deep ORDER BY id LIMIT $1) AS sample
"""


GRAPH_CHECK_TASK = "entitlements-graph-check"
"""The name of the start-up task running ``warn_if_graph_too_deep``."""


async def warn_if_graph_too_deep(store: PostgresStore, limit: int = 20) -> None:
    """At start-up: log one warning naming resources whose graph is already deeper than
    ``MAX_DEPTH`` (written before writes counted the levels below a resource, or with
    SQL). Their checks are denied until the graph is repaired. Never raises: it runs
    as a background task (``GRAPH_CHECK_TASK``), off the start-up path, since the
    scan reads every edge once."""
    try:
        count, sample = await store.too_deep_resources(limit, timeout=120.0)
    except Exception as exc:  # a background task must survive anything
        log.warning(
            "could not look for a resource graph deeper than %d levels: %s",
            MAX_DEPTH,
            exc if isinstance(exc, StoreUnavailableError) else type(exc).__name__,
        )
        return
    if count:
        more = f" (and {count - len(sample)} more)" if count > len(sample) else ""
        log.warning(
            "%d resource(s) lie more than %d levels deep in the resource graph: %s%s."
            " Checks on them are denied until the graph is repaired (PUT /v1/resources/{id}"
            " with fewer parents, or an import of their resources)",
            count,
            MAX_DEPTH,
            ", ".join(sample),
            more,
        )


def _check_data(rows: Sequence[asyncpg.Record]) -> CheckData:
    first = rows[0]
    grants = tuple(grant_from_record(r) for r in rows if r["id"] is not None)
    return CheckData(
        int(first["revision"]), frozenset(first["ancestors"] or ()), grants, first["too_deep"]
    )


__all__ = [
    "GRAPH_CHECK_TASK",
    "MAX_DEPTH",
    "Change",
    "ChangePage",
    "CheckData",
    "PostgresStore",
    "WriteResult",
    "bump_revision",
    "check_graph_write",
    "depth_refusal",
    "grant_changes",
    "grant_from_record",
    "grant_row",
    "resource_type",
    "translate_errors",
    "warn_if_graph_too_deep",
]
