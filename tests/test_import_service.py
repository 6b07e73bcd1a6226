"""The import use case against real Postgres: counts, all-or-nothing, idempotence, sources."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from test_import_helpers import (
    chunked,
    csv_text,
    grant_record,
    ndjson_lines,
    write_csv,
    write_ndjson,
)

from entitlements.domain.model import grant_from_mapping, resource_from_mapping
from entitlements.errors import BusyError, InvalidInputError, NotFoundError, StoreUnavailableError
from entitlements.service.import_formats import read_file
from entitlements.service.imports import (
    ImportLimits,
    ImportOptions,
    ImportReport,
    ImportService,
)
from entitlements.store import import_writer as imports
from entitlements.store.imports import PostgresImportStore, live_key
from entitlements.store.locks import IMPORT_LIVE_CLASS, AdvisoryLock
from entitlements.store.postgres import PostgresStore

NDJSON = ImportOptions(format="ndjson")
CSV = ImportOptions(format="csv")


async def run(
    store: PostgresStore,
    data: bytes,
    options: ImportOptions = NDJSON,
    limits: ImportLimits | None = None,
    chunk: int = 65536,
    **changes: Any,
) -> ImportReport:
    if changes:
        options = ImportOptions(**{**_fields(options), **changes})
    return await ImportService(PostgresImportStore(store.pool), limits).run(
        chunked(data, chunk), options
    )


def _fields(options: ImportOptions) -> dict[str, Any]:
    return {name: getattr(options, name) for name in options.__slots__}


async def count(store: PostgresStore, table: str = "grants") -> int:
    return int(await store.pool.fetchval(f"SELECT count(*) FROM {table}"))


def counts(report: ImportReport) -> tuple[int, int, int, int, int, int]:
    c = report.counts
    return (c.rows, c.inserted, c.updated, c.unchanged, c.deleted, c.rejected)


# --- 100k rows: exact counts, idempotence ---------------------------------------------


async def test_100k_ndjson_rows_land_exactly_and_a_second_run_changes_nothing(
    clean: PostgresStore, tmp_path: Path
) -> None:
    path = write_ndjson(tmp_path / "g.ndjson", 100_000)
    before = await clean.revision()
    service = ImportService(PostgresImportStore(clean.pool))
    first = await service.run(read_file(str(path)), NDJSON)
    assert first.status == "committed", first.errors
    assert counts(first) == (100_000, 100_000, 0, 0, 0, 0)
    assert first.revision == before + 1 == await clean.revision()
    assert await count(clean) == 100_000
    for i in (0, 3, 57_777, 99_999):  # what landed is exactly what the API would store
        assert await clean.get_grant(f"g{i:07d}") == grant_from_mapping(grant_record(i))
    assert set(await clean.pool.fetch("SELECT DISTINCT revision FROM grants")) == {
        (first.revision,)
    }
    # 100k touched keys: one 'all' change instead of 100k rows.
    assert await clean.pool.fetch(
        "SELECT kind, key FROM changes WHERE revision = $1", first.revision
    ) == [("all", "*")]

    second = await service.run(read_file(str(path)), NDJSON)
    assert second.status == "committed"
    assert counts(second) == (100_000, 0, 0, 100_000, 0, 0)
    assert second.revision == first.revision == await clean.revision()
    after = await clean.pool.fetch(
        "SELECT revision, kind, key FROM changes WHERE revision > $1", before
    )
    assert [tuple(r) for r in after] == [(first.revision, "all", "*")]


async def test_100k_csv_rows_land_exactly(clean: PostgresStore, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "g.csv", 100_000, source="label-feed")
    report = await ImportService(PostgresImportStore(clean.pool)).run(read_file(str(path)), CSV)
    assert report.status == "committed", report.errors
    assert counts(report) == (100_000, 100_000, 0, 0, 0, 0)
    assert await count(clean) == 100_000
    expected = grant_from_mapping(grant_record(3, source="label-feed"))
    assert await clean.get_grant("g0000003") == expected


async def test_one_bad_row_in_the_middle_of_100k_lands_nothing(
    clean: PostgresStore, tmp_path: Path
) -> None:
    path = tmp_path / "bad.ndjson"
    with path.open("wb") as f:
        f.write(ndjson_lines(grant_record(i) for i in range(50_000)))
        f.write(orjson.dumps(grant_record(50_000) | {"territories": ["GB", "UK"]}) + b"\n")
        f.write(ndjson_lines(grant_record(i) for i in range(50_001, 100_000)))
    before = await clean.revision()
    report = await ImportService(PostgresImportStore(clean.pool)).run(read_file(str(path)), NDJSON)
    assert report.status == "failed"
    assert report.counts.rows == 100_000 and report.counts.rejected == 1
    assert report.counts.inserted == 0
    assert report.errors == [
        {
            "line": 50_001,
            "field": "territories.1",
            "message": "'UK' is not an ISO 3166-1 alpha-2 code such as 'GB'",
        }
    ]
    assert await count(clean) == 0
    assert await clean.revision() == before
    row = await clean.pool.fetchrow("SELECT status, report FROM imports WHERE id = $1", report.id)
    assert row["status"] == "failed" and row["report"]["errors"][0]["line"] == 50_001


# --- skip-invalid, errors ---------------------------------------------------------------


async def test_skip_invalid_lands_the_good_rows_and_reports_the_bad(clean: PostgresStore) -> None:
    records = [grant_record(i) for i in range(1000)]
    records[10] = records[10] | {"actions": []}
    records[500] = {"id": "broken", "subject": "nobody"}
    lines = ndjson_lines(records).splitlines(keepends=True)
    lines.insert(700, b"{not json\n")
    report = await run(clean, b"".join(lines), skip_invalid=True)
    assert report.status == "committed"
    assert counts(report) == (1001, 998, 0, 0, 0, 3)
    assert [(e["line"], e["field"]) for e in report.errors] == [
        (11, "actions"),
        (501, "subject"),
        (501, "resource"),
        (501, "actions"),
        (501, "territories"),
        (701, ""),
    ]
    assert {e["line"] for e in report.errors} == {11, 501, 701}
    assert await count(clean) == 998


async def test_the_error_list_is_capped_but_counted(clean: PostgresStore) -> None:
    data = ndjson_lines({"id": f"x{i}", "subject": "*"} for i in range(30)) + ndjson_lines(
        [grant_record(1)]
    )
    report = await run(clean, data, limits=ImportLimits(max_errors=5), skip_invalid=True)
    assert report.counts.rejected == 30 and report.counts.inserted == 1
    assert len(report.errors) == 5 and report.error_count == 90  # 3 problems per row
    strict = await run(clean, data, limits=ImportLimits(max_errors=5))
    assert strict.status == "failed" and len(strict.errors) == 5


# --- updates, change feed --------------------------------------------------------------


async def test_changed_rows_are_updated_and_the_change_feed_names_old_and_new_keys(
    clean: PostgresStore,
) -> None:
    records = [grant_record(i) for i in range(1, 7)]  # no user subjects among 1..6
    first = await run(clean, ndjson_lines(records))
    records[0] = records[0] | {"territories": ["JP"]}
    records[1] = records[1] | {"resource": "track:moved"}
    records.append(grant_record(7) | {"subject": "user:zoe"})
    second = await run(clean, ndjson_lines(records))
    assert counts(second) == (7, 1, 2, 4, 0, 0)
    assert first.revision is not None  # a committed import has one (for the type checker)
    assert second.revision == first.revision + 1
    changed = await clean.pool.fetch(
        "SELECT kind, key FROM changes WHERE revision = $1 ORDER BY kind, key", second.revision
    )
    assert [tuple(r) for r in changed] == [
        ("resource", "track:T0000001"),
        ("resource", "track:T0000002"),
        ("resource", "track:moved"),
        ("user", "zoe"),
    ]
    assert (await clean.get_grant("g0000002")).resource == "track:moved"


async def test_a_write_during_an_import_does_not_confuse_revisions(clean: PostgresStore) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield ndjson_lines(grant_record(i) for i in range(1, 3000))
        # Another writer commits while the import is open: the revision the import
        # expected is taken, so its rows must be stamped with the one it gets.
        await clean.put_grant(grant_from_mapping(grant_record(1, prefix="other")))
        yield ndjson_lines(grant_record(i) for i in range(3000, 6000))

    report = await ImportService(
        PostgresImportStore(clean.pool), ImportLimits(batch_rows=1000)
    ).run(body(), NDJSON)
    assert report.status == "committed" and report.counts.inserted == 5999
    revisions = await clean.pool.fetch(
        "SELECT DISTINCT revision FROM grants WHERE id LIKE 'g%' ORDER BY 1"
    )
    assert [r["revision"] for r in revisions] == [report.revision]
    other = await clean.pool.fetchval("SELECT revision FROM grants WHERE id = 'other0000001'")
    assert report.revision is not None  # committed (for the type checker)
    assert other == report.revision - 1


# --- replace-source --------------------------------------------------------------------


async def seed_sources(store: PostgresStore) -> None:
    for gid, source in [("a1", "feed-a"), ("a2", "feed-a"), ("a3", "feed-a"), ("b1", "feed-b")]:
        await store.put_grant(grant_from_mapping(grant_record(1) | {"id": gid, "source": source}))


@pytest.mark.parametrize("chunk", [65536, 60], ids=["one-batch", "row-by-row"])
async def test_replace_source_removes_that_sources_grants_missing_from_the_file(
    clean: PostgresStore, chunk: int
) -> None:
    await seed_sources(clean)
    data = ndjson_lines(
        [
            grant_record(1) | {"id": "a1", "territories": ["JP"]},
            grant_record(4) | {"id": "a4"},
            grant_record(5) | {"id": "a5", "source": "feed-b"},  # another feed's row: refused
        ]
    )
    limits = ImportLimits(batch_rows=1)
    report = await run(
        clean, data, limits=limits, chunk=chunk, replace_source="feed-a", skip_invalid=True
    )
    assert report.status == "committed", report.errors
    assert counts(report) == (3, 1, 1, 0, 2, 1)
    assert report.errors[0]["line"] == 3 and report.errors[0]["field"] == "source"
    rows = await clean.pool.fetch("SELECT id, source FROM grants ORDER BY id")
    assert [tuple(r) for r in rows] == [("a1", "feed-a"), ("a4", "feed-a"), ("b1", "feed-b")]


@pytest.mark.parametrize("chunk", [65536, 60], ids=["one-batch", "row-by-row"])
async def test_replace_source_keeps_grants_whose_rows_were_rejected(
    clean: PostgresStore, chunk: int
) -> None:
    await seed_sources(clean)
    data = ndjson_lines([grant_record(1) | {"id": "a1"}, {"id": "a2", "subject": "typo"}])
    limits = ImportLimits(batch_rows=1)
    report = await run(
        clean, data, limits=limits, chunk=chunk, replace_source="feed-a", skip_invalid=True
    )
    assert report.counts.deleted == 1 and report.counts.rejected == 1
    ids = [r["id"] for r in await clean.pool.fetch("SELECT id FROM grants ORDER BY id")]
    assert ids == ["a1", "a2", "b1"]


async def test_replace_source_with_no_valid_grant_is_refused(clean: PostgresStore) -> None:
    await seed_sources(clean)
    data = ndjson_lines([{"id": "a1", "subject": "typo"}])
    report = await run(clean, data, replace_source="feed-a", skip_invalid=True)
    assert report.status == "failed" and report.errors[0]["field"] == "replace_source"
    assert await count(clean) == 4


async def test_impossible_options_are_refused_before_reading(clean: PostgresStore) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await run(clean, b"", replace_source="bad name!")
    assert caught.value.errors[0].field == "replace_source"
    with pytest.raises(InvalidInputError):
        await run(clean, b"", CSV, kind="resource", replace_source="feed")


# --- duplicates, dry run -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batches", "stored", "first"),
    [
        ("one", False, "at line 3"),
        # Line 3 was COPY'd straight into grants by an earlier batch: its line is not kept.
        ("many", False, "on an earlier line"),
        # Line 3's grant was stored before: it went through staging, which keeps lines.
        ("many", True, "at line 3"),
    ],
)
async def test_the_same_id_twice_is_refused_naming_where(
    clean: PostgresStore, batches: str, stored: bool, first: str
) -> None:
    records = [grant_record(i) for i in range(10)]
    records[7] = grant_record(2) | {"territories": ["JP"]}
    data = ndjson_lines(records)
    # Batches are cut between chunks: a chunk a line long makes batches of 3 rows.
    limits, chunk = (
        (ImportLimits(), 65536) if batches == "one" else (ImportLimits(batch_rows=3), 90)
    )
    if stored:
        await clean.put_grant(grant_from_mapping(grant_record(2) | {"territories": ["FR"]}))
    before = await count(clean)
    report = await run(clean, data, limits=limits, chunk=chunk)
    assert report.status == "failed"
    message = f"'g0000002' appears again: the same grant id is {first}"
    assert report.errors == [{"line": 8, "field": "id", "message": message}]
    assert await count(clean) == before
    skipped = await run(clean, data, limits=limits, chunk=chunk, skip_invalid=True)
    inserted, updated = (8, 1) if stored else (9, 0)
    assert counts(skipped) == (10, inserted, updated, 0, 0, 1)
    # The first wins.
    assert (await clean.get_grant("g0000002")).territories == grant_from_mapping(
        records[2]
    ).territories


async def test_every_field_lands_exactly_as_the_api_would_store_it(clean: PostgresStore) -> None:
    """COPY text round trip: escapes in attributes, offsets and fractions in times, lists
    given unsorted and repeated, an action named like SQL's null, a deny."""
    records: list[dict[str, Any]] = [
        {
            "id": "odd/1:x=y",
            "subject": "user:a.b~c@d+e|f",
            "resource": "track:A-1_b.c~d@e+f/g:h=i",
            "actions": ["stream", "null", "download", "stream"],
            "territories": ["US", "GB", "US"],
            "exclude_territories": [],
            "valid_from": "2026-01-31T23:59:59.123456+05:30",
            "valid_until": "2027-06-01T00:00:00Z",
            "effect": "deny",
            "attributes": {"note": 'a\\b "c"\nd\te \\N', "n": [1, 2.5, None], "ü": "✓"},
            "source": "feed.v2",
        },
        {
            "id": "plain",
            "subject": "*",
            "resource": "release:r1",
            "actions": ["stream"],
            "territories": ["*"],
            "exclude_territories": ["FR", "DE"],
        },
    ]
    report = await run(clean, ndjson_lines(records))
    assert counts(report) == (2, 2, 0, 0, 0, 0), report.errors
    for record in records:
        assert await clean.get_grant(record["id"]) == grant_from_mapping(record)
    # And the API's own write of the same grants changes nothing: they are equal as stored.
    for record in records:
        assert not (await clean.put_grant(grant_from_mapping(record))).changed
    assert counts(await run(clean, ndjson_lines(records))) == (2, 0, 0, 2, 0, 0)


async def test_a_grant_another_client_creates_mid_import_fails_it_retryably(
    clean: PostgresStore, pg_dsn: str
) -> None:
    """The other client's uncommitted row is invisible to the look-up, so the import COPYs
    the same id, waits for that client, and fails cleanly when it commits."""
    other = await asyncpg.connect(pg_dsn)
    try:
        tx = other.transaction()
        await tx.start()
        await other.execute(
            """INSERT INTO grants (id, subject, resource, actions, territories, revision)
               VALUES ('g0000005', '*', 'track:other', '{stream}', '{GB}', 0)"""
        )
        task = asyncio.create_task(run(clean, ndjson_lines(grant_record(i) for i in range(10))))
        waiting = 0
        for _ in range(200):
            waiting = await clean.pool.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE wait_event_type = 'Lock' AND query ILIKE 'COPY%grants%'"""
            )
            if waiting or task.done():
                break
            await asyncio.sleep(0.05)
        assert waiting == 1
        await tx.commit()
        with pytest.raises(StoreUnavailableError) as caught:
            await task
    finally:
        await other.close()
    assert "run the import again" in str(caught.value)
    assert caught.value.retry_after is not None
    rows = await clean.pool.fetch("SELECT id, resource FROM grants")
    assert [tuple(r) for r in rows] == [("g0000005", "track:other")]
    stored = await clean.pool.fetchrow("SELECT status, report FROM imports")
    assert stored["status"] == "failed"
    assert "run the import again" in stored["report"]["errors"][0]["message"]
    # Run again: the other client's grant is now stored, and is updated to the file's.
    again = await run(clean, ndjson_lines(grant_record(i) for i in range(10)))
    assert counts(again) == (10, 9, 1, 0, 0, 0)


@pytest.mark.parametrize("stored_between", [0, 200], ids=["range-scan", "probe-each-id"])
async def test_new_stored_and_repeated_ids_are_told_apart_however_ids_spread(
    clean: PostgresStore, stored_between: int
) -> None:
    """A batch's ids are looked up by one range scan, or (when the range holds many
    other grants) one probe per id: the counts and duplicates come out the same."""
    # Stored grants whose ids sort between the file's: g0000000 .. g0000199 (every other
    # one in the file's range) make the range hold far more grants than the batch.
    for i in range(0, stored_between):
        await clean.put_grant(grant_from_mapping(grant_record(i * 5 + 1, prefix="g")))
    await clean.put_grant(grant_from_mapping(grant_record(10) | {"territories": ["JP"]}))
    await clean.put_grant(grant_from_mapping(grant_record(20)))
    records = [grant_record(i) for i in (0, 10, 20, 30, 40, 995)] + [grant_record(30)]
    before = await count(clean)
    report = await run(clean, ndjson_lines(records), skip_invalid=True)
    # 0, 40, 995 new; 10 updated; 20 unchanged; 30 new, then again on line 7.
    assert counts(report) == (7, 4, 1, 1, 0, 1), report.errors
    assert report.errors == [
        {
            "line": 7,
            "field": "id",
            "message": "'g0000030' appears again: the same grant id is at line 4",
        }
    ]
    assert await count(clean) == before + 4
    assert (await clean.get_grant("g0000010")) == grant_from_mapping(grant_record(10))


@pytest.mark.parametrize("kept", [100_000, 1], ids=["kept-in-memory", "asked-of-postgres"])
async def test_a_valid_row_repeating_a_rejected_rows_id_is_a_duplicate(
    clean: PostgresStore, kept: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past MAX_REJECTED_IDS the import stops keeping rejected ids and asks imp_gids.
    monkeypatch.setattr(imports, "MAX_REJECTED_IDS", kept)
    records = [grant_record(i) for i in range(8)]
    records[1] = records[1] | {"territories": ["UK"]}  # rejected, id g0000001
    records[2] = records[2] | {"territories": ["XX"]}  # rejected, id g0000002
    records[6] = grant_record(1)  # valid, but g0000001 again
    data = ndjson_lines(records)
    report = await run(clean, data, limits=ImportLimits(batch_rows=1), chunk=60, skip_invalid=True)
    assert counts(report) == (8, 5, 0, 0, 0, 3)
    assert report.errors[-1] == {
        "line": 7,
        "field": "id",
        "message": "'g0000001' appears again: the same grant id is at line 2",
    }
    with pytest.raises(NotFoundError):
        await clean.get_grant("g0000001")


async def test_dry_run_reports_and_changes_nothing(clean: PostgresStore) -> None:
    await seed_sources(clean)
    before = await clean.revision()
    data = ndjson_lines([grant_record(1) | {"id": "a1", "territories": ["JP"]}, grant_record(9)])
    report = await run(clean, data, dry_run=True, replace_source="feed-a")
    assert report.status == "dry_run"
    assert counts(report) == (2, 1, 1, 0, 2, 0)
    assert report.revision == before == await clean.revision()
    assert await count(clean) == 4
    assert (await clean.get_grant("a1")).territories == grant_from_mapping(
        grant_record(1)
    ).territories


# --- resources ----------------------------------------------------------------------------


def resources(*pairs: tuple[str, list[str]]) -> bytes:
    return ndjson_lines({"kind": "resource", "id": rid, "parents": ps} for rid, ps in pairs)


async def test_resources_and_grants_in_one_file(clean: PostgresStore) -> None:
    data = resources(
        ("release:r1", ["label:acme"]), ("track:t1", ["release:r1", "release:r2"])
    ) + ndjson_lines([grant_record(1) | {"resource": "label:acme"}])
    report = await run(clean, data)
    assert counts(report) == (3, 3, 0, 0, 0, 0)
    assert await clean.get_resource("track:t1") == resource_from_mapping(
        {"id": "track:t1", "parents": ["release:r1", "release:r2"]}
    )
    check = await clean.load_check("track:t1", ["role:plan:free"])
    assert check.ancestors == {"track:t1", "release:r1", "release:r2", "label:acme"}
    assert [g.id for g in check.grants] == ["g0000001"]

    again = await run(clean, data)
    assert counts(again) == (3, 0, 0, 3, 0, 0) and again.revision == report.revision
    moved = await run(clean, resources(("track:t1", ["release:r2"])))
    assert counts(moved) == (1, 0, 1, 0, 0, 0)
    assert (await clean.get_resource("track:t1")).parents == ("release:r2",)
    keys = await clean.pool.fetch(
        "SELECT kind, key FROM changes WHERE revision = $1", moved.revision
    )
    assert [tuple(k) for k in keys] == [("resource", "track:t1")]


async def test_csv_resources(clean: PostgresStore) -> None:
    data = b"id,parents\ntrack:t1,release:r1; release:r2\nrelease:r1,label:acme\n"
    report = await run(clean, data, CSV, kind="resource")
    assert counts(report) == (2, 2, 0, 0, 0, 0)
    assert await count(clean, "resources") == 4
    assert await count(clean, "resource_parents") == 3


async def test_a_cycle_fails_the_import_naming_the_line(clean: PostgresStore) -> None:
    await run(clean, resources(("release:r1", ["label:acme"])))
    data = resources(("track:t1", ["release:r1"]), ("label:acme", ["track:t1"]))
    report = await run(clean, data, skip_invalid=True)
    assert report.status == "failed"
    assert {(e["line"], e["field"]) for e in report.errors} >= {(2, "parents")}
    assert "cycle" in report.errors[0]["message"]
    assert (await clean.get_resource("label:acme")).parents == ()
    with pytest.raises(NotFoundError):
        await clean.get_resource("track:t1")


async def test_a_graph_too_deep_fails_the_import(clean: PostgresStore) -> None:
    chain = [(f"node:n{i}", [f"node:n{i + 1}"]) for i in range(20)]
    report = await run(clean, resources(*chain))
    assert report.status == "failed"
    assert "levels deep" in report.errors[0]["message"]


# --- serialization, bookkeeping, interruption ------------------------------------------------


async def test_two_imports_of_one_source_at_once_are_serialized(clean: PostgresStore) -> None:
    data = ndjson_lines(grant_record(i, source="feed") for i in range(20_000))
    service = ImportService(PostgresImportStore(clean.pool), ImportLimits(batch_rows=2000))
    options = ImportOptions(format="ndjson", replace_source="feed")
    one, two = await asyncio.gather(
        service.run(chunked(data), options), service.run(chunked(data), options)
    )
    assert sorted([counts(one), counts(two)]) == [
        (20_000, 0, 0, 20_000, 0, 0),
        (20_000, 20_000, 0, 0, 0, 0),
    ]
    assert one.revision == two.revision
    assert await count(clean) == 20_000


async def test_imports_are_recorded_and_readable_later(clean: PostgresStore) -> None:
    service = ImportService(PostgresImportStore(clean.pool))
    report = await service.run(chunked(csv_text([grant_record(1)])), CSV)
    stored = await service.get(report.id)
    assert stored == report.to_json()
    assert stored["created_by"] == "unknown" and stored["status"] == "committed"
    with pytest.raises(NotFoundError):
        await service.get("no-such-import")


async def test_an_import_whose_process_died_is_marked_failed(clean: PostgresStore) -> None:
    await clean.pool.execute(
        "INSERT INTO imports (id, status, format, created_by, report) VALUES ('dead', 'running',"
        ' \'csv\', \'x\', \'{"id": "dead", "status": "running"}\')'
    )
    async with clean.pool.acquire() as conn:  # a live import holds its session lock
        await conn.execute("SELECT pg_advisory_lock($1, $2)", IMPORT_LIVE_CLASS, live_key("dead"))
        assert (await ImportService(PostgresImportStore(clean.pool)).get("dead"))[
            "status"
        ] == "running"
        await conn.execute("SELECT pg_advisory_unlock_all()")
    stored = await ImportService(PostgresImportStore(clean.pool)).get("dead")
    assert (
        stored["status"] == "failed"
        and "stopped before finishing" in stored["errors"][0]["message"]
    )


async def test_a_cancelled_import_rolls_back_and_is_recorded(clean: PostgresStore) -> None:
    started = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield ndjson_lines(grant_record(i) for i in range(5000))
        started.set()
        await asyncio.sleep(60)
        yield b""

    service = ImportService(PostgresImportStore(clean.pool), ImportLimits(batch_rows=1000))
    task = asyncio.create_task(service.run(body(), NDJSON))
    await started.wait()
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await count(clean) == 0
    status = await clean.pool.fetchval("SELECT status FROM imports")
    assert status == "failed"
    assert (await run(clean, ndjson_lines([grant_record(1)]))).status == "committed"


# --- hostile files, end to end: each a clear error naming where, nothing partial ---------------

GOOD = ndjson_lines(grant_record(i) for i in range(3))
HEADER = csv_text([])
CSV_GOOD = csv_text(grant_record(i) for i in range(3))

HOSTILE: dict[str, tuple[str, bytes, int | None, str]] = {
    "unbalanced quote": (
        "csv",
        CSV_GOOD + b'g9,*,"track:t,stream,GB,,,,,,\n' + CSV_GOOD[len(HEADER) :],
        5,
        "unbalanced quote",
    ),
    "ragged row": ("csv", CSV_GOOD + b"g9,*,track:t\n", 5, "has 3 cells"),
    "NUL byte": ("ndjson", GOOD + b'{"id":"g\x00"}\n', 4, "NUL byte"),
    "Latin-1": (
        "csv",
        CSV_GOOD + "g9,*,track:caf\xe9,stream,GB,,,,,,\n".encode("latin-1"),
        5,
        "not valid UTF-8",
    ),
    "UTF-16": ("csv", CSV_GOOD.decode().encode("utf-16"), 1, "UTF-16"),
    "10 MB line": (
        "ndjson",
        GOOD + b"[" + b" " * 10_000_000 + b"]\n" + GOOD,
        4,
        "longer than 65536 bytes",
    ),
    "duplicate keys": ("ndjson", GOOD + b'{"id":"g9","id":"g8"}\n', 4, "duplicate key"),
    "NaN": ("ndjson", GOOD + b'{"id":"g9","attributes":{"x":NaN}}\n', 4, "NaN and Infinity"),
    "Infinity": (
        "csv",
        CSV_GOOD + b'g9,*,track:t,stream,GB,,,,,"{""x"":Infinity}",\n',
        5,
        "NaN and Infinity",
    ),
    "formula cell": (
        "csv",
        CSV_GOOD + b'g9,*,track:t,stream,"=HYPERLINK(""http://x"",""y"")",,,,,,\n',
        5,
        "CSV injection",
    ),
    "same id twice": (
        "ndjson",
        GOOD + GOOD[: GOOD.index(b"\n") + 1],
        4,
        "the same grant id is at line 1",
    ),
    "empty file": ("ndjson", b"", None, "empty"),
    "header only": ("csv", HEADER, 1, "header row but no rows"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_files_fail_clearly_and_land_nothing(clean: PostgresStore, name: str) -> None:
    fmt, data, line, message = HOSTILE[name]
    report = await run(clean, data, ImportOptions(format=fmt))  # type: ignore[arg-type]
    assert report.status == "failed"
    first = report.errors[0]
    assert first["line"] == line and message in first["message"], report.errors
    assert await count(clean) == 0


async def test_a_utf8_bom_is_stripped_with_a_note(clean: PostgresStore) -> None:
    report = await run(clean, b"\xef\xbb\xbf" + CSV_GOOD, CSV)
    assert report.status == "committed" and report.counts.inserted == 3
    assert report.notes == ["a UTF-8 byte-order mark at the start of the file was ignored"]


async def test_waiting_too_long_for_another_import_fails_as_busy(
    clean: PostgresStore,
) -> None:
    async with clean.pool.acquire() as other, other.transaction():
        await other.execute(
            "SELECT pg_advisory_xact_lock($1)", AdvisoryLock.IMPORT
        )  # an import is running
        service = ImportService(PostgresImportStore(clean.pool), ImportLimits(lock_timeout=0.3))
        with pytest.raises(BusyError) as caught:
            await service.run(chunked(ndjson_lines([grant_record(1)])), NDJSON)
    assert "another import is running" in str(caught.value)
    assert caught.value.retry_after == 1
    row = await clean.pool.fetchrow("SELECT status, report FROM imports")
    assert row["status"] == "failed" and "another import" in row["report"]["errors"][0]["message"]
    assert (await run(clean, ndjson_lines([grant_record(1)]))).status == "committed"
