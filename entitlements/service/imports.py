"""Bulk import: stream a file in, validate every record, hand it to the store in batches.

One import is one transaction: every row lands or none does (``skip_invalid``
lands the valid rows and reports the others; ``dry_run`` does everything and
rolls back). Memory stays flat whatever the file size::

    chunks -> reader (import_formats: split, decode, validate, render COPY text;
              in a thread, or in worker processes) -> batches of rows
           -> writer task: each batch to the store (``ImportSession.write_grants``,
              ``write_resources``: which ids are stored already, COPY, staging, merge)
           -> at the end: --replace-source delete, resource-graph check, one revision

This module is the orchestration: options, the reader and its workers, batches,
the writer task, progress, the report and every rule about what fails an import.
What happens in Postgres is ``entitlements.store.imports`` (the record, the
transaction, liveness) and ``store.import_writer`` (staging, COPY, merge), behind
the ``ImportStore`` port. Batches land as they come, so Postgres maintains indexes
while Python validates the next batch; the reader's thread keeps an API worker
answering during an upload.

- **Serialized**: imports run one at a time. An import waits for the one before
  at most ``lock_timeout``, then fails as busy (nothing imported).
- **Counts come from SQL**: a row equal to the stored one is ``unchanged`` and
  never written: a re-import writes nothing and the revision does not advance.
- **One revision per import**; the change feed gets the touched resources and
  users, or one ``('all', '*')`` when over ``MAX_CHANGE_KEYS`` were touched.
- **Duplicate ids** in a file are refused naming both lines (``skip_invalid``:
  the first wins).
- **replace_source**: that source's grants missing from the file are deleted;
  records get the source, a record naming another is refused; a row rejected by
  ``skip_invalid`` keeps its grant if its id could be read; a file without a
  valid grant is refused, not taken as "delete them all".
- **Resources** replace their parents; a cycle or a path longer than
  ``MAX_DEPTH`` levels (counting the levels below a resource too, so two imports
  cannot stack chains) fails the import, even with ``skip_invalid`` (which edge
  to drop would be a guess).
- **Bookkeeping**: the import is on record (``GET /v1/imports/{id}``) from its
  start, failed ones too; a killed import is marked failed by the next import, or
  a GET of it.
- **DDEX ERN messages** (``run_ddex``; ``run`` spools one uploaded message to a
  temporary file first) go through the same transaction, lock, report, revision
  and change feed; what they do is ``service.ddex_import``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from entitlements.ddex import DEFAULT_MAPPING, DdexMapping
from entitlements.errors import BusyError, EntitlementsError, FieldError, InvalidInputError
from entitlements.service.ddex_import import DdexImport, MessageSource
from entitlements.service.import_formats import (
    guarded,
    make_reader,
    no_records,
    strip_bom,
    too_long,
)
from entitlements.service.import_report import (
    Counts,
    ImportLimits,
    ImportOptions,
    ImportReport,
    Progress,
    check_options,
)
from entitlements.service.import_run import (
    Batch,
    Chunks,
    ImportRun,
    OnProgress,
    Ticker,
    apply_segment,
)
from entitlements.service.import_workers import ReadWorkers, Segment
from entitlements.service.ports import ImportSession, ImportStore
from entitlements.store.import_rows import row_tail


class ImportService:
    """Runs imports through an ``ImportStore`` and answers for them later (``get``).

    Built once per process (it holds no state of one import): the API's lifespan
    and the CLI each make one. ``ddex_mapping``: how DDEX deals become grants.
    """

    def __init__(
        self,
        store: ImportStore,
        limits: ImportLimits | None = None,
        *,
        ddex_mapping: DdexMapping = DEFAULT_MAPPING,
    ) -> None:
        self.store = store
        self.limits = limits or ImportLimits()
        self.ddex_mapping = ddex_mapping

    async def get(self, import_id: str) -> dict[str, Any]:
        """The stored report of an import (a dead ``running`` one is marked failed first)."""
        return await self.store.report(import_id)

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
        run = self._start(options)
        if options.format == "ddex":
            return await self._run(run, lambda s: self._upload(s, chunks, run, progress))
        processes = self._processes(options, size_hint)
        # Readers boot (a fresh interpreter each, ~0.3 s) while we connect and lock.
        workers = ReadWorkers(processes) if processes else None
        if workers is not None:
            workers.start()
        try:
            return await self._run(
                run, lambda s: self._load_and_finish(s, chunks, run, progress, workers)
            )
        finally:
            if workers is not None:
                await workers.close()

    async def run_ddex(
        self,
        sources: Sequence[MessageSource],
        options: ImportOptions,
        *,
        progress: OnProgress = None,
    ) -> ImportReport:
        """Import DDEX ERN messages as one import: one transaction, one report (a line per
        message), applied in MessageCreatedDateTime order. Raises as ``run`` does."""
        if options.format != "ddex":
            raise InvalidInputError(FieldError("format", "DDEX messages are format 'ddex'"))
        run = self._start(options)
        return await self._run(
            run, lambda s: DdexImport(s, run, self.ddex_mapping, progress).load(sources)
        )

    def _start(self, options: ImportOptions) -> ImportRun:
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
        return ImportRun(options, self.limits, report)

    async def _run(self, run: ImportRun, body: Body) -> ImportReport:
        report = run.report
        async with self.store.session(
            report.id,
            format=report.format,
            source=report.source,
            created_by=report.created_by,
            started_at=report.started_at,
            report=report.dumps(),
            timeout=self.limits.statement_timeout,
        ) as session:
            try:
                return await self._transaction(session, run, body)
            except BaseException as exc:
                await self._abandon(session, run, exc)
                raise

    async def _transaction(
        self, session: ImportSession, run: ImportRun, body: Body
    ) -> ImportReport:
        report, c = run.report, run.report.counts
        try:
            await self._begin(session, run)
            await body(session)
        except InvalidInputError as exc:  # the file stopped the import
            for e in exc.errors:
                run.add_errors(e.line, [e], row=False)
            run.failed = True
        if run.failed:
            report.nothing_landed()
            return await self._end(session, report, "failed")
        c.unchanged = c.rows - c.rejected - c.inserted - c.updated
        if run.options.dry_run:
            report.revision = await session.current_revision()
            return await self._end(session, report, "dry_run")
        if c.inserted or c.updated or c.deleted or run.keys or run.all_keys:
            # (DDEX track links change resources without a grant row changing.)
            report.revision = await session.bump(run.changes())
        else:
            report.revision = await session.current_revision()
        _finalize(report, "committed")
        assert report.finished_at is not None
        await session.commit(report.status, report.finished_at, report.dumps())
        return report

    async def _begin(self, session: ImportSession, run: ImportRun) -> None:
        """Wait for any other import; rows are then rendered with the revision expected."""
        wait = self.limits.lock_timeout
        revision = await session.begin(wait)
        if revision is None:
            busy = (
                f"another import is running: waited {wait:g} s for it to finish"
                " (ENTITLEMENTS_IMPORT_LOCK_WAIT); nothing was imported, try again later"
            )
            raise BusyError(busy, retry_after=max(1, math.ceil(wait)))
        run.tail = row_tail(revision)

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

    async def _load_and_finish(
        self,
        session: ImportSession,
        chunks: Chunks,
        run: ImportRun,
        progress: OnProgress,
        workers: ReadWorkers | None,
    ) -> None:
        await self._load(session, chunks, run, progress, workers)
        if not run.failed:
            await self._finish(session, run)

    async def _upload(
        self, session: ImportSession, chunks: Chunks, run: ImportRun, progress: OnProgress
    ) -> None:
        """One DDEX message from a stream (an HTTP body): spooled to a temporary file
        (memory to 8 MiB, then disk; at most ``limits.max_message_bytes``), then read."""
        limit = self.limits.max_message_bytes
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
            size = 0
            async for chunk in guarded(chunks):
                size += len(chunk)
                if size > limit:
                    raise InvalidInputError(
                        FieldError("", f"the message is over {limit:,} bytes; refused")
                    )
                spool.write(chunk)  # memory, or the page cache: no wait worth a thread
            source = MessageSource("message.xml", file=spool, size=size)
            await DdexImport(session, run, self.ddex_mapping, progress).load([source])

    async def _load(
        self,
        session: ImportSession,
        chunks: Chunks,
        run: ImportRun,
        progress: OnProgress,
        workers: ReadWorkers | None,
    ) -> None:
        """Read and validate (in a thread, or in worker processes) while a task writes the
        finished batches."""
        queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=2)
        writer = asyncio.create_task(self._write(session, queue, run))
        tick = Ticker(run, progress)
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
        run: ImportRun,
        queue: asyncio.Queue[Batch | None],
        writer: asyncio.Task[None],
        tick: Ticker,
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
        run: ImportRun,
        queue: asyncio.Queue[Batch | None],
        writer: asyncio.Task[None],
        tick: Ticker,
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
                            apply_segment(await pending.popleft(), run)
                        raise too_long(line, limits.max_line)
                while pending and (len(pending) > 2 * processes or pending[0].done()):
                    apply_segment(await pending.popleft(), run)
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
                apply_segment(await pending.popleft(), run)
                if run.batch_ready():
                    await _hand(queue, await run.take(), writer)
            if run.records == 0:
                raise no_records()
        finally:
            for future in pending:
                future.cancel()

    async def _write(
        self, session: ImportSession, queue: asyncio.Queue[Batch | None], run: ImportRun
    ) -> None:
        while (batch := await queue.get()) is not None:
            grants, prepared, resources = batch
            if run.failed:
                continue  # the import will roll back: spare the database
            if prepared is not None:
                await session.write_grants(grants, prepared, run)
            if resources and not run.failed:
                await session.write_resources(resources, run)
            # Rejected rows ride along for their ids only (texts None): not loaded.
            run.loaded += len(grants) - grants.texts.count(None) + len(resources)

    async def _finish(self, session: ImportSession, run: ImportRun) -> None:
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
            deleted, keys = await session.replace_source(source, run.key_limit())
            run.report.counts.deleted = deleted
            run.add_keys(keys)
        for line, message in await session.graph_problems(self.limits.max_errors):
            run.add_errors(line, [FieldError("parents", message)])
            run.failed = True

    async def _abandon(self, session: ImportSession, run: ImportRun, exc: BaseException) -> None:
        """A failure that is not the file's fault: roll back, and record it if we still can."""
        run.report.nothing_landed()
        if isinstance(exc, asyncio.CancelledError):
            reason = "interrupted"
        else:
            reason = str(exc) if isinstance(exc, EntitlementsError) else type(exc).__name__
        message = f"the import stopped ({reason}); nothing was imported"
        run.add_errors(None, [FieldError("", message)], row=False)
        with contextlib.suppress(Exception):
            await self._end(session, run.report, "failed")

    async def _end(self, session: ImportSession, report: ImportReport, status: str) -> ImportReport:
        """Roll back a failed or dry run, and record it (a commit whose acknowledgement
        was lost is never overwritten)."""
        _finalize(report, status)
        assert report.finished_at is not None
        await session.end(report.status, report.finished_at, report.dumps())
        return report


Body = Callable[[ImportSession], Awaitable[None]]
"""What an import does inside its transaction, once it holds the import lock."""


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
    "MessageSource",
    "Progress",
    "check_options",
]
