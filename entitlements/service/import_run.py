"""The state of one import run, shared by its reader and its writer, and its progress.

``ImportRun`` is where records arrive (the readers' ``RecordSink``: each valid grant
becomes a COPY text line at once, ``store.import_rows``), what the store's writer
reports to (the ``ImportTally``: rows written, duplicate ids, change-feed keys),
and the report being built. ``apply_segment`` feeds it what a worker process
read; ``Ticker`` shows its progress.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, Callable, Iterable, Sequence

from entitlements.domain.model import GrantRow, Resource
from entitlements.errors import FieldError, InvalidInputError
from entitlements.service.import_formats import Kind
from entitlements.service.import_report import ImportLimits, ImportOptions, ImportReport, Progress
from entitlements.service.import_workers import Segment
from entitlements.store.import_rows import (
    GrantRows,
    Prepared,
    ResourceRow,
    change_key,
    copy_text,
    row_tail,
)
from entitlements.store.results import MAX_CHANGE_KEYS


class ImportRun:
    """The mutable state of one import, shared by the reader's sink and the writer.

    It is the ``RecordSink`` too: records arrive here and become staged rows; and
    the ``ImportTally`` the store's writer reports to. Only one side touches it at a
    time (the reader inside ``to_thread``, the event loop between chunks), so it
    needs no lock.
    """

    def __init__(self, options: ImportOptions, limits: ImportLimits, report: ImportReport) -> None:
        self.options = options
        self.limits = limits
        self.report = report
        self.strict = not options.skip_invalid
        self.failed = False  # strict mode saw a bad row: nothing will land, only validate on
        self.grants = GrantRows()
        self.resources: list[ResourceRow] = []
        self.valid_grants = 0
        self.keys: set[tuple[str, str]] = set()
        self.all_keys = False
        self.bytes = 0
        self.loaded = 0
        self.records = 0  # records read so far
        self.tail = row_tail(0)  # the last field of a grants line: the revision expected

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

    def wrote(self, inserted: int, updated: int) -> None:
        counts = self.report.counts
        counts.inserted += inserted
        counts.updated += updated

    def add_keys(self, encoded: Iterable[str]) -> None:
        """Change-feed entries from SQL (``'user <id>'`` or ``'resource <id>'``)."""
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

    def again(self, line: int, record_id: str, first: int | None, kind: str = "grant") -> None:
        """The file names ``record_id`` a second time (``first``: the earlier line, if known)."""
        where = f"at line {first}" if first is not None else "on an earlier line"
        message = f"{record_id!r} appears again: the same {kind} id is {where}"
        self.add_errors(line, [FieldError("id", message)])
        if self.strict:
            self.failed = True

    def key_limit(self) -> int:
        return 0 if self.all_keys else MAX_CHANGE_KEYS + 1

    def changes(self) -> list[tuple[str, str]]:
        return [("all", "*")] if self.all_keys else sorted(self.keys)


Batch = tuple[GrantRows, Prepared | None, list[ResourceRow]]
Chunks = AsyncIterable[bytes]
OnProgress = Callable[[Progress], None] | None


class Ticker:
    """Calls ``progress`` at most every 0.2 s, and once at the end."""

    def __init__(self, run: ImportRun, progress: OnProgress) -> None:
        self.run = run
        self.progress = progress
        self.started = self.shown = time.monotonic()

    def __call__(self) -> None:
        if self.progress is not None and time.monotonic() - self.shown >= 0.2:
            self.shown = time.monotonic()
            self._show(self.shown)

    def done(self) -> None:
        if self.progress is not None:
            self._show(time.monotonic(), done=True)

    def _show(self, now: float, *, done: bool = False) -> None:
        run = self.run
        assert self.progress is not None
        rejected = run.report.counts.rejected
        self.progress(
            Progress(run.records, run.bytes, run.loaded, now - self.started, rejected, done)
        )


def apply_segment(segment: Segment, run: ImportRun) -> None:
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


__all__ = ["Batch", "Chunks", "ImportRun", "OnProgress", "Ticker", "apply_segment"]
