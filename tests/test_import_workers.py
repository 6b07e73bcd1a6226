"""Reading NDJSON in worker processes gives exactly the import the importing process gives.

Each case is imported twice against real Postgres, as a dry run: read in this
process, and read by two worker processes in tiny segments (so lines, records,
duplicates and bad rows fall on every side of a cut). The reports must match
field for field; then one import in workers commits and is checked row by row.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from test_import_helpers import chunked, grant_record, ndjson_lines

from entitlements.domain.model import grant_from_mapping
from entitlements.service.imports import ImportLimits, ImportOptions, ImportReport, ImportService
from entitlements.store.imports import PostgresImportStore
from entitlements.store.postgres import PostgresStore

HERE = ImportLimits(read_processes=0, batch_rows=700, max_line=2048)
WORKERS = ImportLimits(
    read_processes=2, parallel_from_bytes=0, segment_bytes=1500, batch_rows=700, max_line=2048
)


def mixed_file() -> bytes:
    """1,500 grants with, scattered: bad rows, duplicate ids, blank and spaced lines,
    duplicate JSON keys, resources, and no newline at the end."""
    lines = [orjson.dumps(grant_record(i)) for i in range(1500)]
    lines[40] = orjson.dumps(grant_record(40) | {"territories": ["UK"]})
    lines[41] = b""
    lines[400] = b"   "
    lines[1399] = orjson.dumps(grant_record(12))  # the id of line 13 again, batches later
    lines[900] = b'{"id": "g0000900", "subject": "*", "subject": "*", "resource": "track:x"}'
    lines[901] = (
        b'{"id":"g0000901","subject":"*"  ,  "resource":"track:T1","actions":["stream"],'
        + (b'"territories":["GB"]}')
    )
    lines[1200] = b'{"kind": "resource", "id": "track:T0001200", "parents": ["release:r1"]}'
    lines[1300] = b"not json"
    return b"\n".join(lines)


CASES: dict[str, bytes] = {
    "mixed": mixed_file(),
    "bom": b"\xef\xbb\xbf" + ndjson_lines(grant_record(i) for i in range(300)),
    "nul": ndjson_lines(grant_record(i) for i in range(200))
    + b'{"id": "x\x00"}\n'
    + ndjson_lines(grant_record(i) for i in range(200, 400)),
    # A 3,000-byte line: longer than max_line, and longer than a segment.
    "long line": ndjson_lines(grant_record(i) for i in range(100))
    + b'{"id": "'
    + b"x" * 3000
    + b'"}\n'
    + ndjson_lines(grant_record(i) for i in range(100, 200)),
    "blank": b"\n\n   \n",
    "utf-16": "\ufeff".encode("utf-16-le") + b"{}\n",
}


def comparable(report: ImportReport) -> dict[str, Any]:
    out = report.to_json()
    for volatile in ("id", "started_at", "finished_at", "revision"):
        out.pop(volatile)
    return out


async def imported(
    store: PostgresStore, data: bytes, limits: ImportLimits, **options: Any
) -> ImportReport:
    service = ImportService(PostgresImportStore(store.pool), limits)
    return await service.run(
        chunked(data, 1000), ImportOptions(format="ndjson", **options), size_hint=len(data)
    )


@pytest.mark.parametrize("skip_invalid", [False, True], ids=["strict", "skip-invalid"])
@pytest.mark.parametrize("case", sorted(CASES))
async def test_workers_read_exactly_what_this_process_reads(
    clean: PostgresStore, case: str, skip_invalid: bool
) -> None:
    data = CASES[case]
    options = {"dry_run": True, "skip_invalid": skip_invalid}
    here = await imported(clean, data, HERE, **options)
    there = await imported(clean, data, WORKERS, **options)
    if here.status == "failed":
        # How far a failed import read before it stopped depends on how the input was cut
        # (into chunks here, into segments there); what it says is what matters.
        for report in (here, there):
            report.counts.rows = 0
    assert comparable(there) == comparable(here)
    assert here.status == (
        "dry_run" if case == "bom" or (case == "mixed" and skip_invalid) else "failed"
    )


async def test_an_import_read_by_workers_lands_every_row(clean: PostgresStore) -> None:
    records = [grant_record(i) for i in range(5000)]
    data = ndjson_lines(records)
    report = await imported(clean, data, WORKERS)
    assert report.status == "committed", report.errors
    assert (report.counts.rows, report.counts.inserted) == (5000, 5000)
    for i in (0, 1, 2, 3, 4999):
        assert await clean.get_grant(records[i]["id"]) == grant_from_mapping(records[i])
    again = await imported(clean, data, WORKERS)
    assert (again.counts.unchanged, again.revision) == (5000, report.revision)


async def test_replace_source_through_workers(clean: PostgresStore) -> None:
    for i in range(3):
        await clean.put_grant(grant_from_mapping(grant_record(10_000 + i, source="feed")))
    data = ndjson_lines(grant_record(i) for i in range(2000))
    report = await imported(clean, data, WORKERS, replace_source="feed")
    assert (report.counts.inserted, report.counts.deleted) == (2000, 3)
    assert await clean.pool.fetchval("SELECT count(*) FROM grants WHERE source = 'feed'") == 2000
