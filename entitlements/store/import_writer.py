"""One import's transaction in Postgres: staging, COPY, merge, and how it ends.

``PostgresImportSession`` (opened by ``store.imports.PostgresImportStore.session``)
writes the batches the service hands it and decides where each row goes::

    per batch: which ids are stored already? (one indexed look-up)
        new ids      -> COPY straight into grants
        stored ids   -> COPY to TEMP staging -> merge in SQL (update or unchanged)
    at the end: --replace-source delete, resource-graph check, one revision

A label feed is mostly new rows on its first load and mostly unchanged rows after:
new rows pay only their COPY (Postgres' cheapest way in, with the table's indexes
maintained as they land), stored ones a comparison and, if changed, an update.

- **Counts come from SQL**: a staged row equal (``IS NOT DISTINCT FROM``, in
  ``grant_row``'s normal form) to the stored one is ``unchanged`` and never
  written: a re-import writes nothing and the revision does not advance.
- **One revision per import**, bumped last with ``bump_revision`` (after the row
  locks, like every writer). Rows carry the revision the import expects; if
  another write took it meanwhile, ours are corrected before commit.
- **Duplicate ids**: a row is known to this import if the file staged its id
  (``imp_gids``, with its line) or this transaction wrote it (``xmin``: a row
  COPY'd straight in, whose line is not kept, so the message says "an earlier
  line").
- **A concurrent writer** (``PUT /v1/grants/{id}``) that creates a grant whose id
  this import is about to COPY between the look-up and the COPY fails the import
  as retryable (nothing lands; run it again). One that comes after waits for the
  import's commit.
- **Resources** replace their parents; the graph as the import leaves it is
  checked once at the end (no cycle, no path over ``MAX_DEPTH`` levels).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Final, cast

import asyncpg

from entitlements.domain.grant import GRANT_COLUMNS
from entitlements.domain.model import MAX_DEPTH
from entitlements.errors import StoreUnavailableError
from entitlements.store.audit import (
    AUDIT_STAGING_SQL,
    IMPORT_AUDIT_SQL,
    MAX_AUDITED_ROWS,
    audit_changed_sql,
)
from entitlements.store.changes import REVISION_SQL, bump_revision
from entitlements.store.ddex import PostgresDdexWriter
from entitlements.store.graph import depth_refusal
from entitlements.store.import_connection import ImportConnection
from entitlements.store.import_rows import (
    GrantRows,
    ImportTally,
    Prepared,
    ResourceRow,
    row_tail,
)
from entitlements.store.locks import AdvisoryLock

MAX_REJECTED_IDS: Final = 100_000
"""Rejected ids (``skip_invalid``) kept in memory per import; past it, ``imp_gids`` is asked."""
RANGE_ROWS_PER_ID: Final = 4
"""The range scan is used while the range holds at most this many grants per batch id."""

_DATA_COLUMNS: Final = GRANT_COLUMNS[1:]  # a grant's columns after id, in its declaration's order
_DATA: Final = ", ".join(_DATA_COLUMNS)
_G_COLUMNS: Final = ("id", *_DATA_COLUMNS, "line", "ok")
_R_COLUMNS: Final = ("id", "parents", "line", "ok")
_DIRECT_COLUMNS: Final = ("id", *_DATA_COLUMNS, "revision")
_NULL_DATA: Final = "\t".join(["\\N"] * len(_DATA_COLUMNS))  # a rejected row: only its id


def _columns(alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in _DATA_COLUMNS)


_SET_ALL: Final = ", ".join(f"{c} = EXCLUDED.{c}" for c in _DATA_COLUMNS)


# TEMP tables: private to the session, no WAL, no indexes to maintain during COPY,
# gone at commit or rollback (and with the session if the process dies).
# imp_g holds the stored-id rows of one batch, typed like grants (COPY text parses).
_STAGING_SQL: Final = """
CREATE TEMP TABLE imp_g (
    id text COLLATE "C", subject text COLLATE "C", resource text COLLATE "C", actions text[],
    territories text[], exclude_territories text[], valid_from timestamptz,
    valid_until timestamptz, effect text, attributes jsonb, source text COLLATE "C", line int,
    ok boolean
) ON COMMIT DROP;
CREATE TEMP TABLE imp_gids (id text COLLATE "C" PRIMARY KEY, line int NOT NULL) ON COMMIT DROP;
CREATE TEMP TABLE imp_r (id text COLLATE "C", parents text[] COLLATE "C", line int, ok boolean)
    ON COMMIT DROP;
CREATE TEMP TABLE imp_rids (id text COLLATE "C" PRIMARY KEY, line int NOT NULL) ON COMMIT DROP;
CREATE TEMP TABLE imp_rb (id text COLLATE "C", parents text[] COLLATE "C", line int,
    existed boolean) ON COMMIT DROP;
CREATE TEMP TABLE imp_rchg (id text COLLATE "C", line int) ON COMMIT DROP;
"""

# The change-feed entry of a grant, as ``store.changes.grant_changes`` makes it.
_KEY_SQL: Final = (
    "CASE WHEN starts_with(subject, 'user:') THEN 'user ' || substr(subject, 6)"
    " ELSE 'resource ' || resource END"
)

_MY_XID: Final = "(txid_current() % 4294967296)::text::xid"

# Which ids of a batch are stored already, and which of those this transaction wrote
# (xmin: an earlier line of the file). Feeds number their deals, so a batch's ids
# mostly fill a narrow range: one index range scan between the batch's least and
# greatest id answers for all of them (nothing to read on a first load). When the
# range holds many more grants than the batch (random ids), the exact form probes
# the index once per id instead; its LATERAL ... LIMIT 1 keeps each an index probe
# whatever the planner thinks of unnest's row count.
_STORED_RANGE_SQL: Final = f"""
SELECT id, xmin = {_MY_XID} AS ours FROM grants
WHERE id >= $1 AND id <= $2 ORDER BY id LIMIT $3
"""
_STORED_EXACT_SQL: Final = f"""
SELECT u.id, g.ours
FROM unnest($1::text[]) AS u(id)
CROSS JOIN LATERAL (
    SELECT grants.xmin = {_MY_XID} AS ours FROM grants WHERE grants.id = u.id LIMIT 1
) g
"""

# The staged rows of one batch (their ids were stored). The LATERAL ... LIMIT 1 keeps
# the look-up an index probe per staged row. Unchanged rows never reach the INSERT,
# so they are neither written nor locked; ON CONFLICT covers a grant deleted since.
_MERGE_GRANTS_SQL: Final = f"""
WITH new AS (
    SELECT id, {_DATA} FROM imp_g WHERE ok
), cur AS MATERIALIZED (
    SELECT n.*, g.subject AS old_subject, g.resource AS old_resource,
           g.id IS NOT NULL
           AND ({_columns("g")}) IS NOT DISTINCT FROM ({_columns("n")}) AS same
    FROM new n
    LEFT JOIN LATERAL (SELECT * FROM grants WHERE grants.id = n.id LIMIT 1) g ON true
), up AS (
    INSERT INTO grants AS t (id, {_DATA}, revision)
    SELECT id, {_DATA}, $1 FROM cur WHERE NOT same
    ON CONFLICT (id) DO UPDATE SET {_SET_ALL}, revision = EXCLUDED.revision, updated_at = now()
    RETURNING t.subject, t.resource, t.xmax = 0 AS inserted
), touched AS (
    SELECT subject, resource FROM up
    UNION
    SELECT old_subject, old_resource FROM cur WHERE NOT same AND old_subject IS NOT NULL
)
SELECT (SELECT count(*) FROM up WHERE inserted) AS inserted,
       (SELECT count(*) FROM up WHERE NOT inserted) AS updated,
       ARRAY(SELECT DISTINCT {_KEY_SQL} FROM touched LIMIT $2) AS keys
"""

_AUDIT_CHANGED_SQL: Final = audit_changed_sql(_DATA_COLUMNS)

# The file's ids are those staged (imp_gids) and those this transaction wrote.
_REPLACE_SOURCE_SQL: Final = f"""
WITH del AS (
    DELETE FROM grants g
    WHERE g.source = $1 AND g.xmin <> {_MY_XID}
      AND NOT EXISTS (SELECT 1 FROM imp_gids i WHERE i.id = g.id)
    RETURNING g.subject, g.resource
)
SELECT (SELECT count(*) FROM del) AS deleted,
       ARRAY(SELECT DISTINCT {_KEY_SQL} FROM del LIMIT $2) AS keys
"""

_CLASSIFY_RESOURCES_SQL: Final = """
INSERT INTO imp_rb (id, parents, line, existed)
SELECT b.id, b.parents, b.line, r.id IS NOT NULL
FROM imp_r b
LEFT JOIN LATERAL (SELECT id FROM resources WHERE resources.id = b.id LIMIT 1) r ON true
WHERE b.ok AND (r.id IS NULL OR b.parents IS DISTINCT FROM ARRAY(
    SELECT p.parent FROM resource_parents p WHERE p.child = b.id ORDER BY p.parent))
"""

_MERGE_RESOURCES_SQL: Final = (
    """INSERT INTO resources (id, type, revision)
       SELECT x, split_part(x, ':', 1), $1
       FROM (SELECT id AS x FROM imp_rb UNION SELECT unnest(parents) FROM imp_rb) s
       ORDER BY x ON CONFLICT (id) DO NOTHING""",
    """UPDATE resources r SET revision = $1, updated_at = now()
       FROM imp_rb b WHERE r.id = b.id AND b.existed""",
    "DELETE FROM resource_parents p USING imp_rb b WHERE p.child = b.id AND b.existed",
    "INSERT INTO resource_parents (child, parent) SELECT id, unnest(parents) FROM imp_rb",
    "INSERT INTO imp_rchg (id, line) SELECT id, line FROM imp_rb",
)

# The rule of check_graph_write, on the graph as this import leaves it: every new path
# goes through a new edge, whose child is a resource this import gave parents. Walk up
# from each (meeting itself is a cycle) and down from each: a path through it has
# above + 1 + below levels, at most MAX_DEPTH. Both walks stop at MAX_DEPTH steps
# (already too many), one row per (start, resource, depth).
_GRAPH_CHECK_SQL: Final = f"""
WITH RECURSIVE up(start, line, id, depth) AS (
    SELECT c.id, c.line, p.parent, 1 FROM imp_rchg c JOIN resource_parents p ON p.child = c.id
    UNION
    SELECT u.start, u.line, p.parent, u.depth + 1
    FROM up u JOIN resource_parents p ON p.child = u.id
    WHERE u.depth < {MAX_DEPTH} AND u.id <> u.start
), down(start, id, depth) AS (
    SELECT c.id, p.child, 1 FROM imp_rchg c JOIN resource_parents p ON p.parent = c.id
    WHERE EXISTS (SELECT 1 FROM resource_parents q WHERE q.child = c.id)
    UNION
    SELECT d.start, p.child, d.depth + 1
    FROM down d JOIN resource_parents p ON p.parent = d.id
    WHERE d.depth < {MAX_DEPTH} AND d.id <> d.start
), above AS (
    SELECT start, line, bool_or(id = start) AS cycle, max(depth) AS n FROM up GROUP BY start, line
), below AS (
    SELECT start, max(depth) AS n FROM down GROUP BY start
)
SELECT a.start, a.line, a.cycle, a.n AS above, coalesce(b.n, 0) AS below
FROM above a LEFT JOIN below b ON b.start = a.start
WHERE a.cycle OR a.n + 1 + coalesce(b.n, 0) > {MAX_DEPTH}
ORDER BY a.line LIMIT $1
"""

# A failed or dry run, outside the import's transaction: never overwrite a commit whose
# acknowledgement was lost ("status = 'running'").
_END_SQL: Final = """
UPDATE imports SET status = $2, finished_at = $3, report = $4::text::jsonb
WHERE id = $1 AND status = 'running'
"""
_COMMIT_SQL: Final = """
UPDATE imports SET status = $2, finished_at = $3, report = $4::text::jsonb WHERE id = $1
"""


class PostgresImportSession:
    """One import's transaction: the writer of its batches, and how it ends.

    It keeps what only the writer needs across batches: the revision the import
    expects, the ids of rows rejected so far, whether it holds the graph lock.
    """

    def __init__(self, pool: asyncpg.Pool, db: ImportConnection, import_id: str) -> None:
        self.pool = pool
        self.db = db
        self.import_id = import_id
        self.revision = 0  # the revision the import expects to commit at
        self.tail = row_tail(0)
        # Ids of rows rejected so far (skip_invalid), with their lines: a later valid row
        # with the same id is a duplicate. Bounded; past the bound, imp_gids is asked.
        self.rejected_ids: dict[str, int] | None = {}
        self.graph_locked = False
        self._committing = False
        self._ddex: PostgresDdexWriter | None = None
        self._audited = 0  # changed grants whose before/after the audit entry holds

    async def begin(self, lock_wait: float) -> int | None:
        """Wait up to ``lock_wait`` seconds for any other import, create the staging
        tables, and return the revision this import expects to commit at (rows are
        rendered with it: ``row_tail``). None: another import still holds the lock."""
        try:
            await self.db.conn.execute(
                "SELECT pg_advisory_xact_lock($1)", AdvisoryLock.IMPORT, timeout=lock_wait
            )
        except TimeoutError:
            return None
        await self.db.execute(_STAGING_SQL)
        await self.db.execute(AUDIT_STAGING_SQL)
        self.revision = int(await self.db.fetchval("SELECT value + 1 FROM ent_revision"))
        self.tail = row_tail(self.revision)
        return self.revision

    # --- grants -------------------------------------------------------------------

    async def write_grants(self, rows: GrantRows, prepared: Prepared, tally: ImportTally) -> None:
        """New ids straight into grants; stored (or rejected) ones through staging.

        Duplicates: within the batch by ``seen``; a row this import wrote by ``ours``;
        a row staged earlier when it is staged again (``_stage``: imp_gids); a
        rejected row by ``rejected_ids``.
        """
        db = self.db
        ids = rows.ids
        stored = await self._stored(ids, prepared)
        rejected = self.rejected_ids
        # The common case of a first load: every row valid, new and once in the batch,
        # none rejected so far (and not too many to keep).
        if not stored and rejected == {} and prepared.payload is not None:
            await self._copy_new(rows, tally, prepared.payload)
            return
        if rejected is None:  # too many rejected ids to keep: imp_gids knows them all
            staged_ids = await db.fetch(
                "SELECT i.id, i.line FROM unnest($1::text[]) AS u(id)"
                " CROSS JOIN LATERAL (SELECT id, line FROM imp_gids WHERE id = u.id LIMIT 1) i",
                ids,
            )
            earlier = {r[0]: r[1] for r in staged_ids}
        else:
            earlier = rejected
        ours_ids = [gid for gid, ours in stored.items() if ours]
        if ours_ids:  # duplicates: where they were staged, if they were, names the line
            lines = await db.fetch(
                "SELECT id, line FROM imp_gids WHERE id = ANY($1::text[])", ours_ids
            )
            earlier = {**earlier, **{r[0]: r[1] for r in lines}}
        seen: dict[str, int] = {}
        direct = GrantRows()
        staged: list[str] = []
        tail = self.tail
        for gid, line, text, key in zip(rows.ids, rows.lines, rows.texts, rows.keys, strict=True):
            first = seen.setdefault(gid, line)
            if first != line:
                tally.again(line, gid, first)
                continue
            ours = stored.get(gid)
            if text is None:  # rejected: staged for its id only (replace_source keeps it)
                staged.append(f"{gid}\t{_NULL_DATA}\t{line}\tf\n")
                if rejected is not None:
                    rejected.setdefault(gid, line)
                    if len(rejected) > MAX_REJECTED_IDS:
                        self.rejected_ids = rejected = None
            elif ours is None and gid in earlier:
                tally.again(line, gid, earlier[gid])
            elif ours:
                tally.again(line, gid, earlier.get(gid))
            elif ours is None:
                direct.add(gid, line, text, key)
            else:
                staged.append(f"{text[: text.rindex(tail)]}\t{line}\tt\n")
        if tally.failed:
            return  # strict, and a duplicate id: nothing will land
        if direct:
            await self._copy_new(direct, tally)
        if staged and await self._stage("imp_g", staged, _G_COLUMNS, tally):
            if self._audited < MAX_AUDITED_ROWS:  # issue 15: before/after of changed grants
                status = await db.execute(_AUDIT_CHANGED_SQL, MAX_AUDITED_ROWS - self._audited)
                self._audited += int(status.split()[-1])
            merged = await db.fetchrow(_MERGE_GRANTS_SQL, self.revision, tally.key_limit())
            tally.wrote(merged["inserted"], merged["updated"])
            tally.add_keys(merged["keys"])

    async def _stored(self, ids: list[str], prepared: Prepared) -> dict[str, bool]:
        """Which of ``ids`` are stored grants: id -> whether this import wrote it."""
        limit = RANGE_ROWS_PER_ID * len(ids)
        rows = await self.db.fetch(_STORED_RANGE_SQL, prepared.first, prepared.last, limit)
        if len(rows) >= limit:
            rows = await self.db.fetch(_STORED_EXACT_SQL, ids)
        return {r[0]: r[1] for r in rows}

    async def _copy_new(
        self, rows: GrantRows, tally: ImportTally, payload: bytes | None = None
    ) -> None:
        """COPY rows whose ids are not stored straight into grants (``payload``: their
        text, already joined)."""
        try:
            if payload is None:
                payload = "".join(cast(list[str], rows.texts)).encode()  # all have text
            await self.db.copy_payload("grants", payload, _DIRECT_COLUMNS)
        except asyncpg.UniqueViolationError:
            raise StoreUnavailableError(
                "another client created a grant of this file while it was being imported;"
                " run the import again",
                retry_after=1,
            ) from None
        tally.wrote(len(rows), 0)
        tally.add_grant_keys(rows.keys)

    async def _stage(
        self,
        table: str,
        rows: list[ResourceRow] | list[str],
        columns: Sequence[str],
        tally: ImportTally,
    ) -> bool:
        """COPY a batch into ``table`` and refuse ids seen before in the file. False: stop.

        ``rows``: tuples, or lines in COPY text format.
        """
        db = self.db
        ids = table + "ids"
        await db.execute(f"TRUNCATE {table}")
        if rows and isinstance(rows[0], str):
            await db.copy_text(table, rows, columns)
        else:
            await db.copy(table, cast(list[ResourceRow], rows), columns)
        status = await db.execute(
            f"INSERT INTO {ids} (id, line) SELECT id, line FROM {table} ORDER BY line"
            " ON CONFLICT (id) DO NOTHING"
        )
        if int(status.rsplit(" ", 1)[1]) == len(rows):
            return True
        again = await db.fetch(
            f"""SELECT b.line, b.id, i.line AS first FROM {table} b JOIN {ids} i ON i.id = b.id
                WHERE i.line <> b.line ORDER BY b.line"""
        )
        kind = "grant" if table == "imp_g" else "resource"
        for r in again:
            tally.again(r["line"], r["id"], r["first"], kind)
        if tally.strict:
            return False
        await db.execute(f"DELETE FROM {table} WHERE line = ANY($1::int[])", [r[0] for r in again])
        return True

    # --- resources ----------------------------------------------------------------

    async def write_resources(self, rows: list[ResourceRow], tally: ImportTally) -> None:
        """Resources replace their parents (the graph is checked once, by ``graph_problems``)."""
        db = self.db
        await self.lock_graph()
        if not await self._stage("imp_r", rows, _R_COLUMNS, tally):
            return
        await db.execute("TRUNCATE imp_rb")
        await db.execute(_CLASSIFY_RESOURCES_SQL)
        changed = await db.fetchrow(
            """SELECT count(*) FILTER (WHERE existed) AS updated,
                      count(*) FILTER (WHERE NOT existed) AS inserted,
                      ARRAY(SELECT id FROM imp_rb LIMIT $1) AS ids FROM imp_rb""",
            tally.key_limit(),
        )
        if changed["updated"] or changed["inserted"]:
            tally.wrote(changed["inserted"], changed["updated"])
            tally.add_keys(f"resource {rid}" for rid in changed["ids"])
            for i, sql in enumerate(_MERGE_RESOURCES_SQL):
                await db.execute(sql, *((self.revision,) if i < 2 else ()))

    async def lock_graph(self) -> None:
        """Take the graph lock before this import's first graph write (once, in
        put_resource's order); ``graph_problems`` then checks the graph at the end."""
        if not self.graph_locked:
            await self.db.execute("SELECT pg_advisory_xact_lock($1)", AdvisoryLock.GRAPH)
            self.graph_locked = True

    def ddex(self) -> PostgresDdexWriter:
        """DDEX ERN releases, applied in this transaction (``store.ddex``; after ``begin``:
        it writes at the revision expected)."""
        if self._ddex is None:
            self._ddex = PostgresDdexWriter(self.db, self.revision, self.lock_graph)
        return self._ddex

    # --- after the last batch -----------------------------------------------------

    async def replace_source(self, source: str, key_limit: int) -> tuple[int, list[str]]:
        """Delete ``source``'s grants that the file does not name: how many, and their
        change-feed entries (at most ``key_limit``, as ``ImportTally.add_keys`` takes them)."""
        deleted = await self.db.fetchrow(_REPLACE_SOURCE_SQL, source, key_limit)
        return int(deleted["deleted"]), list(deleted["keys"])

    async def graph_problems(self, limit: int) -> list[tuple[int, str]]:
        """The first ``limit`` resources of the file that close a cycle or make a path
        over ``MAX_DEPTH`` levels, as (line, message); none if no resource was written."""
        if not self.graph_locked:
            return []
        problems = []
        for r in await self.db.fetch(_GRAPH_CHECK_SQL, limit):
            message = (
                f"would create a cycle: {r['start']} would be its own ancestor"
                if r["cycle"]
                else depth_refusal(r["above"], r["below"])
                or f"the resource graph may be at most {MAX_DEPTH} levels deep"
            )
            problems.append((int(r["line"]), message))
        return problems

    async def current_revision(self) -> int:
        return int(await self.db.fetchval(REVISION_SQL))

    async def bump(self, changes: Iterable[tuple[str, str]]) -> int:
        """Advance the revision once; fix our rows if another write took the one we expected."""
        revision = await bump_revision(self.db.conn, changes)
        if revision != self.revision:
            for table in ("grants", "resources"):
                await self.db.execute(
                    f"UPDATE {table} SET revision = $1 WHERE revision = $2 AND xmin = {_MY_XID}",
                    revision,
                    self.revision,
                )
        return revision

    # --- the end ------------------------------------------------------------------

    async def commit(self, status: str, finished_at: datetime, report: str) -> None:
        """Record the import's outcome in its transaction, and commit both."""
        self._committing = True
        await self.db.execute(_COMMIT_SQL, self.import_id, status, finished_at, report)
        await self.db.execute(IMPORT_AUDIT_SQL, self.import_id, report)  # issue 15
        await self.db.execute("COMMIT")

    async def end(self, status: str, finished_at: datetime, report: str) -> None:
        """Roll the transaction back and record the outcome (failed, dry run) outside it.

        The record is written first, while the transaction still holds the live lock,
        so no reaper takes the import for dead in between. Once a commit has begun
        (its transaction updated the record's row), it is rolled back first instead.
        Both are attempted; an error of either is raised. The record is shielded from
        cancellation (an interrupted import is still recorded); the rollback runs on
        this task, never beside a release of the connection.
        """

        async def record() -> None:
            await self.pool.execute(_END_SQL, self.import_id, status, finished_at, report)

        if self._committing:
            try:
                await self.db.execute("ROLLBACK")
            finally:
                await asyncio.shield(record())
            return
        try:
            await asyncio.shield(record())
        finally:
            await self.db.execute("ROLLBACK")


__all__ = ["MAX_REJECTED_IDS", "PostgresImportSession"]
