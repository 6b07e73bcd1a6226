"""Bulk import: stream a file in, validate every record, COPY it into Postgres.

One import is one transaction: every row lands or none does (``skip_invalid``
lands the valid rows and reports the others; ``dry_run`` does everything and
rolls back). Memory stays flat whatever the file size::

    chunks -> reader (import_formats: split, decode, validate, render COPY text;
              in a thread) -> batches of rows
           -> writer, per batch: which ids are stored already? (one indexed look-up)
              new ids      -> COPY straight into grants
              stored ids   -> COPY to TEMP staging -> merge in SQL (update or unchanged)
           -> at the end: --replace-source delete, resource-graph check, one revision

A label feed is mostly new rows on its first load and mostly unchanged rows
after: new rows pay only their COPY (Postgres' cheapest way in, with the
table's indexes maintained as they land), stored ones a comparison and, if
changed, an update. Batches land as they come, so Postgres maintains indexes
while Python validates the next batch; the reader's thread keeps an API worker
answering during an upload.

- **Serialized**: every import holds one advisory lock for its transaction, so
  imports never interleave and files sharing grant ids cannot deadlock. An import
  waits for it at most ``lock_timeout``, then fails as busy (nothing imported).
- **Counts come from SQL**: a staged row equal (``IS NOT DISTINCT FROM``, in
  ``grant_row``'s normal form) to the stored one is ``unchanged`` and never
  written: a re-import writes nothing and the revision does not advance.
- **One revision per import**, bumped last with ``bump_revision`` (after the row
  locks, like every writer). Rows carry the revision the import expects; if
  another write took it meanwhile, ours are corrected before commit. The change
  feed gets the touched resources and users, or one ``('all', '*')`` when over
  ``MAX_CHANGE_KEYS`` were touched.
- **Duplicate ids** in a file are refused naming both lines (``skip_invalid``:
  the first wins). A row is known to this import if the file staged its id
  (``imp_gids``, with its line) or this transaction wrote it (``xmin``: a row
  COPY'd straight in, whose line is not kept, so the message says "an earlier
  line").
- **A concurrent writer** (``PUT /v1/grants/{id}``) that creates a grant whose
  id this import is about to COPY between the look-up and the COPY fails the
  import as retryable (nothing lands; run it again). One that comes after waits
  for the import's commit.
- **replace_source**: that source's grants missing from the file are deleted;
  records get the source, a record naming another is refused; a row rejected by
  ``skip_invalid`` keeps its grant if its id could be read; a file without a
  valid grant is refused, not taken as "delete them all".
- **Resources** replace their parents; a cycle or a path longer than
  ``MAX_DEPTH`` levels (counting the levels below a resource too, so two imports
  cannot stack chains) fails the import, even with ``skip_invalid`` (which edge
  to drop would be a guess).
- **Bookkeeping**: the ``imports`` row is written before the transaction (a
  failed import stays on record) and finalised inside it on commit. A killed
  import leaves its row ``running`` with no session lock held; the next import,
  or a GET of it, marks it failed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import math
import os
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Final, cast

import asyncpg
import orjson

from entitlements.domain.grant import GRANT_COLUMNS
from entitlements.domain.model import (
    MAX_DEPTH,
    GrantRow,
    Resource,
    format_time,
    grant_from_mapping,
)
from entitlements.errors import (
    BusyError,
    EntitlementsError,
    FieldError,
    InvalidInputError,
    NotFoundError,
    StoreUnavailableError,
)
from entitlements.service.import_formats import (
    MAX_LINE_BYTES,
    Format,
    Kind,
    guarded,
    make_reader,
    no_records,
    strip_bom,
    too_long,
)
from entitlements.service.import_workers import SEGMENT_BYTES, ReadWorkers, Segment
from entitlements.service.pg_copy import GrantRows, Prepared, change_key, copy_text
from entitlements.store.locks import IMPORT_LIVE_CLASS, AdvisoryLock
from entitlements.store.postgres import (
    MAX_CHANGE_KEYS,
    bump_revision,
    depth_refusal,
    translate_errors,
)


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """What the caller asked for."""

    format: Format
    kind: Kind = "grant"
    dry_run: bool = False
    skip_invalid: bool = False
    replace_source: str | None = None
    created_by: str = "unknown"


@dataclass(frozen=True, slots=True)
class ImportLimits:
    """Tuning knobs, with defaults meant for production."""

    max_errors: int = 1000
    batch_rows: int = 20_000
    max_line: int = MAX_LINE_BYTES
    lock_timeout: float = 30.0
    """Seconds to wait for another import to finish (``ENTITLEMENTS_IMPORT_LOCK_WAIT``);
    then ``BusyError``."""
    statement_timeout: float = 3600.0
    read_processes: int | None = None
    """Worker processes that read a large NDJSON input (None: with 3 or more CPUs, one per
    CPU but one, at most 4, else none; 0: always read in the importing process)."""
    parallel_from_bytes: int = 16 << 20
    """Inputs of at least this size (when known) are read by the worker processes."""
    segment_bytes: int = SEGMENT_BYTES


@dataclass(frozen=True, slots=True)
class Progress:
    """Where an import is: records read, bytes read, rows merged, seconds since start."""

    rows: int
    bytes: int
    loaded: int
    elapsed: float


@dataclass(slots=True)
class Counts:
    """What an import did, row by row (``deleted``: by --replace-source)."""

    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0


@dataclass(slots=True)
class ImportReport:
    """The outcome of one import, as ``POST``/``GET /v1/imports`` and the CLI show it.

    ``status``: ``running``, ``committed``, ``failed`` or ``dry_run``.
    ``errors`` holds the first ``max_errors`` problems; ``error_count`` all of them.
    ``revision`` is the data revision after the import (unchanged when nothing
    changed; for a dry run, the revision it was computed at).
    """

    id: str
    status: str
    format: str
    kind: str
    source: str | None
    dry_run: bool
    skip_invalid: bool
    created_by: str
    started_at: datetime
    counts: Counts = field(default_factory=Counts)
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0
    notes: list[str] = field(default_factory=list)
    revision: int | None = None
    finished_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.status in {"committed", "dry_run"}

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["counts"] = asdict(self.counts)
        out["started_at"] = format_time(self.started_at)
        out["finished_at"] = format_time(self.finished_at)
        return out

    def dumps(self) -> str:
        """The report as JSON text (passed as ``text``: any connection, codec or not)."""
        return orjson.dumps(self.to_json()).decode()


def live_key(import_id: str) -> int:
    """The int4 key of an import's liveness lock (the same formula as ``_REAP_SQL``)."""
    # md5 because Postgres has it built in (the reaper computes the same key in SQL);
    # this is a lock key, not a security measure.
    digest = hashlib.md5(import_id.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


def check_options(options: ImportOptions) -> None:
    """Refuse impossible combinations before anything is read (exit code 2 / HTTP 422)."""
    errors: list[FieldError] = []
    if options.format not in ("ndjson", "csv"):
        errors.append(FieldError("format", "must be 'csv' or 'ndjson'"))
    if options.kind not in ("grant", "resource"):
        errors.append(FieldError("kind", "must be 'grant' or 'resource'"))
    if options.replace_source is not None:
        # A source name follows the rule of a grant's source field: ask the validator.
        probe = dict(id="x", subject="*", resource="x:x", actions=["x"], territories=["*"])
        try:
            grant_from_mapping({**probe, "source": options.replace_source})
        except InvalidInputError as exc:
            errors.extend(FieldError("replace_source", e.message) for e in exc.errors)
        if options.format == "csv" and options.kind == "resource":
            errors.append(
                FieldError("replace_source", "applies to grants; a resource file has none")
            )
    if errors:
        raise InvalidInputError(errors)


# --- staging and merge SQL -------------------------------------------------------

_DATA_COLUMNS: Final = GRANT_COLUMNS[1:]  # a grant's columns after id, in its declaration's order
_DATA: Final = ", ".join(_DATA_COLUMNS)
_G_COLUMNS: Final = ("id", *_DATA_COLUMNS, "line", "ok")
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

# The change-feed entry of a grant, as ``store.postgres.grant_changes`` makes it.
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
MAX_REJECTED_IDS: Final = 100_000
RANGE_ROWS_PER_ID: Final = 4
"""The range scan is used while the range holds at most this many grants per batch id."""

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

_REAP_SQL: Final = f"""
UPDATE imports SET status = 'failed', finished_at = now(),
    report = report || jsonb_build_object(
        'status', 'failed',
        'finished_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'error_count', 1,
        'errors', jsonb_build_array(jsonb_build_object('line', NULL, 'field', '', 'message',
            'the import process stopped before finishing (killed, crashed or disconnected);'
            || ' nothing from it was imported')))
WHERE status = 'running' AND ($1::text IS NULL OR id = $1)
  AND pg_try_advisory_xact_lock({IMPORT_LIVE_CLASS}, ('x' || substr(md5(id), 1, 8))::bit(32)::int)
"""


# --- one run ---------------------------------------------------------------------


class _Run:
    """The mutable state of one import, shared by the reader's sink and the writer.

    It is the ``RecordSink`` too: records arrive here and become staged rows.
    Only one side touches it at a time (the reader inside ``to_thread``, the
    event loop between chunks), so it needs no lock.
    """

    def __init__(self, options: ImportOptions, limits: ImportLimits, report: ImportReport) -> None:
        self.options = options
        self.limits = limits
        self.report = report
        self.strict = not options.skip_invalid
        self.failed = False  # strict mode saw a bad row: nothing will land, only validate on
        self.grants = GrantRows()
        self.resources: list[tuple[Any, ...]] = []
        self.valid_grants = 0
        self.keys: set[tuple[str, str]] = set()
        # Ids of rows rejected so far (skip_invalid), with their lines: a later valid row
        # with the same id is a duplicate. Bounded; past the bound, imp_gids is asked.
        self.rejected_ids: dict[str, int] | None = {}
        self.all_keys = False
        self.graph_locked = False
        self.bytes = 0
        self.loaded = 0
        self.records = 0  # records read so far
        self.revision = 0  # the revision the import expects to commit at
        self.tail = "\t0\n"  # the last field of a grants line: the revision

    # RecordSink

    def grant(self, line: int, row: GrantRow) -> None:
        self.valid_grants += 1
        if not self.failed:  # the line as COPY'd straight into grants
            key = None if self.all_keys else change_key(row[1], row[2])
            self.grants.add(row[0], line, copy_text(row, self.tail), key)

    def resource(self, line: int, resource: Resource) -> None:
        if not self.failed:
            self.resources.append((resource.id, list(resource.parents), line, True))

    def reject(
        self, line: int, errors: Sequence[FieldError], record_id: str | None, kind: Kind
    ) -> None:
        self.add_errors(line, errors)
        if self.strict:
            self.failed = True
        elif record_id is not None and kind == "grant":
            # Staged but never merged: keeps the id out of a --replace-source delete
            # and lets a later duplicate of it be noticed.
            self.grants.add(record_id, line, None, None)

    def note(self, message: str) -> None:
        self.report.notes.append(message)

    # bookkeeping

    def add_errors(
        self, line: int | None, errors: Iterable[FieldError], *, row: bool = True
    ) -> None:
        """Record problems; ``row``: they reject one record (not the file as a whole)."""
        report = self.report
        if row:
            report.counts.rejected += 1
        for e in errors:
            report.error_count += 1
            if len(report.errors) < self.limits.max_errors:
                report.errors.append({"line": line, "field": e.field, "message": e.message})

    def hopeless(self) -> bool:
        """Strict mode with the error list full: reading on cannot change the outcome."""
        return self.failed and self.report.error_count >= self.limits.max_errors

    def batch_ready(self) -> bool:
        return len(self.grants) + len(self.resources) >= self.limits.batch_rows

    async def take(self) -> Batch:
        """The rows read so far, as a batch for the writer (prepared in a thread)."""
        grants, resources = self.grants, self.resources
        self.grants, self.resources = GrantRows(), []
        prepared = await asyncio.to_thread(grants.prepare) if grants else None
        return grants, prepared, resources

    def add_keys(self, encoded: Iterable[str]) -> None:
        """Change-feed entries from SQL (``_KEY_SQL``: ``'user <id>'`` or ``'resource <id>'``)."""
        if self.all_keys:
            return
        for item in encoded:
            kind, _, key = item.partition(" ")
            self.keys.add((kind, key))
        self._check_keys()

    def add_grant_keys(self, rows: Iterable[tuple[str, str] | None]) -> None:
        """The change-feed entries (``GrantRows.keys``) of grants written straight in."""
        if self.all_keys:
            return
        keys = self.keys
        for key in rows:
            if key is None:  # computed only while the keys were still wanted
                self.all_keys, self.keys = True, set()
                return
            keys.add(key)
            if len(keys) > MAX_CHANGE_KEYS:
                break
        self._check_keys()

    def _check_keys(self) -> None:
        if len(self.keys) > MAX_CHANGE_KEYS:
            self.all_keys, self.keys = True, set()

    def again(self, line: int, grant_id: str, first: int | None) -> None:
        """The file names ``grant_id`` a second time (``first``: the earlier line, if known)."""
        where = f"at line {first}" if first is not None else "on an earlier line"
        message = f"{grant_id!r} appears again: the same grant id is {where}"
        self.add_errors(line, [FieldError("id", message)])
        if self.strict:
            self.failed = True

    def key_limit(self) -> int:
        return 0 if self.all_keys else MAX_CHANGE_KEYS + 1

    def changes(self) -> list[tuple[str, str]]:
        return [("all", "*")] if self.all_keys else sorted(self.keys)


Batch = tuple[GrantRows, Prepared | None, list[tuple[Any, ...]]]
Chunks = AsyncIterable[bytes]
OnProgress = Callable[[Progress], None] | None


class _Db:
    """The import's connection, every statement with the import's long timeout (the pool's
    suits API calls, not merging a million rows or the COMMIT that flushes them)."""

    def __init__(self, conn: asyncpg.Connection, timeout: float) -> None:
        self.conn = conn
        self.timeout = timeout

    async def execute(self, sql: str, *args: Any) -> str:
        status: str = await self.conn.execute(sql, *args, timeout=self.timeout)
        return status

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(sql, *args, timeout=self.timeout))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record:
        return await self.conn.fetchrow(sql, *args, timeout=self.timeout)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchval(sql, *args, timeout=self.timeout)

    async def copy(self, table: str, rows: list[tuple[Any, ...]], columns: Sequence[str]) -> None:
        await self.conn.copy_records_to_table(
            table, records=rows, columns=columns, timeout=self.timeout
        )

    async def copy_text(self, table: str, lines: list[str], columns: Sequence[str]) -> None:
        """COPY lines already in Postgres' text format (cheaper to build than binary tuples)."""
        await self.copy_payload(table, "".join(lines).encode(), columns)

    async def copy_payload(self, table: str, payload: bytes, columns: Sequence[str]) -> None:
        """COPY a payload of lines in Postgres' text format."""

        async def source() -> AsyncIterator[bytes]:
            yield payload

        await self.conn.copy_to_table(
            table, source=source(), columns=columns, format="text", timeout=self.timeout
        )


class ImportService:
    """Runs imports against Postgres and answers for them later (``get``).

    With ``dsn`` each import opens a connection of its own for its transaction,
    so a long upload never holds one of the pool's connections (which serve
    checks); the pool is used for the short bookkeeping statements. Without it,
    the transaction borrows a pool connection (the pool then needs two or more).
    """

    def __init__(
        self, pool: asyncpg.Pool, limits: ImportLimits | None = None, *, dsn: str | None = None
    ) -> None:
        self.pool = pool
        self.limits = limits or ImportLimits()
        self.dsn = dsn

    async def get(self, import_id: str) -> dict[str, Any]:
        """The stored report of an import (a dead ``running`` one is marked failed first)."""
        async with translate_errors():
            await self.pool.execute(_REAP_SQL, import_id)
            row = await self.pool.fetchrow(
                "SELECT status, report FROM imports WHERE id = $1", import_id
            )
        if row is None:
            raise NotFoundError(f"no import {import_id!r}")
        return {**row["report"], "status": row["status"]}

    async def run(
        self,
        chunks: Chunks,
        options: ImportOptions,
        *,
        progress: OnProgress = None,
        size_hint: int | None = None,
    ) -> ImportReport:
        """Import a stream of bytes. Returns the report, ``failed`` for bad input.

        ``size_hint``: the input's size in bytes, if known (a file's size, an upload's
        Content-Length); a large NDJSON input is then read by worker processes.

        Raises ``InvalidInputError`` for impossible options (before reading),
        ``BusyError`` when another import still runs after ``limits.lock_timeout``,
        ``StoreUnavailableError`` when Postgres fails (the import is then rolled
        back and recorded as failed where possible).
        """
        check_options(options)
        report = ImportReport(
            id=str(uuid.uuid4()),
            status="running",
            format=options.format,
            kind=options.kind,
            source=options.replace_source,
            dry_run=options.dry_run,
            skip_invalid=options.skip_invalid,
            created_by=options.created_by,
            started_at=datetime.now(UTC),
        )
        run = _Run(options, self.limits, report)
        processes = self._processes(options, size_hint)
        # Readers boot (a fresh interpreter each, ~0.3 s) while we connect and lock.
        workers = ReadWorkers(processes) if processes else None
        if workers is not None:
            workers.start()
        try:
            return await self._run(chunks, run, progress, workers)
        finally:
            if workers is not None:
                await workers.close()

    async def _run(
        self, chunks: Chunks, run: _Run, progress: OnProgress, workers: ReadWorkers | None
    ) -> ImportReport:
        report = run.report
        async with translate_errors():
            own = self.dsn is not None
            conn = await (asyncpg.connect(self.dsn) if own else self.pool.acquire())
            try:
                db = _Db(conn, self.limits.statement_timeout)
                await db.execute(
                    "SELECT pg_advisory_lock($1, $2)", IMPORT_LIVE_CLASS, live_key(report.id)
                )
                await self.pool.execute(_REAP_SQL, None)
                await self.pool.execute(
                    """INSERT INTO imports (id, status, format, source, created_by, created_at,
                       report) VALUES ($1, 'running', $2, $3, $4, $5, $6::text::jsonb)""",
                    *(report.id, report.format, report.source, report.created_by),
                    *(report.started_at, report.dumps()),
                )
                await db.execute("BEGIN")
                try:
                    return await self._transaction(db, chunks, run, progress, workers)
                except BaseException as exc:
                    await self._abandon(db, run, exc)
                    raise
            finally:
                await (conn.close() if own else self.pool.release(conn))

    async def _transaction(
        self, db: _Db, chunks: Chunks, run: _Run, progress: OnProgress, workers: ReadWorkers | None
    ) -> ImportReport:
        report, c = run.report, run.report.counts
        try:
            await self._begin(db, run)
            await self._load(db, chunks, run, progress, workers)
            if not run.failed:
                await self._finish(db, run)
        except InvalidInputError as exc:  # the file stopped the import
            for e in exc.errors:
                run.add_errors(e.line, [e], row=False)
            run.failed = True
        if run.failed:
            await db.execute("ROLLBACK")
            c.inserted = c.updated = c.unchanged = c.deleted = 0
            return await self._record_end(report, "failed")
        c.unchanged = c.rows - c.rejected - c.inserted - c.updated
        if run.options.dry_run:
            report.revision = await db.fetchval("SELECT value FROM ent_revision")
            await db.execute("ROLLBACK")
            return await self._record_end(report, "dry_run")
        if c.inserted or c.updated or c.deleted:
            report.revision = await self._bump(db, run)
        else:
            report.revision = await db.fetchval("SELECT value FROM ent_revision")
        _finalize(report, "committed")
        await db.execute(
            "UPDATE imports SET status = $2, finished_at = $3, report = $4::text::jsonb"
            " WHERE id = $1",
            *(report.id, report.status, report.finished_at, report.dumps()),
        )
        await db.execute("COMMIT")
        return report

    async def _begin(self, db: _Db, run: _Run) -> None:
        """Wait for any other import, create the staging tables, predict the revision."""
        wait = self.limits.lock_timeout
        try:
            await db.conn.execute(
                "SELECT pg_advisory_xact_lock($1)", AdvisoryLock.IMPORT, timeout=wait
            )
        except TimeoutError:
            busy = (
                f"another import is running: waited {wait:g} s for it to finish"
                " (ENTITLEMENTS_IMPORT_LOCK_WAIT); nothing was imported, try again later"
            )
            raise BusyError(busy, retry_after=max(1, math.ceil(wait))) from None
        await db.execute(_STAGING_SQL)
        run.revision = await db.fetchval("SELECT value + 1 FROM ent_revision")
        run.tail = f"\t{run.revision}\n"

    def _processes(self, options: ImportOptions, size_hint: int | None) -> int:
        """How many worker processes read this input (0: the importing process does)."""
        limits = self.limits
        if options.format != "ndjson" or size_hint is None:
            return 0
        if size_hint < limits.parallel_from_bytes:
            return 0
        if limits.read_processes is not None:
            return max(0, limits.read_processes)
        # One core stays with this process (and Postgres, if it runs here). On 2 CPUs one
        # worker was no faster than reading here, and two starved Postgres' COPY
        # (benchmarks/bench_import.py): readers start from 3 CPUs.
        cpus = os.cpu_count() or 1
        return min(4, cpus - 1) if cpus >= 3 else 0

    async def _load(
        self, db: _Db, chunks: Chunks, run: _Run, progress: OnProgress, workers: ReadWorkers | None
    ) -> None:
        """Read and validate (in a thread, or in worker processes) while a task writes the
        finished batches."""
        queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=2)
        writer = asyncio.create_task(self._write(db, queue, run))
        tick = _Ticker(run, progress)
        try:
            if workers is not None:
                await self._read_in_workers(chunks, run, queue, writer, tick, workers)
            else:
                await self._read_here(chunks, run, queue, writer, tick)
            await _hand(queue, await run.take(), writer)
            await _hand(queue, None, writer)
            await writer
        except BaseException:
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer
            raise
        finally:
            run.report.counts.rows = run.records
        tick.done()

    async def _read_here(
        self,
        chunks: Chunks,
        run: _Run,
        queue: asyncio.Queue[Batch | None],
        writer: asyncio.Task[None],
        tick: _Ticker,
    ) -> None:
        """The reader in a thread of this process (it keeps an API worker answering)."""
        options = run.options
        reader = make_reader(
            options.format,
            run,
            kind=options.kind,
            replace_source=options.replace_source,
            max_line=self.limits.max_line,
        )
        try:
            async for chunk in guarded(chunks):
                run.bytes += len(chunk)
                await asyncio.to_thread(reader.feed, chunk)
                run.records = reader.records
                if run.batch_ready():
                    await _hand(queue, await run.take(), writer)
                if run.hopeless():
                    return
                tick()
            await asyncio.to_thread(reader.finish)
        finally:
            run.records = reader.records

    async def _read_in_workers(
        self,
        chunks: Chunks,
        run: _Run,
        queue: asyncio.Queue[Batch | None],
        writer: asyncio.Task[None],
        tick: _Ticker,
        workers: ReadWorkers,
    ) -> None:
        """NDJSON cut at line ends into segments, read by worker processes, applied in order.

        This process checks what spans segments (the byte-order mark, a line longer than
        ``max_line`` still open at a cut, an input without records); a worker, what lies
        inside its segment, exactly as the in-process reader would.
        """
        limits, options = self.limits, run.options
        processes = workers.processes
        pending: collections.deque[asyncio.Future[Segment]] = collections.deque()
        head: bytes | None = b""  # until the byte-order mark question is settled
        rest = b""  # a partial line, waiting for its end
        line = 1  # the first line of the next segment

        def submit(data: bytes) -> None:
            nonlocal line
            pending.append(
                workers.read(
                    data,
                    line,
                    kind=options.kind,
                    replace_source=options.replace_source,
                    max_line=limits.max_line,
                    tail=run.tail,
                    keys=not run.all_keys,
                    skip_invalid=options.skip_invalid,
                )
            )
            line += data.count(b"\n")

        try:
            async for chunk in guarded(chunks):
                run.bytes += len(chunk)
                if head is not None:
                    head += chunk
                    if len(head) < 3:
                        continue
                    chunk, head = strip_bom(head, run), None
                rest += chunk
                if len(rest) >= limits.segment_bytes:
                    cut = rest.rfind(b"\n") + 1
                    if cut:
                        submit(rest[:cut])
                        rest = rest[cut:]
                    if len(rest) > limits.max_line:
                        while pending:  # what comes before counts, and may stop us first
                            _apply(await pending.popleft(), run)
                        raise too_long(line, limits.max_line)
                while pending and (len(pending) > 2 * processes or pending[0].done()):
                    _apply(await pending.popleft(), run)
                if run.batch_ready():
                    await _hand(queue, await run.take(), writer)
                if run.hopeless():
                    return
                tick()
            if head is not None:  # an input of under 3 bytes
                rest = strip_bom(head, run)
            if rest:
                submit(rest)
            while pending:
                _apply(await pending.popleft(), run)
                if run.batch_ready():
                    await _hand(queue, await run.take(), writer)
            if run.records == 0:
                raise no_records()
        finally:
            for future in pending:
                future.cancel()

    async def _write(self, db: _Db, queue: asyncio.Queue[Batch | None], run: _Run) -> None:
        while (batch := await queue.get()) is not None:
            grants, prepared, resources = batch
            if run.failed:
                continue  # the import will roll back: spare the database
            if prepared is not None:
                await self._write_grants(db, grants, prepared, run)
            if resources and not run.failed:
                await self._write_resources(db, resources, run)
            run.loaded += len(grants) + len(resources)

    async def _stage(
        self,
        db: _Db,
        table: str,
        rows: list[tuple[Any, ...]] | list[str],
        columns: Sequence[str],
        run: _Run,
    ) -> bool:
        """COPY a batch into ``table`` and refuse ids seen before in the file. False: stop.

        ``rows``: tuples, or lines in COPY text format.
        """
        ids = table + "ids"
        await db.execute(f"TRUNCATE {table}")
        if rows and isinstance(rows[0], str):
            await db.copy_text(table, rows, columns)
        else:
            await db.copy(table, cast(list[tuple[Any, ...]], rows), columns)
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
            message = f"{r['id']!r} appears again: the same {kind} id is at line {r['first']}"
            run.add_errors(r["line"], [FieldError("id", message)])
        if run.strict:
            run.failed = True
            return False
        await db.execute(f"DELETE FROM {table} WHERE line = ANY($1::int[])", [r[0] for r in again])
        return True

    async def _stored(self, db: _Db, ids: list[str], prepared: Prepared) -> dict[str, bool]:
        """Which of ``ids`` are stored grants: id -> whether this import wrote it."""
        limit = RANGE_ROWS_PER_ID * len(ids)
        rows = await db.fetch(_STORED_RANGE_SQL, prepared.first, prepared.last, limit)
        if len(rows) >= limit:
            rows = await db.fetch(_STORED_EXACT_SQL, ids)
        return {r[0]: r[1] for r in rows}

    async def _write_grants(self, db: _Db, rows: GrantRows, prepared: Prepared, run: _Run) -> None:
        """New ids straight into grants; stored (or rejected) ones through staging.

        Duplicates: within the batch by ``seen``; a row this import wrote by ``ours``;
        a row staged earlier when it is staged again (``_stage``: imp_gids); a
        rejected row by ``run.rejected_ids``.
        """
        ids = rows.ids
        stored = await self._stored(db, ids, prepared)
        rejected = run.rejected_ids
        # The common case of a first load: every row valid, new and once in the batch,
        # none rejected so far (and not too many to keep).
        if not stored and rejected == {} and prepared.payload is not None:
            await self._copy_new(db, rows, run, prepared.payload)
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
        tail = run.tail
        for gid, line, text, key in zip(rows.ids, rows.lines, rows.texts, rows.keys, strict=True):
            first = seen.setdefault(gid, line)
            if first != line:
                run.again(line, gid, first)
                continue
            ours = stored.get(gid)
            if text is None:  # rejected: staged for its id only (replace_source keeps it)
                staged.append(f"{gid}\t{_NULL_DATA}\t{line}\tf\n")
                if rejected is not None:
                    rejected.setdefault(gid, line)
                    if len(rejected) > MAX_REJECTED_IDS:
                        run.rejected_ids = rejected = None
            elif ours is None and gid in earlier:
                run.again(line, gid, earlier[gid])
            elif ours:
                run.again(line, gid, earlier.get(gid))
            elif ours is None:
                direct.add(gid, line, text, key)
            else:
                staged.append(f"{text[: text.rindex(tail)]}\t{line}\tt\n")
        if run.failed:
            return  # strict, and a duplicate id: nothing will land
        if direct:
            await self._copy_new(db, direct, run)
        if staged and await self._stage(db, "imp_g", staged, _G_COLUMNS, run):
            merged = await db.fetchrow(_MERGE_GRANTS_SQL, run.revision, run.key_limit())
            run.report.counts.inserted += merged["inserted"]
            run.report.counts.updated += merged["updated"]
            run.add_keys(merged["keys"])

    async def _copy_new(
        self, db: _Db, rows: GrantRows, run: _Run, payload: bytes | None = None
    ) -> None:
        """COPY rows whose ids are not stored straight into grants (``payload``: their
        text, already joined)."""
        try:
            if payload is None:
                payload = "".join(cast(list[str], rows.texts)).encode()  # all have text
            await db.copy_payload("grants", payload, _DIRECT_COLUMNS)
        except asyncpg.UniqueViolationError:
            raise StoreUnavailableError(
                "another client created a grant of this file while it was being imported;"
                " run the import again",
                retry_after=1,
            ) from None
        run.report.counts.inserted += len(rows)
        run.add_grant_keys(rows.keys)

    async def _write_resources(self, db: _Db, rows: list[tuple[Any, ...]], run: _Run) -> None:
        if not run.graph_locked:
            # Taken once, before the first graph write, in put_resource's order.
            await db.execute("SELECT pg_advisory_xact_lock($1)", AdvisoryLock.GRAPH)
            run.graph_locked = True
        if not await self._stage(db, "imp_r", rows, ("id", "parents", "line", "ok"), run):
            return
        await db.execute("TRUNCATE imp_rb")
        await db.execute(_CLASSIFY_RESOURCES_SQL)
        changed = await db.fetchrow(
            """SELECT count(*) FILTER (WHERE existed) AS updated,
                      count(*) FILTER (WHERE NOT existed) AS inserted,
                      ARRAY(SELECT id FROM imp_rb LIMIT $1) AS ids FROM imp_rb""",
            run.key_limit(),
        )
        if changed["updated"] or changed["inserted"]:
            run.report.counts.inserted += changed["inserted"]
            run.report.counts.updated += changed["updated"]
            run.add_keys(f"resource {rid}" for rid in changed["ids"])
            for i, sql in enumerate(_MERGE_RESOURCES_SQL):
                await db.execute(sql, *((run.revision,) if i < 2 else ()))

    async def _finish(self, db: _Db, run: _Run) -> None:
        """After the last batch: the --replace-source delete and the resource-graph check."""
        source = run.options.replace_source
        if source is not None:
            if run.valid_grants == 0:
                raise InvalidInputError(
                    FieldError(
                        "replace_source",
                        f"the file has no valid grants: replacing source {source!r} with it"
                        " would remove all of its grants; refused",
                    )
                )
            deleted = await db.fetchrow(_REPLACE_SOURCE_SQL, source, run.key_limit())
            run.report.counts.deleted = deleted["deleted"]
            run.add_keys(deleted["keys"])
        if run.graph_locked:
            for r in await db.fetch(_GRAPH_CHECK_SQL, self.limits.max_errors):
                message = (
                    f"would create a cycle: {r['start']} would be its own ancestor"
                    if r["cycle"]
                    else depth_refusal(r["above"], r["below"])
                    or f"the resource graph may be at most {MAX_DEPTH} levels deep"
                )
                run.add_errors(r["line"], [FieldError("parents", message)])
                run.failed = True

    async def _bump(self, db: _Db, run: _Run) -> int:
        """Advance the revision once; fix our rows if another write took the one we expected."""
        revision = await bump_revision(db.conn, run.changes())
        if revision != run.revision:
            for table in ("grants", "resources"):
                await db.execute(
                    f"UPDATE {table} SET revision = $1 WHERE revision = $2 AND xmin = {_MY_XID}",
                    revision,
                    run.revision,
                )
        return revision

    async def _abandon(self, db: _Db, run: _Run, exc: BaseException) -> None:
        """A failure that is not the file's fault: roll back, and record it if we still can."""
        with contextlib.suppress(Exception):
            await db.execute("ROLLBACK")
        c = run.report.counts
        c.inserted = c.updated = c.unchanged = c.deleted = 0
        if isinstance(exc, asyncio.CancelledError):
            reason = "interrupted"
        else:
            reason = str(exc) if isinstance(exc, EntitlementsError) else type(exc).__name__
        message = f"the import stopped ({reason}); nothing was imported"
        run.add_errors(None, [FieldError("", message)], row=False)
        with contextlib.suppress(Exception):
            await asyncio.shield(self._record_end(run.report, "failed"))

    async def _record_end(self, report: ImportReport, status: str) -> ImportReport:
        """Record a failed or dry run, outside the (rolled back) import transaction.

        ``status = 'running'``: never overwrite a commit whose acknowledgement was lost.
        """
        _finalize(report, status)
        await self.pool.execute(
            """UPDATE imports SET status = $2, finished_at = $3, report = $4::text::jsonb
               WHERE id = $1 AND status = 'running'""",
            *(report.id, report.status, report.finished_at, report.dumps()),
        )
        return report


class _Ticker:
    """Calls ``progress`` at most every 0.2 s, and once at the end."""

    def __init__(self, run: _Run, progress: OnProgress) -> None:
        self.run = run
        self.progress = progress
        self.started = self.shown = time.monotonic()

    def __call__(self) -> None:
        if self.progress is not None and time.monotonic() - self.shown >= 0.2:
            self.shown = time.monotonic()
            self._show(self.shown)

    def done(self) -> None:
        if self.progress is not None:
            self._show(time.monotonic())

    def _show(self, now: float) -> None:
        run = self.run
        assert self.progress is not None
        self.progress(Progress(run.records, run.bytes, run.loaded, now - self.started))


def _apply(segment: Segment, run: _Run) -> None:
    """A worker's segment, into the run, as the in-process reader would have fed it."""
    for message in segment.notes:
        run.note(message)
    run.records += segment.records
    run.valid_grants += segment.valid_grants
    for line, errors in segment.rejects:
        run.add_errors(line, errors)
        if run.strict:
            run.failed = True
    if not run.failed:
        run.grants.extend(segment.grants)
        run.resources.extend(segment.resources)
    if segment.fatal is not None:  # the rows before it were read, as in this process
        raise InvalidInputError(segment.fatal)


def _finalize(report: ImportReport, status: str) -> None:
    report.status = status
    report.finished_at = datetime.now(UTC)
    # File-level problems (no line) first, then by line: the order a person fixes them in.
    report.errors.sort(key=lambda e: (e["line"] is not None, e["line"] or 0))


async def _hand(
    queue: asyncio.Queue[Batch | None], item: Batch | None, writer: asyncio.Task[None]
) -> None:
    """Queue a batch for the writer, or raise the writer's error if it stopped."""
    put = asyncio.ensure_future(queue.put(item))
    done, _ = await asyncio.wait({put, writer}, return_when=asyncio.FIRST_COMPLETED)
    if put not in done:
        put.cancel()
        writer.result()  # raises the writer's exception
        raise RuntimeError("the import writer stopped early")


__all__ = [
    "Counts",
    "ImportLimits",
    "ImportOptions",
    "ImportReport",
    "ImportService",
    "Progress",
    "check_options",
]
