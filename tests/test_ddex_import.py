"""DDEX ERN messages imported into real Postgres and answered by checks: every mapping
rule end to end, idempotence, updates and stale messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from ddex_import_support import HERE, ask, count, counts, import_ddex, lines, reason
from ddex_support import SENDER, Deal, Recording, Release, ern

from entitlements.store.postgres import PostgresStore

ALBUM = "release:0602527894567"
GRID = "release:A10302B0001234567X"
PROPRIETARY = f"release:{SENDER}:P-1"
T1 = "track:USRC17607839"
T2 = "track:GBAYE0601498"
OTHER_DSP = "PADPIDA2099123456Z"


def rules_message(version: str) -> bytes:
    """One message with a deal for each mapping rule (see ``test_every_mapping_rule``)."""
    return ern(
        version=version,
        recordings=(
            Recording("A1", "USRC17607839"),
            Recording("A2", "GB-AYE-06-01498"),
            Recording("V1", None, kind="Video"),
        ),
        releases=(
            Release("R0", ("A1", "A2"), icpn="0602527894567"),
            Release("R1", ("A1",), proprietary=(SENDER, "TR-1"), track=True),
            Release("R2", ("A2",), grid="A10302B0001234567X", release_type="Single"),
            Release("R3", ("A1",), proprietary=(SENDER, "P-1"), release_type="Single"),
            Release("RV", ("V1",), icpn="0602527000012", release_type="VideoSingle"),
        ),
        deals=(
            (
                ("R0",),
                (
                    Deal(
                        use_types=("OnDemandStream", "ConditionalDownload"),
                        excluded=("DE",),
                        territories=(),
                        periods=(("2026-03-06", "2026-12-31"),),
                    ),
                    Deal(
                        models=("AdvertisementSupportedModel",),
                        use_types=("NonInteractiveStream",),
                        territories=("GB", "IE"),
                    ),
                    Deal(
                        models=("PayAsYouGoModel",),
                        use_types=("PermanentDownload",),
                        channels=(OTHER_DSP,),
                    ),
                    Deal(
                        use_types=("UserMakeAvailableUserProvided",),
                        periods=(("2026-03-06T12:00:00Z", "2026-03-07T12:00:00+02:00"),),
                    ),
                ),
            ),
            (
                ("R1",),
                (
                    Deal(
                        models=("PayAsYouGoModel",),
                        use_types=("PermanentDownload",),
                        territories=("US",),
                        price_code="FrontLine",
                    ),
                ),
            ),
            (("R2",), (Deal(models=("FreeOfChargeModel",), use_types=("Stream",)),)),
            (("R3",), (Deal(models=("DeviceFeeModel",), use_types=("TetheredDownload",)),)),
            (("RV",), (Deal(),)),
        ),
    )


SUB = "ddex:SubscriptionModel"
AD = "ddex:AdvertisementSupportedModel"
PAYG = "ddex:PayAsYouGoModel"
JUNE = "2026-06-01T00:00:00Z"

RULE_CHECKS: list[tuple[str, str, str, str, str, str]] = [
    # release:<ICPN>, its tracks get it as a parent; role:ddex:<CommercialModelType>
    (SUB, T1, "stream", "JP", JUNE, "granted"),
    (SUB, T2, "stream", "JP", JUNE, "granted"),
    (SUB, ALBUM, "stream", "JP", JUNE, "granted"),
    ("plan:premium", T1, "stream", "JP", JUNE, "not_licensed"),
    # ExcludedTerritoryCode alone: worldwide minus it
    (SUB, T1, "stream", "DE", JUNE, "territory"),
    # OnDemandStream -> stream, ConditionalDownload -> offline
    (SUB, T1, "offline", "JP", JUNE, "granted"),
    (SUB, T1, "download", "JP", JUNE, "not_licensed"),
    # StartDate: 00:00 UTC of that day; EndDate inclusive: ends 00:00 the day after
    (SUB, T1, "stream", "JP", "2026-03-05T23:59:59Z", "not_yet_valid"),
    (SUB, T1, "stream", "JP", "2026-03-06T00:00:00Z", "granted"),
    (SUB, T1, "stream", "JP", "2026-12-31T23:59:59Z", "granted"),
    (SUB, T1, "stream", "JP", "2027-01-01T00:00:00Z", "expired"),
    # NonInteractiveStream -> radio; TerritoryCode list
    (AD, T2, "radio", "IE", JUNE, "granted"),
    (AD, T2, "radio", "FR", JUNE, "territory"),
    (AD, T2, "stream", "IE", JUNE, "not_licensed"),
    # a deal for another DistributionChannel: skipped
    (PAYG, ALBUM, "download", "GB", JUNE, "not_licensed"),
    (PAYG, T2, "download", "US", JUNE, "not_licensed"),
    # a track release: its deals are its track's (and only its track's)
    (PAYG, T1, "download", "US", JUNE, "granted"),
    (PAYG, T1, "download", "GB", JUNE, "territory"),
    # another UseType: ddex.<usetype>; StartDateTime/EndDateTime as given (+02:00)
    (SUB, T1, "ddex.usermakeavailableuserprovided", "JP", "2026-03-06T11:59:59Z", "not_yet_valid"),
    (SUB, T1, "ddex.usermakeavailableuserprovided", "JP", "2026-03-06T12:00:00Z", "granted"),
    (SUB, T1, "ddex.usermakeavailableuserprovided", "JP", "2026-03-07T09:59:59Z", "granted"),
    (SUB, T1, "ddex.usermakeavailableuserprovided", "JP", "2026-03-07T10:00:00Z", "expired"),
    # release:<GRid>; Stream -> stream
    ("ddex:FreeOfChargeModel", T2, "stream", "BR", JUNE, "granted"),
    ("ddex:FreeOfChargeModel", GRID, "stream", "BR", JUNE, "granted"),
    ("ddex:FreeOfChargeModel", T1, "stream", "BR", JUNE, "not_licensed"),
    # release:<namespace>:<ProprietaryId>; TetheredDownload -> offline
    ("ddex:DeviceFeeModel", T1, "offline", "BR", JUNE, "granted"),
    ("ddex:DeviceFeeModel", PROPRIETARY, "offline", "BR", JUNE, "granted"),
    # a video release: its deals are skipped
    (SUB, "release:0602527000012", "stream", "JP", JUNE, "not_licensed"),
]


async def mismatches(store: PostgresStore, table: Sequence[tuple[str, ...]]) -> list[str]:
    wrong = []
    for roles, resource, action, territory, at, expected in table:
        got = await reason(store, roles, resource, action, territory, at)
        if got != expected:
            wrong.append(f"{roles} {resource} {action} {territory} {at}: {got}, not {expected}")
    return wrong


@pytest.mark.parametrize("version", ["382", "411", "43"])
async def test_every_mapping_rule(clean: PostgresStore, version: str) -> None:
    report = await import_ddex(clean, rules_message(version))
    assert report.status == "committed", report.errors
    assert report.ddex is not None
    summary = report.to_json()["ddex"]
    assert summary["skipped_deals"] == {"channel": 1, "video": 1}
    assert summary["skipped_resources"] == {"video": 1}
    assert (summary["messages"], summary["releases"], summary["deals"]) == (1, 5, 8)
    assert counts(report) == (6, 6, 0, 0, 0)
    assert await mismatches(clean, RULE_CHECKS) == []
    # a track on several releases keeps all of them as parents
    parents = await clean.pool.fetch(
        "SELECT child, array_agg(parent ORDER BY parent) FROM resource_parents GROUP BY child"
    )
    assert dict((r[0], r[1]) for r in parents) == {
        T1: [ALBUM, PROPRIETARY],
        T2: [ALBUM, GRID],
    }


async def test_a_grant_carries_its_deal_and_its_source(clean: PostgresStore) -> None:
    await import_ddex(clean, rules_message("43"))
    decision = await ask(clean, PAYG, T1, "download", "US", JUNE)
    assert decision.allowed and decision.grant is not None
    assert decision.grant.startswith(f"ddex:{T1}:")
    assert decision.attributes == {
        "commercial_model": "PayAsYouGoModel",
        "use_types": ["PermanentDownload"],
        "price_type": "FrontLine",
        "message_id": "M-1",
    }
    sources = await clean.pool.fetch("SELECT DISTINCT source FROM grants")
    assert [r[0] for r in sources] == [f"ddex:{SENDER}"]


async def test_the_mapping_file_names_subjects_actions_channels_and_the_time_zone(
    clean: PostgresStore,
) -> None:
    mapping: dict[str, Any] = {
        "time_zone": "Europe/Berlin",
        "channels": [OTHER_DSP],
        "subjects": {"SubscriptionModel": ["role:plan:premium", "role:plan:family"]},
        "actions": {"OnDemandStream": ["stream", "preview"]},
    }
    report = await import_ddex(clean, rules_message("43"), mapping=mapping)
    assert report.to_json()["ddex"]["skipped_deals"] == {"video": 1}
    table = [
        # 2026-03-06 starts at 00:00 in Berlin: 23:00 UTC the day before
        ("plan:premium", T1, "stream", "JP", "2026-03-05T22:59:59Z", "not_yet_valid"),
        ("plan:premium", T1, "stream", "JP", "2026-03-05T23:00:00Z", "granted"),
        ("plan:family", T1, "preview", "JP", JUNE, "granted"),
        ("plan:family", T1, "stream", "JP", "2026-12-31T22:59:59Z", "granted"),
        ("plan:family", T1, "stream", "JP", "2026-12-31T23:00:00Z", "expired"),
        (SUB, T1, "stream", "JP", JUNE, "not_licensed"),
        # our channel: the deal applies; other models keep role:ddex:<model>
        (PAYG, ALBUM, "download", "GB", JUNE, "granted"),
        (AD, T2, "radio", "IE", JUNE, "granted"),
    ]
    assert await mismatches(clean, table) == []


# --- idempotence, updates, stale messages -------------------------------------------------


def album(
    *,
    created: str = "2026-03-01T10:00:00Z",
    message_id: str = "M-1",
    deals: tuple[Deal, ...] = (
        Deal(),
        Deal(models=("AdvertisementSupportedModel",), territories=("GB",)),
    ),
    tracks: tuple[str, ...] = ("A1", "A2"),
    version: str = "43",
    extra: tuple[Release, ...] = (),
    extra_deals: tuple[tuple[tuple[str, ...], tuple[Deal, ...]], ...] = (),
    control: str | None = None,
) -> bytes:
    """An album (R0: the ICPN of ALBUM) with tracks A1 (T1) and A2 (T2)."""
    return ern(
        version=version,
        created=created,
        message_id=message_id,
        control=control,
        recordings=(Recording("A1", "USRC17607839"), Recording("A2", "GBAYE0601498")),
        releases=(Release("R0", tracks, icpn="0602527894567"), *extra),
        deals=((("R0",), deals), *extra_deals),
    )


async def revision(store: PostgresStore) -> int:
    return await store.revision()


async def test_the_same_message_twice_changes_nothing(clean: PostgresStore) -> None:
    first = await import_ddex(clean, album())
    assert counts(first) == (2, 2, 0, 0, 0)
    assert first.to_json()["ddex"]["links_added"] == 2
    before = await revision(clean)
    changes = await count(clean, "changes")
    again = await import_ddex(clean, album())
    assert again.status == "committed"
    assert counts(again) == (2, 0, 0, 2, 0)
    assert again.revision == before == await revision(clean)
    assert await count(clean, "changes") == changes
    (line,) = lines(again)
    assert (line["status"], line["unchanged"], line["links_added"]) == ("applied", 2, 0)


async def test_an_update_that_drops_a_deal_and_a_track(clean: PostgresStore) -> None:
    await import_ddex(clean, album())
    assert await reason(clean, AD, T2, "stream", "GB", JUNE) == "granted"
    update = album(
        created="2026-04-01T00:00:00Z", message_id="M-2", deals=(Deal(),), tracks=("A1",)
    )
    report = await import_ddex(clean, update)
    assert report.status == "committed", report.errors
    # the SubscriptionModel deal is re-sent (its message_id changes), the other is gone
    assert counts(report) == (1, 0, 1, 0, 1)
    (line,) = lines(report)
    assert (line["deleted"], line["links_removed"]) == (1, 1)
    assert await reason(clean, AD, T1, "stream", "GB", JUNE) == "not_licensed"
    assert await reason(clean, SUB, T1, "stream", "GB", JUNE) == "granted"
    # the album no longer holds A2: its track has no parent left, and no right
    assert await reason(clean, SUB, T2, "stream", "GB", JUNE) == "not_licensed"
    assert (await ask(clean, SUB, T1, "stream", "GB", JUNE)).attributes == {
        "commercial_model": "SubscriptionModel",
        "use_types": ["OnDemandStream"],
        "message_id": "M-2",
    }
    touched = await clean.pool.fetch(
        "SELECT kind, key FROM changes WHERE revision = $1 ORDER BY key", report.revision
    )
    assert [tuple(r) for r in touched] == [("resource", ALBUM), ("resource", T2)]


async def test_an_older_message_after_a_newer_one_is_stale(clean: PostgresStore) -> None:
    newer = album(created="2026-04-01T00:00:00Z", message_id="M-2", deals=(Deal(),))
    await import_ddex(clean, newer)
    before = await revision(clean)
    older = album(created="2026-03-01T00:00:00Z", message_id="M-1")
    report = await import_ddex(clean, older)
    assert report.status == "committed"
    assert counts(report) == (0, 0, 0, 0, 0)
    assert report.revision == before == await revision(clean)
    summary = report.to_json()["ddex"]
    assert summary["stale"] == [
        {
            "message": "m1.xml",
            "message_id": "M-1",
            "release": ALBUM,
            "created": "2026-03-01T00:00:00Z",
            "applied": "2026-04-01T00:00:00Z",
        }
    ]
    assert (summary["stale_count"], summary["stale_messages"]) == (1, 1)
    assert lines(report)[0]["status"] == "stale"
    assert await reason(clean, AD, T1, "stream", "GB", JUNE) == "not_licensed"


async def test_a_message_stale_for_one_release_applies_to_the_others(
    clean: PostgresStore,
) -> None:
    await import_ddex(clean, album(created="2026-04-01T00:00:00Z", deals=(Deal(),)))
    older = album(
        created="2026-03-01T00:00:00Z",
        extra=(Release("R9", ("A2",), grid="A10302B0001234567X", release_type="Single"),),
        extra_deals=((("R9",), (Deal(models=("FreeOfChargeModel",)),)),),
    )
    report = await import_ddex(clean, older)
    (line,) = lines(report)
    assert (line["status"], line["stale"], line["inserted"]) == ("partly_stale", 1, 1)
    assert await reason(clean, "ddex:FreeOfChargeModel", T2, "stream", "GB", JUNE) == "granted"
    assert await reason(clean, AD, T1, "stream", "GB", JUNE) == "not_licensed"


async def test_the_same_created_time_applies_again_and_a_message_id_is_no_version(
    clean: PostgresStore,
) -> None:
    await import_ddex(clean, album(created="2026-04-01T00:00:00Z", message_id="M-1"))
    # the same MessageCreatedDateTime, another content: applied, not stale
    same_time = album(created="2026-04-01T00:00:00Z", message_id="M-1b", deals=(Deal(),))
    report = await import_ddex(clean, same_time)
    assert report.to_json()["ddex"]["stale_count"] == 0
    assert await reason(clean, AD, T1, "stream", "GB", JUNE) == "not_licensed"
    # the same MessageId, later: applied (a MessageId says nothing about order)
    later = album(created="2026-05-01T00:00:00Z", message_id="M-1")
    report = await import_ddex(clean, later)
    assert report.to_json()["ddex"]["stale_count"] == 0
    assert await reason(clean, AD, T1, "stream", "GB", JUNE) == "granted"


async def test_several_messages_are_one_import_applied_in_created_order(
    clean: PostgresStore,
) -> None:
    first = album(created="2026-03-01T00:00:00Z", message_id="M-1")
    second = album(created="2026-04-01T00:00:00Z", message_id="M-2", deals=(Deal(),))
    before = await revision(clean)
    report = await import_ddex(clean, second, first)  # given newest first
    assert report.status == "committed"
    assert report.revision == before + 1
    assert [(x["message_id"], x["status"]) for x in lines(report)] == [
        ("M-1", "applied"),
        ("M-2", "applied"),
    ]
    assert [(x["inserted"], x["updated"], x["deleted"]) for x in lines(report)] == [
        (2, 0, 0),
        (0, 1, 1),
    ]
    assert await reason(clean, AD, T1, "stream", "GB", JUNE) == "not_licensed"
    assert await reason(clean, SUB, T1, "stream", "GB", JUNE) == "granted"


async def test_the_example_files_import_and_answer(clean: PostgresStore) -> None:
    report = await import_ddex(clean, HERE / "ern382_album.xml", HERE / "ern43_album.xml")
    assert report.status == "committed", report.errors
    assert [x["version"] for x in lines(report)] == ["3.8.2", "4.3"]
    again = await import_ddex(clean, HERE / "ern43_album.xml")
    assert counts(again)[1:3] == (0, 0)
    assert again.revision == report.revision
