"""``entitlements import FILE``: the bulk import from the command line.

The file is streamed (memory stays flat whatever its size) into one
transaction; see ``entitlements.service.imports`` for what an import does.

- Progress goes to stderr: a rich bar (bytes of the file, rows, rows/s) when
  stderr is a terminal, otherwise a plain line about once a second (logs, CI).
- The summary goes to stdout; ``--json`` prints the full report instead.
- Exit codes (DESIGN.md): 0 committed or dry run; 2 bad usage or bad input (the
  import is then rolled back and recorded as failed); 1 runtime failure (among
  them: another import still running after ``ENTITLEMENTS_IMPORT_LOCK_WAIT``).
"""

from __future__ import annotations

import getpass
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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

from entitlements.cli.environment import database, fail, load_settings, run
from entitlements.domain.values import text_problem
from entitlements.service.import_formats import Format, Kind

if TYPE_CHECKING:  # the service, asyncpg and the store load only when an import runs
    from entitlements.service.imports import ImportOptions, ImportReport, Progress
    from entitlements.settings import Settings

EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
}
SHOWN_ERRORS = 20
IMPORT_SWITCH_INTERVAL = 0.0005  # seconds (Python's default: 0.005)
PLAIN_EVERY = 1.0  # seconds between plain progress lines


def import_command(
    file: Annotated[
        Path,
        typer.Argument(
            help="the file to import (CSV with a header row, or NDJSON)",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    format: Annotated[
        Format | None,
        typer.Option("--format", help="csv or ndjson (default: from the file's extension)"),
    ] = None,
    kind: Annotated[
        Kind,
        typer.Option(
            "--kind", help="what the rows are (NDJSON: the default for records without 'kind')"
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
    processes: Annotated[
        int | None,
        typer.Option(
            "--processes",
            min=0,
            max=64,
            help="worker processes reading an NDJSON file of 16 MiB or more (default: with"
            " 3+ CPUs one per CPU but one, at most 4, else 0: read in this process)",
        ),
    ] = None,
) -> None:
    """Bulk-import grants or resources: validated, all or nothing, idempotent."""
    from entitlements.service.imports import ImportOptions

    chosen = format or EXTENSIONS.get(file.suffix.lower())
    if chosen is None:
        raise fail(f"cannot tell the format of {file.name}: give --format csv or ndjson", 2)
    options = ImportOptions(
        format=chosen,
        kind=kind,
        dry_run=dry_run,
        skip_invalid=skip_invalid,
        replace_source=replace_source,
        created_by=_who(),
    )
    settings = load_settings()
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
    store = await PostgresStore.open(
        settings.database_url, min_size=1, max_size=2, timeout=settings.db_timeout
    )
    # The reader thread holds the GIL for 5 ms at a time by default; the writer then
    # waits that long to hand Postgres its next batch. A shorter interval keeps the
    # COPYs back to back (~0.3 s less idle Postgres per 1M rows, benchmarks/bench_import.py).
    # This process does nothing else, so the cost of switching more often is ours alone.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(IMPORT_SWITCH_INTERVAL)
    try:
        limits = ImportLimits(read_processes=processes, lock_timeout=settings.import_lock_wait)
        imports = PostgresImportStore(store.pool, dsn=settings.database_url)
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


def first_error(report: ImportReport) -> str:
    """The report's first problem in one line: where, which field, what."""
    if not report.errors:
        return "unknown"
    e = report.errors[0]
    where = f"line {e['line']}" if e["line"] is not None else "the file"
    return f"{where}{' ' + e['field'] if e['field'] else ''}: {e['message']}"


def _who() -> str:
    try:
        who = f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (containers)
        return "cli"
    # From $LOGNAME and friends: not UTF-8 there, Python hands it over with lone surrogates.
    return "cli" if text_problem(who) else who


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
        if now - self.last >= PLAIN_EVERY:
            self.last = now
            sys.stderr.write(
                f"import: {p.rows:,} rows read, {p.loaded:,} loaded,"
                f" {p.bytes / 1e6:,.1f} of {self.total / 1e6:,.1f} MB, {rate:,.0f} rows/s\n"
            )
            sys.stderr.flush()
