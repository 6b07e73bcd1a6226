"""``entitlements import FILE [FILE …]``: the bulk import from the command line.

The file is streamed (memory stays flat whatever its size) into one
transaction; see ``entitlements.service.imports`` for what an import does.
DDEX ERN messages (``.xml``, or a file whose first markup is an element:
``--format ddex``) may be several: they are one import, applied in
``MessageCreatedDateTime`` order, with the mapping of ``--mapping FILE`` or
``ENTITLEMENTS_DDEX_MAPPING`` (``entitlements.service.ddex_import``).

- Progress goes to stderr: a rich bar (bytes of the file, rows, rows/s) when
  stderr is a terminal, otherwise a plain line about once a second (logs, CI).
- The summary goes to stdout; ``--json`` prints the full report instead.
- Exit codes (docs/design.md): 0 committed or dry run; 2 bad usage or bad input (the
  import is then rolled back and recorded as failed); 1 runtime failure (among
  them: another import still running after ``ENTITLEMENTS_IMPORT_LOCK_WAIT``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as Bar

from entitlements.cli.environment import cli_actor, database, fail, load_settings, run
from entitlements.service.import_formats import Format, Kind

if TYPE_CHECKING:  # the service, asyncpg and the store load only when an import runs
    from entitlements.ddex import DdexMapping
    from entitlements.service.imports import ImportOptions, ImportReport, Progress
    from entitlements.settings import Settings

EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
    ".xml": "ddex",
}
SHOWN_ERRORS = 20
SHOWN_MESSAGES = 50
IMPORT_SWITCH_INTERVAL = 0.0005  # seconds (Python's default: 0.005)
PLAIN_EVERY = 1.0  # seconds between plain progress lines


def import_command(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="the file to import (CSV with a header row, or NDJSON); or DDEX ERN messages,"
            " one or more: one import",
            exists=True,
            dir_okay=False,
            readable=True,
            metavar="FILE",
        ),
    ],
    format: Annotated[
        Format | None,
        typer.Option(
            "--format",
            metavar="[ndjson|csv|ddex]",
            help="csv, ndjson or ddex (default: from the file's extension, or XML markup: ddex)",
        ),
    ] = None,
    kind: Annotated[
        Kind,
        typer.Option(
            "--kind",
            metavar="[grant|resource]",
            help="what the rows are (NDJSON: the default for records without 'kind')",
            show_default=True,
        ),
    ] = "grant",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="report what would change; change nothing")
    ] = False,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="import the valid rows, report the others")
    ] = False,
    replace_source: Annotated[
        str | None,
        typer.Option(
            "--replace-source",
            metavar="NAME",
            help="the file is the whole truth for this feed: its grants not in the file are removed",
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="print the full report as JSON on stdout")
    ] = False,
    mapping: Annotated[
        Path | None,
        typer.Option(
            "--mapping",
            metavar="FILE",
            help="DDEX: how deals become grants, a TOML or JSON file (default:"
            " ENTITLEMENTS_DDEX_MAPPING, else the defaults in the README)",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            "--processes",
            metavar="N",
            min=0,
            max=64,
            help="worker processes reading an NDJSON file of 16 MiB or more (default: with"
            " 3+ CPUs one per CPU but one, at most 4, else 0: read in this process)",
        ),
    ] = None,
) -> None:
    """Bulk-import grants or resources, or DDEX ERN deal messages: validated, all or
    nothing, idempotent."""
    from entitlements.service.imports import ImportOptions

    chosen = format or _detect(files)
    if len(files) > 1 and chosen != "ddex":
        raise fail("several files are one import only for DDEX messages: import them one by one", 2)
    if mapping is not None and chosen != "ddex":
        raise fail("--mapping applies to DDEX messages (--format ddex)", 2)
    file = files[0]
    options = ImportOptions(
        format=chosen,
        kind=kind,
        dry_run=dry_run,
        skip_invalid=skip_invalid,
        replace_source=replace_source,
        created_by=cli_actor(),
    )
    settings = load_settings()
    if chosen == "ddex":
        ddex_mapping = _mapping(mapping or settings.ddex_mapping)
        total = sum(f.stat().st_size for f in files)
        with database(settings) as s, ProgressDisplay(total) as show:
            report = run(lambda: _import_ddex(s, files, options, show, ddex_mapping))
    else:
        with database(settings) as s, ProgressDisplay(file.stat().st_size) as show:
            size = file.stat().st_size
            report = run(lambda: _import(s, file, size, options, show, processes))
    if json_output:
        typer.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(summary(report))
    if not report.ok:
        raise fail(
            f"the import failed ({report.error_count} problem(s); the first: {first_error(report)});"
            " nothing was imported",
            2,
        )


def _detect(files: list[Path]) -> Format:
    """The format of the files: by extension, else XML markup (DDEX) at the start."""
    found = {EXTENSIONS.get(f.suffix.lower()) or _sniff(f) for f in files}
    if None in found:
        bad = next(f for f in files if (EXTENSIONS.get(f.suffix.lower()) or _sniff(f)) is None)
        raise fail(f"cannot tell the format of {bad.name}: give --format csv, ndjson or ddex", 2)
    if len(found) > 1:
        raise fail("the files are of different formats: import them one by one", 2)
    chosen = found.pop()
    assert chosen is not None
    return chosen


def _sniff(file: Path) -> Format | None:
    """``ddex`` for a file whose first markup is an XML declaration or element (the
    reader then checks that its root is an ERN message, naming what it found)."""
    try:
        with file.open("rb") as f:
            head = f.read(1024)
    except OSError:
        return None
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return "ddex" if head.startswith(b"<") else None


def check_ddex_mapping(settings: Settings) -> None:
    """Refuse to start with an ``ENTITLEMENTS_DDEX_MAPPING`` that cannot be used (exit 2)."""
    if settings.ddex_mapping is not None:
        _mapping(settings.ddex_mapping)


def _mapping(path: Path | None) -> DdexMapping:
    from entitlements.errors import InvalidInputError
    from entitlements.service.ddex_import import mapping_for

    try:
        return mapping_for(path)
    except InvalidInputError as exc:
        raise fail(f"the DDEX mapping is refused: {exc}", 2) from None


async def _import_ddex(
    settings: Settings,
    files: list[Path],
    options: ImportOptions,
    show: ProgressDisplay,
    mapping: DdexMapping,
) -> ImportReport:
    from entitlements.service.imports import ImportLimits, ImportService, MessageSource
    from entitlements.store.imports import PostgresImportStore
    from entitlements.store.postgres import PostgresStore

    assert settings.database_url is not None
    pooled = settings.database_pooler != "none"
    store = await PostgresStore.open(
        settings.database_url,
        min_size=1,
        max_size=2,
        timeout=settings.db_timeout,
        pooled=pooled,
    )
    try:
        limits = ImportLimits(lock_timeout=settings.import_lock_wait)
        imports = PostgresImportStore(store.pool, dsn=settings.database_url, pooled=pooled)
        service = ImportService(imports, limits, ddex_mapping=mapping)
        sources = [MessageSource(f.name, path=f, size=f.stat().st_size) for f in files]
        return await service.run_ddex(sources, options, progress=show)
    finally:
        await store.close()


async def _import(
    settings: Settings,
    file: Path,
    size: int,
    options: ImportOptions,
    show: ProgressDisplay,
    processes: int | None,
) -> ImportReport:
    from entitlements.service.import_formats import read_file
    from entitlements.service.imports import ImportLimits, ImportService
    from entitlements.store.imports import PostgresImportStore
    from entitlements.store.postgres import PostgresStore

    assert settings.database_url is not None
    pooled = settings.database_pooler != "none"
    store = await PostgresStore.open(
        settings.database_url,
        min_size=1,
        max_size=2,
        timeout=settings.db_timeout,
        pooled=pooled,
    )
    # The reader thread holds the GIL for 5 ms at a time by default; the writer then
    # waits that long to hand Postgres its next batch. A shorter interval keeps the
    # COPYs back to back (~0.3 s less idle Postgres per 1M rows, benchmarks/bench_import.py).
    # This process does nothing else, so the cost of switching more often is ours alone.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(IMPORT_SWITCH_INTERVAL)
    try:
        limits = ImportLimits(read_processes=processes, lock_timeout=settings.import_lock_wait)
        imports = PostgresImportStore(store.pool, dsn=settings.database_url, pooled=pooled)
        service = ImportService(imports, limits)
        return await service.run(read_file(str(file)), options, progress=show, size_hint=size)
    finally:
        sys.setswitchinterval(interval)
        await store.close()


def summary(report: ImportReport) -> str:
    """The report for a person: outcome, counts, and the first errors."""
    c = report.counts
    outcome = {
        "committed": f"committed at revision {report.revision}",
        "dry_run": f"dry run at revision {report.revision}: nothing was changed",
        "failed": "failed: nothing was imported",
    }.get(report.status, report.status)
    lines = [
        f"import {report.id} {outcome}",
        f"rows {c.rows:,}  inserted {c.inserted:,}  updated {c.updated:,}  unchanged"
        f" {c.unchanged:,}  deleted {c.deleted:,}  rejected {c.rejected:,}",
    ]
    lines.extend(f"note: {n}" for n in report.notes)
    if report.ddex is not None:
        lines.extend(ddex_summary(report.ddex.to_json()))
    for e in report.errors[:SHOWN_ERRORS]:
        where = f"line {e['line']}" if e["line"] is not None else "file"
        field = f" {e['field']}" if e["field"] else ""
        lines.append(f"  {where}{field}: {e['message']}")
    more = report.error_count - min(len(report.errors), SHOWN_ERRORS)
    if more > 0:
        lines.append(
            f"  … and {more:,} more (the full report: --json, or GET /v1/imports/{report.id})"
        )
    return "\n".join(lines)


def ddex_summary(ddex: dict[str, Any]) -> list[str]:
    """What the messages said and did: totals, then a line per message and the stale releases."""

    def counted(counts: dict[str, int]) -> str:
        return ", ".join(f"{k} {v:,}" for k, v in counts.items()) or "none"

    out = [
        f"messages {ddex['messages']:,} (test {ddex['test_messages']:,}, stale"
        f" {ddex['stale_messages']:,})  releases {ddex['releases']:,}  deals {ddex['deals']:,}"
        f"  grants {ddex['grants']:,}  track links +{ddex['links_added']:,}"
        f" -{ddex['links_removed']:,}",
        f"skipped deals: {counted(ddex['skipped_deals'])}",
    ]
    for x in ddex["lines"][:SHOWN_MESSAGES]:
        out.append(
            f"  {x['created']} {x['message']} ({x['type']} {x['version']}, {x['message_id']}):"
            f" {x['status']}  releases {x['releases']:,}  deals {x['deals']:,}  inserted"
            f" {x['inserted']:,}  updated {x['updated']:,}  unchanged {x['unchanged']:,}"
            f"  deleted {x['deleted']:,}"
            + (f"  skipped {counted(x['skipped_deals'])}" if x["skipped_deals"] else "")
        )
    if ddex["messages"] > SHOWN_MESSAGES:
        out.append(f"  … and {ddex['messages'] - SHOWN_MESSAGES:,} more messages (--json)")
    for x in ddex["stale"][:SHOWN_ERRORS]:
        out.append(
            f"  stale: {x['release']} in {x['message']} (created {x['created']}; one from"
            f" {x['applied']} was applied before)"
        )
    if ddex["stale_count"] > SHOWN_ERRORS:
        out.append(f"  … and {ddex['stale_count'] - SHOWN_ERRORS:,} more stale releases (--json)")
    return out


def first_error(report: ImportReport) -> str:
    """The report's first problem in one line: where, which field, what."""
    if not report.errors:
        return "unknown"
    e = report.errors[0]
    where = f"line {e['line']}" if e["line"] is not None else "the file"
    return f"{where}{' ' + e['field'] if e['field'] else ''}: {e['message']}"


class ProgressDisplay:
    """Progress on stderr: a rich bar on a terminal, a plain line a second otherwise."""

    def __init__(self, total_bytes: int, *, terminal: bool | None = None) -> None:
        self.total = total_bytes
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.last = 0.0
        self.bar: Bar | None = None
        self.task = TaskID(0)

    def __enter__(self) -> ProgressDisplay:
        if self.terminal:
            self.bar = Bar(
                TextColumn("importing"),
                BarColumn(),
                DownloadColumn(),
                TextColumn("{task.fields[rows]:,} rows"),
                TextColumn("{task.fields[rate]:,.0f} rows/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.task = self.bar.add_task("import", total=self.total, rows=0, rate=0.0)
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, p: Progress) -> None:
        rate = p.rows / p.elapsed if p.elapsed > 0 else 0.0
        if self.bar is not None:
            self.bar.update(self.task, completed=p.bytes, rows=p.rows, rate=rate)
            return
        now = time.monotonic()
        if p.done or now - self.last >= PLAIN_EVERY:
            self.last = now
            sys.stderr.write(plain_progress(p, self.total, rate) + "\n")
            sys.stderr.flush()


def plain_progress(p: Progress, total_bytes: int, rate: float) -> str:
    """One plain progress line: its counts are those the report will give, once ``p.done``."""
    return (
        f"import: {p.rows:,} rows read, {p.loaded:,} loaded, {p.rejected:,} rejected,"
        f" {_size(p.bytes, total_bytes)}, {rate:,.0f} rows/s"
    )


def _size(done: int, total: int) -> str:
    """``1.2 of 3.4 MB`` in the unit that suits the total (B, kB, MB, GB)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if total >= scale:
            return f"{done / scale:,.1f} of {total / scale:,.1f} {unit}"
    return f"{done:,} of {total:,} B"
