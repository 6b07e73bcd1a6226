"""Whole ERN messages (the schema-valid files in tests/ddex/) read end to end."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ddex_support import ern

from entitlements.ddex import (
    DdexMessage,
    PurgedRelease,
    SkippedDeal,
    mapping_from_dict,
    read_header,
    read_message,
    read_messages,
)
from entitlements.domain.model import grant_from_mapping
from entitlements.domain.policy import Query, decide, subjects_for

HERE = Path(__file__).parent / "ddex"
ACME = "PADPIDA2026010101A"
ALBUM = "release:0602527894567"


def summary(message: DdexMessage) -> list[tuple[object, ...]]:
    return [
        (r.reference, r.key, r.resource, r.track_release, r.tracks, r.deals, len(r.grants))
        for r in message.releases
    ]


def test_ern43_album_with_track_releases() -> None:
    message = read_message(HERE / "ern43_album.xml")
    assert message.name == "ern43_album.xml"
    header = message.header
    assert (header.kind, header.version, header.sender, header.message_id, header.test) == (
        "new",
        "4.3",
        ACME,
        "ACME-2026-0001",
        False,
    )
    assert header.created == datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    assert summary(message) == [
        ("R0", ALBUM, ALBUM, False, ("track:USRC17607839", "track:GBAYE0601498"), 4, 3),
        ("R1", f"release:{ACME}:TR-0001", "track:USRC17607839", True, (), 1, 1),
        ("R2", f"release:{ACME}:TR-0003", None, True, (), 1, 0),
    ]
    assert message.skipped_resources == {"video": 1}
    assert message.releases[0].skipped == (SkippedDeal("channel", "ReleaseDeal[1]/Deal[4]", 163),)
    assert message.releases[2].skipped == (SkippedDeal("video", "ReleaseDeal[2]/Deal[1]", 178),)
    assert (message.deal_count, message.grant_count) == (6, 4)
    assert message.skipped_deals() == {"channel": 1, "video": 1}
    by_subject = {g["subject"]: g for g in message.releases[0].grants}
    assert by_subject["role:ddex:PayAsYouGoModel"] == {
        "id": by_subject["role:ddex:PayAsYouGoModel"]["id"],
        "subject": "role:ddex:PayAsYouGoModel",
        "resource": ALBUM,
        "actions": ["download"],
        "territories": ["GB", "US"],
        "valid_from": "2026-03-06T00:00:00Z",
        "valid_until": "2027-03-06T00:00:00Z",
        "attributes": {
            "commercial_model": "PayAsYouGoModel",
            "use_types": ["PermanentDownload"],
            "price_type": "FrontLine",
            "message_id": "ACME-2026-0001",
        },
        "source": f"ddex:{ACME}",
    }
    ad = by_subject["role:ddex:AdvertisementSupportedModel"]
    assert (ad["territories"], ad["exclude_territories"], ad["valid_until"]) == (
        ["*"],
        ["DE", "FR"],
        "2027-01-01T00:00:00Z",
    )
    assert by_subject["role:ddex:SubscriptionModel"]["actions"] == ["offline", "stream"]


def test_ern43_album_checks() -> None:
    """The checks the README example promises, answered from this message's grants."""
    message = read_message(HERE / "ern43_album.xml")
    grants = [grant_from_mapping(g) for r in message.releases for g in r.grants]
    track = ("track:USRC17607839", ALBUM)  # the track, under the album

    def ask(roles: tuple[str, ...], action: str, territory: str, at: str) -> str:
        when = datetime.fromisoformat(at)
        query = Query(subjects_for("u1", roles), frozenset(track), action, territory, when)
        return decide(grants, query, 1).reason

    premium = ("ddex:SubscriptionModel",)
    free = ("ddex:AdvertisementSupportedModel",)
    assert ask(premium, "stream", "JP", "2026-03-06T00:00:00+00:00") == "granted"
    assert ask(premium, "stream", "JP", "2026-03-05T23:59:59+00:00") == "not_yet_valid"
    assert ask(premium, "offline", "JP", "2026-06-01T00:00:00+00:00") == "granted"
    assert ask(free, "stream", "GB", "2026-12-31T23:59:59+00:00") == "granted"
    assert ask(free, "stream", "GB", "2027-01-01T00:00:00+00:00") == "expired"
    assert ask(free, "stream", "DE", "2026-06-01T00:00:00+00:00") == "territory"
    assert ask(("ddex:PayAsYouGoModel",), "download", "US", "2026-06-01T00:00:00+00:00") == (
        "granted"
    )
    assert ask(free, "download", "GB", "2026-06-01T00:00:00+00:00") == "not_licensed"


def test_ern382_album_with_track_releases_and_a_channel() -> None:
    mapping = mapping_from_dict({"channels": ["Example Music Service"]})
    message = read_message(HERE / "ern382_album.xml", mapping)
    assert message.header.created == datetime(2026, 3, 1, 8, 30, tzinfo=UTC)  # +01:00 read
    assert message.header.version == "3.8.2"
    assert summary(message) == [
        ("R0", ALBUM, ALBUM, False, ("track:USRC17607839", "track:GBAYE0601498"), 3, 3),
        ("R1", "track:USRC17607839", "track:USRC17607839", True, (), 1, 1),
        ("R2", "release:A10302B0001234567X", "track:GBAYE0601498", True, (), 1, 1),
    ]
    assert message.releases[1].aliases == ("track:USRC17607839", f"release:{ACME}:TR-0001")
    assert message.skipped_resources == {"image": 1}
    download = next(g for g in message.releases[0].grants if g["actions"] == ["download"])
    assert download["exclude_territories"] == ["CA", "US"]
    assert download["valid_until"] == "2026-07-01T00:00:00Z"  # EndDate 2026-06-30 inclusive
    assert download["attributes"]["price_type"] == "MidPrice"
    single = message.releases[1].grants[0]
    assert (single["valid_from"], single["valid_until"]) == (
        "2026-03-06T12:00:00Z",
        "2026-09-06T12:00:00Z",
    )
    # Without our channel configured, the deal limited to it is skipped.
    plain = read_message(HERE / "ern382_album.xml")
    assert plain.releases[0].skipped == (SkippedDeal("channel", "ReleaseDeal[1]/Deal[3]", 128),)


def test_ern411_single_is_a_test_message_read_in_full() -> None:
    message = read_message(HERE / "ern411_single.xml")
    assert message.header.test and message.header.version == "4.1.1"
    assert message.header.created == datetime(2026, 4, 10, 13, 0, 0, 250000, tzinfo=UTC)
    assert summary(message) == [
        (
            "R0",
            "release:A1-2425G-ABC1234002-M",
            "release:A1-2425G-ABC1234002-M",
            False,
            ("track:FRZ039800212",),
            1,
            1,
        ),
        ("R1", "track:FRZ039800212", "track:FRZ039800212", True, (), 1, 1),
    ]
    grant = message.releases[1].grants[0]
    assert grant["territories"] == ["*"]  # TIS 2136
    assert grant["valid_from"] == "2026-04-01T00:00:00Z"  # StartDate 2026-04: the month
    assert grant["actions"] == ["ddex.usermakeavailableuserprovided", "ddex.webcast"]


def test_purge_messages_name_the_release_by_its_ids() -> None:
    ern43 = read_message(HERE / "ern43_purge.xml")
    assert ern43.header.kind == "purge" and ern43.releases == ()
    assert ern43.purged == (PurgedRelease(ALBUM, (ALBUM,), 11),)
    ern382 = read_message(HERE / "ern382_purge.xml")
    assert ern382.purged == (PurgedRelease("track:USRC17607839", ("track:USRC17607839",), 10),)
    # The 3.8.2 album's track release R1 has this id among its aliases.
    album = read_message(HERE / "ern382_album.xml")
    assert ern382.purged[0].key in album.releases[1].aliases


def test_a_purge_without_a_release_id_is_an_error() -> None:
    with pytest.raises(Exception, match="no ICPN, GRid, ISRC or ProprietaryId"):
        read_message(io.BytesIO(ern(root="PurgeReleaseMessage", purged={})))


def test_the_same_file_read_twice_gives_equal_messages_and_a_file_object_reads_like_a_path() -> (
    None
):
    path = HERE / "ern43_album.xml"
    with path.open("rb") as handle:
        from_handle = read_message(handle, name="ern43_album.xml")
    assert read_message(path) == read_message(str(path)) == from_handle


def test_read_messages_orders_by_creation_time_and_keeps_ties_in_input_order() -> None:
    late = io.BytesIO(ern(message_id="late", created="2026-05-01T00:00:00Z"))
    early = io.BytesIO(ern(message_id="early", created="2026-04-30T23:00:00-02:00"))
    tie = io.BytesIO(ern(message_id="tie", created="2026-05-01T00:00:00Z"))
    first = io.BytesIO(ern(message_id="first", created="2026-01-01T00:00:00"))
    ordered = read_messages([late, early, tie, first])
    assert [m.header.message_id for m in ordered] == ["first", "late", "tie", "early"]


def test_read_header_reads_only_the_header() -> None:
    # A message whose body is broken: the header is still readable on its own.
    data = ern(message_id="H-1")
    broken = data[: data.index(b"<DealList>")] + b"<DealList><ReleaseDeal>"
    header = read_header(io.BytesIO(broken))
    assert (header.message_id, header.kind) == ("H-1", "new")
    assert read_header(HERE / "ern382_purge.xml").kind == "purge"
    with pytest.raises(Exception, match="not well-formed"):
        read_message(io.BytesIO(broken))


def test_the_reader_imports_no_framework_driver_or_upper_layer() -> None:
    code = (
        "import json, sys\n"
        "import entitlements.ddex, entitlements.ddex.message\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = json.loads(done.stdout)
    forbidden = ("fastapi", "starlette", "asyncpg", "redis", "httpx", "uvicorn")
    layers = ("entitlements.api", "entitlements.cli", "entitlements.service", "entitlements.store")
    leaks = [m for m in modules if m.split(".")[0] in forbidden or m.startswith(layers)]
    assert leaks == []
    assert "lxml.etree" in modules  # the check can see what was imported
