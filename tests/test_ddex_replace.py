"""Replace-per-release beyond one message: purges, takedowns, test messages, track
releases no release carries any more, ids learnt over time, all-or-nothing, the
graph rule — against real Postgres, answered by checks."""

from __future__ import annotations

import itertools

import pytest
from ddex_import_support import count, counts, import_ddex, lines, reason
from ddex_support import SENDER, Deal, Recording, Release, ern
from test_ddex_import import AD, ALBUM, JUNE, PAYG, SUB, T1, T2, album

from entitlements.domain.model import MAX_DEPTH, Resource
from entitlements.store.postgres import PostgresStore


def purge(created: str, version: str = "43", **ids: str) -> bytes:
    return ern(
        version=version,
        root="PurgeReleaseMessage",
        created=created,
        message_id="P-1",
        purged=ids or {"ICPN": "0602527894567"},
    )


# --- purge ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["382", "43"])
async def test_a_purge_removes_the_release_s_rights(clean: PostgresStore, version: str) -> None:
    with_track_release = album(
        version=version,
        extra=(Release("R1", ("A1",), proprietary=(SENDER, "TR-1"), track=True),),
        extra_deals=((("R1",), (Deal(models=("PayAsYouGoModel",)),)),),
    )
    await import_ddex(clean, with_track_release)
    assert await reason(clean, SUB, T1, "stream", "GB", JUNE) == "granted"
    assert await reason(clean, PAYG, T1, "stream", "GB", JUNE) == "granted"
    report = await import_ddex(clean, purge("2026-05-01T00:00:00Z", version))
    assert report.status == "committed", report.errors
    (line,) = lines(report)
    # the album's two grants and its track release's one; the album holds no tracks
    assert (line["type"], line["deleted"], line["links_removed"]) == ("PurgeReleaseMessage", 3, 2)
    for roles in (SUB, AD, PAYG):
        # not licensed any more: not a deny
        assert await reason(clean, roles, T1, "stream", "GB", JUNE) == "not_licensed"
    assert await count(clean) == 0
    assert await count(clean, "resource_parents") == 0


async def test_a_purge_by_another_id_and_older_messages_after_it(clean: PostgresStore) -> None:
    # the release is known by its ICPN and its GRid; the purge names only the GRid
    both = ern(
        created="2026-03-01T00:00:00Z",
        releases=(Release("R0", ("A1",), icpn="0602527894567", grid="A10302B0001234567X"),),
    )
    await import_ddex(clean, both)
    assert await reason(clean, SUB, T1, "stream", "GB", JUNE) == "granted"
    await import_ddex(clean, purge("2026-05-01T00:00:00Z", GRid="A10302B0001234567X"))
    assert await reason(clean, SUB, T1, "stream", "GB", JUNE) == "not_licensed"
    # a message older than the purge, arriving late, is stale: nothing comes back
    late = await import_ddex(clean, album(created="2026-04-01T00:00:00Z"))
    assert lines(late)[0]["status"] == "stale"
    assert await reason(clean, SUB, T1, "stream", "GB", JUNE) == "not_licensed"
    # a newer one brings the release back
    await import_ddex(clean, album(created="2026-06-01T00:00:00Z"))
    assert await reason(clean, SUB, T1, "stream", "GB", JUNE) == "granted"


async def test_a_purge_of_an_unknown_release_still_makes_older_messages_stale(
    clean: PostgresStore,
) -> None:
    report = await import_ddex(clean, purge("2026-05-01T00:00:00Z"))
    assert report.status == "committed" and counts(report) == (0, 0, 0, 0, 0)
    late = await import_ddex(clean, album(created="2026-04-01T00:00:00Z"))
    assert lines(late)[0]["status"] == "stale"
    assert await count(clean) == 0


async def test_a_purge_older_than_the_release_is_stale(clean: PostgresStore) -> None:
    await import_ddex(clean, album(created="2026-04-01T00:00:00Z"))
    report = await import_ddex(clean, purge("2026-03-01T00:00:00Z"))
    assert lines(report)[0]["status"] == "stale"
    assert await reason(clean, SUB, T1, "stream", "GB", JUNE) == "granted"


# --- TakeDown, TestMessage -------------------------------------------------------------


async def test_an_ern3_takedown_cancels_the_release_s_deals(clean: PostgresStore) -> None:
    await import_ddex(clean, album(version="382", created="2026-03-01T00:00:00Z"))
    assert await reason(clean, SUB, T1, "stream", "GB", JUNE) == "granted"
    takedown = album(
        version="382",
        created="2026-04-01T00:00:00Z",
        message_id="M-2",
        deals=(Deal(), Deal(takedown=True)),
    )
    report = await import_ddex(clean, takedown)
    (line,) = lines(report)
    assert (line["deleted"], line["skipped_deals"]) == (2, {"taken_down": 1})
    assert await reason(clean, SUB, T1, "stream", "GB", JUNE) == "not_licensed"
    assert await reason(clean, AD, T1, "stream", "GB", JUNE) == "not_licensed"


async def test_a_test_message_is_read_and_reported_never_applied(clean: PostgresStore) -> None:
    before = await clean.revision()
    report = await import_ddex(clean, album(control="TestMessage", created="2026-06-01T00:00:00Z"))
    assert report.status == "committed"
    assert report.revision == before
    summary = report.to_json()["ddex"]
    assert (summary["test_messages"], summary["grants"]) == (1, 2)
    (line,) = lines(report)
    assert (line["status"], line["test"], line["inserted"]) == ("test", True, 0)
    assert await count(clean) == 0 and await count(clean, "ddex_releases") == 0
    # it sets no time either: an older live message still applies
    live = await import_ddex(clean, album(created="2026-03-01T00:00:00Z"))
    assert lines(live)[0]["status"] == "applied"
    assert await reason(clean, SUB, T1, "stream", "GB", JUNE) == "granted"


# --- track releases ------------------------------------------------------------------------


def with_track_release(created: str, *, carried: bool = True) -> bytes:
    track_release = Release("R1", ("A1",), proprietary=(SENDER, "TR-1"), track=True)
    return album(
        created=created,
        deals=(Deal(),),
        extra=(track_release,) if carried else (),
        extra_deals=((("R1",), (Deal(models=("PayAsYouGoModel",)),)),) if carried else (),
    )


async def test_a_track_on_its_album_and_on_its_track_release(clean: PostgresStore) -> None:
    await import_ddex(clean, with_track_release("2026-03-01T00:00:00Z"))
    # through the album (a parent) and through its own track release
    assert await reason(clean, SUB, T1, "stream", "GB", JUNE) == "granted"
    assert await reason(clean, PAYG, T1, "stream", "GB", JUNE) == "granted"
    assert await reason(clean, PAYG, T2, "stream", "GB", JUNE) == "not_licensed"
    assert await reason(clean, PAYG, ALBUM, "stream", "GB", JUNE) == "not_licensed"


async def test_a_track_release_the_album_no_longer_carries_loses_its_rights(
    clean: PostgresStore,
) -> None:
    await import_ddex(clean, with_track_release("2026-03-01T00:00:00Z"))
    report = await import_ddex(clean, with_track_release("2026-04-01T00:00:00Z", carried=False))
    assert lines(report)[0]["deleted"] == 1
    assert await reason(clean, PAYG, T1, "stream", "GB", JUNE) == "not_licensed"
    assert await reason(clean, SUB, T1, "stream", "GB", JUNE) == "granted"
    # an older message carrying it, late: stale for it too
    late = await import_ddex(clean, with_track_release("2026-03-15T00:00:00Z"))
    assert lines(late)[0]["status"] == "stale"
    assert await reason(clean, PAYG, T1, "stream", "GB", JUNE) == "not_licensed"
    # a newer one brings it back
    await import_ddex(clean, with_track_release("2026-05-01T00:00:00Z"))
    assert await reason(clean, PAYG, T1, "stream", "GB", JUNE) == "granted"


async def test_a_track_release_delivered_on_its_own_stays_when_an_album_drops_it(
    clean: PostgresStore,
) -> None:
    alone = ern(
        created="2026-03-01T00:00:00Z",
        releases=(Release("R1", ("A1",), proprietary=(SENDER, "TR-1"), track=True),),
        deals=((("R1",), (Deal(models=("PayAsYouGoModel",)),)),),
    )
    await import_ddex(clean, alone)
    await import_ddex(clean, with_track_release("2026-04-01T00:00:00Z"))
    await import_ddex(clean, with_track_release("2026-05-01T00:00:00Z", carried=False))
    assert await reason(clean, PAYG, T1, "stream", "GB", JUNE) == "granted"


# --- ids learnt over time -----------------------------------------------------------------


async def test_two_ids_known_apart_become_one_release(clean: PostgresStore) -> None:
    by_icpn = ern(created="2026-03-01T00:00:00Z", message_id="M-1")
    by_grid = ern(
        created="2026-03-02T00:00:00Z",
        message_id="M-2",
        releases=(Release("R0", ("A1",), grid="A10302B0001234567X"),),
        deals=((("R0",), (Deal(models=("AdvertisementSupportedModel",)),)),),
    )
    await import_ddex(clean, by_icpn, by_grid)
    assert await count(clean, "ddex_releases") == 2
    both = ern(
        created="2026-04-01T00:00:00Z",
        message_id="M-3",
        releases=(Release("R0", ("A1",), icpn="0602527894567", grid="A10302B0001234567X"),),
        deals=((("R0",), (Deal(models=("FreeOfChargeModel",)),)),),
    )
    report = await import_ddex(clean, both)
    assert report.status == "committed", report.errors
    assert counts(report) == (1, 1, 0, 0, 2)
    assert await count(clean, "ddex_releases") == 1
    assert await reason(clean, SUB, T1, "stream", "GB", JUNE) == "not_licensed"
    assert await reason(clean, AD, T1, "stream", "GB", JUNE) == "not_licensed"
    assert await reason(clean, "ddex:FreeOfChargeModel", T1, "stream", "GB", JUNE) == "granted"
    # the GRid's old release is no parent of the track any more
    parents = await clean.pool.fetch("SELECT parent FROM resource_parents WHERE child = $1", T1)
    assert [r[0] for r in parents] == [ALBUM]


async def test_two_releases_of_one_message_naming_one_stored_release_are_refused(
    clean: PostgresStore,
) -> None:
    await import_ddex(
        clean,
        ern(releases=(Release("R0", ("A1",), icpn="0602527894567", grid="A10302B0001234567X"),)),
    )
    twice = ern(
        created="2026-04-01T00:00:00Z",
        releases=(
            Release("R0", ("A1",), icpn="0602527894567"),
            Release("R9", ("A1",), grid="A10302B0001234567X"),
        ),
        deals=((("R0", "R9"), (Deal(),)),),
    )
    report = await import_ddex(clean, twice)
    assert report.status == "failed"
    assert "a message carries a release once" in report.errors[0]["message"]


# --- all or nothing, dry run, the graph ------------------------------------------------------


async def test_a_bad_second_message_lands_nothing_from_the_first(clean: PostgresStore) -> None:
    before = await clean.revision()
    good = album(created="2026-03-01T00:00:00Z")
    bad = album(created="2026-04-01T00:00:00Z")[:-200]  # truncated
    report = await import_ddex(clean, good, bad)
    assert report.status == "failed"
    assert report.errors[0]["field"].startswith("m2.xml")
    assert "not well-formed" in report.errors[0]["message"]
    assert counts(report) == (0, 0, 0, 0, 0)
    assert all(x["inserted"] == 0 for x in lines(report))
    assert await clean.revision() == before
    for table in ("grants", "ddex_releases", "ddex_grants", "resource_parents"):
        assert await count(clean, table) == 0, table


async def test_a_dry_run_reports_and_changes_nothing(clean: PostgresStore) -> None:
    before = await clean.revision()
    report = await import_ddex(clean, album(), dry_run=True)
    assert report.status == "dry_run"
    assert counts(report) == (2, 2, 0, 0, 0)
    assert await clean.revision() == before
    assert await count(clean) == 0 and await count(clean, "ddex_releases") == 0


@pytest.mark.parametrize(
    ("labels", "status"), [(MAX_DEPTH - 2, "committed"), (MAX_DEPTH - 1, "failed")]
)
async def test_track_links_keep_the_graph_depth_rule(
    clean: PostgresStore, labels: int, status: str
) -> None:
    # the album under a chain of labels: the track below it makes labels + 2 levels
    chain = [ALBUM, *(f"label:l{i}" for i in range(labels))]
    for child, parent in itertools.pairwise(chain):
        await clean.put_resource(Resource(child, (parent,)))
    report = await import_ddex(clean, album(tracks=("A1",)))
    assert report.status == status, report.errors
    if status == "failed":
        assert report.errors[0]["field"] == "m1.xml:parents"
        assert str(MAX_DEPTH) in report.errors[0]["message"]
        assert await count(clean) == 0
    else:
        assert await reason(clean, SUB, T1, "stream", "GB", JUNE) == "granted"


async def test_many_messages_in_batches_answer_as_one_at_a_time(clean: PostgresStore) -> None:
    """Batches cut where a message names a release the batch already names: the
    outcome is that of applying the messages one by one."""
    from entitlements.service.imports import ImportLimits

    messages = []
    for i in range(30):
        isrc = f"USRC1760{i:04d}"
        messages.append(
            ern(
                created=f"2026-03-01T00:{i:02d}:00Z",
                message_id=f"M-{i}",
                recordings=(Recording("A1", isrc),),
                releases=(Release("R0", ("A1",), icpn=f"06025279{i % 7:05d}"),),
                deals=(
                    (
                        ("R0",),
                        (Deal(models=("PayAsYouGoModel",) if i % 2 else ("SubscriptionModel",)),),
                    ),
                ),
            )
        )
    report = await import_ddex(clean, *messages, limits=ImportLimits(batch_rows=4))
    assert report.status == "committed", report.errors
    # release i % 7: the last message for it wins; its earlier tracks are no longer on it
    for r in range(7):
        last = max(i for i in range(30) if i % 7 == r)
        model = "ddex:PayAsYouGoModel" if last % 2 else SUB
        track = f"track:USRC1760{last:04d}"
        assert await reason(clean, model, track, "stream", "GB", JUNE) == "granted"
        for i in range(r, last, 7):
            assert await reason(clean, model, f"track:USRC1760{i:04d}", "stream", "GB", JUNE) == (
                "not_licensed"
            )
    assert await count(clean) == 7


async def test_an_upload_over_the_limit_is_refused(clean: PostgresStore) -> None:
    from test_import_helpers import chunked

    from entitlements.service.imports import (
        ImportLimits,
        ImportOptions,
        ImportService,
    )
    from entitlements.store.imports import PostgresImportStore

    service = ImportService(PostgresImportStore(clean.pool), ImportLimits(max_message_bytes=2000))
    report = await service.run(chunked(album(), 1000), ImportOptions(format="ddex"))
    assert report.status == "failed"
    assert report.errors[0]["message"] == "the message is over 2,000 bytes; refused"
    small = await service.run(chunked(ern(), 100), ImportOptions(format="ddex"))
    assert small.status == "committed", small.errors
    assert await count(clean) == 1


async def test_a_bad_message_after_batches_were_applied_lands_nothing(
    clean: PostgresStore,
) -> None:
    from entitlements.service.imports import ImportLimits

    good = [
        ern(
            created=f"2026-03-01T00:{i:02d}:00Z",
            recordings=(Recording("A1", f"USRC1760{i:04d}"),),
            releases=(Release("R0", ("A1",), icpn=f"06025279{i:05d}"),),
        )
        for i in range(20)
    ]
    bad = ern(created="2026-03-02T00:00:00Z", deals=((("R0",), (Deal(territories=("XX",)),)),))
    before = await clean.revision()
    report = await import_ddex(clean, bad, *good, limits=ImportLimits(batch_rows=2))
    assert report.status == "failed"
    assert (
        report.errors[0]["field"]
        == "m1.xml:DealList/ReleaseDeal[1]/Deal[1]/DealTerms/TerritoryCode"
    )
    assert await clean.revision() == before
    for table in ("grants", "ddex_releases", "resource_parents", "resources"):
        assert await count(clean, table) == 0, table


async def test_two_senders_of_one_release_keep_their_own_deals_and_links(
    clean: PostgresStore,
) -> None:
    distributor = "PADPIDA2026030303C"
    await import_ddex(clean, album(tracks=("A1",)))
    other = ern(sender=distributor, created="2026-03-02T00:00:00Z", deals=((("R0",), (Deal(),)),))
    await import_ddex(clean, other)
    assert await count(clean) == 3  # two from the label, one from the distributor
    report = await import_ddex(clean, purge("2026-05-01T00:00:00Z"))  # the label's purge
    assert report.status == "committed" and counts(report)[4] == 2
    # the distributor's deal and its link of the track to the release stay
    assert await reason(clean, SUB, T1, "stream", "GB", JUNE) == "granted"
    assert await reason(clean, AD, T1, "stream", "GB", JUNE) == "not_licensed"
    sources = await clean.pool.fetch("SELECT DISTINCT source FROM grants")
    assert [r[0] for r in sources] == [f"ddex:{distributor}"]
