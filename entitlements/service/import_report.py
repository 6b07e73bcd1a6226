"""What an import is asked and what it answers: options, limits, progress, the report.

``check_options`` refuses impossible combinations before anything is read; the
report is what ``POST``/``GET /v1/imports`` and ``entitlements import`` show.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from entitlements.domain.model import format_time, grant_from_mapping
from entitlements.errors import FieldError, InvalidInputError
from entitlements.service.import_formats import MAX_LINE_BYTES, Format, Kind
from entitlements.service.import_workers import SEGMENT_BYTES

if TYPE_CHECKING:  # the DDEX reader (lxml) loads only for a DDEX import
    from entitlements.service.ddex_report import DdexSummary


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
    max_message_bytes: int = 512 << 20
    """The largest DDEX message an upload may send (it is spooled to a temporary file)."""


@dataclass(frozen=True, slots=True)
class Progress:
    """Where an import is: records read, bytes read, valid rows handed to the database,
    seconds since start, rows rejected so far, and whether this is the last word (the
    counts then agree with the report)."""

    rows: int
    bytes: int
    loaded: int
    elapsed: float
    rejected: int = 0
    done: bool = False


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
    changed; for a dry run, the revision it was computed at). ``ddex``: what the
    messages of a DDEX import said and did (``service.ddex_report``), else None.
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
    ddex: DdexSummary | None = None

    @property
    def ok(self) -> bool:
        return self.status in {"committed", "dry_run"}

    def nothing_landed(self) -> None:
        """A failed import: it changed nothing (the counts say so)."""
        c = self.counts
        c.inserted = c.updated = c.unchanged = c.deleted = 0
        if self.ddex is not None:
            self.ddex.rolled_back()

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["counts"] = asdict(self.counts)
        out["ddex"] = None if self.ddex is None else self.ddex.to_json()
        out["started_at"] = format_time(self.started_at)
        out["finished_at"] = format_time(self.finished_at)
        return out

    def dumps(self) -> str:
        """The report as JSON text (passed as ``text``: any connection, codec or not)."""
        return orjson.dumps(self.to_json()).decode()


def check_options(options: ImportOptions) -> None:
    """Refuse impossible combinations before anything is read (exit code 2 / HTTP 422)."""
    errors: list[FieldError] = []
    if options.format not in ("ndjson", "csv", "ddex"):
        errors.append(FieldError("format", "must be 'csv', 'ndjson' or 'ddex'"))
    if options.kind not in ("grant", "resource"):
        errors.append(FieldError("kind", "must be 'grant' or 'resource'"))
    if options.format == "ddex":
        errors.extend(_ddex_problems(options))
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


def _ddex_problems(options: ImportOptions) -> list[FieldError]:
    errors = []
    if options.kind != "grant":
        errors.append(FieldError("kind", "a DDEX message is deals: give no kind"))
    if options.replace_source is not None:
        errors.append(
            FieldError(
                "replace_source",
                "DDEX messages replace per release (each is the whole truth about the releases"
                " it carries, for its sender): give no replace_source",
            )
        )
    if options.skip_invalid:
        errors.append(
            FieldError("skip_invalid", "a DDEX message is applied whole or refused whole")
        )
    return errors


__all__ = [
    "Counts",
    "ImportLimits",
    "ImportOptions",
    "ImportReport",
    "Progress",
    "check_options",
]
