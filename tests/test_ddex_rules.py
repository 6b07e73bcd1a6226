"""The DDEX mapping rules, one by one, on ERN 3.8.2 and 4.3 messages from the builder.

Every grant the reader returns is run through the service's one validator
(``grant_from_mapping``), and where a rule is about what a check answers, the
domain's own evaluation (``decide``) answers it at the instants that matter.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ddex_support import SENDER, Deal, Recording, Release, ern

from entitlements.ddex import DdexMapping, DdexMessage, mapping_from_dict, read_message
from entitlements.ddex.model import DdexRelease
from entitlements.domain.model import Grant, grant_from_mapping
from entitlements.domain.policy import Query, decide, subjects_for
from entitlements.errors import InvalidInputError

VERSIONS = ["382", "43"]
ALBUM = "release:0602527894567"
TRACK = "track:USRC17607839"


def read(mapping: DdexMapping | None = None, **kwargs: Any) -> DdexMessage:
    message = read_message(io.BytesIO(ern(**kwargs)), mapping or DdexMapping(), name="t.xml")
    for release in message.releases:
        for grant in release.grants:
            grant_from_mapping(grant)  # every grant is one the service accepts as it is
    return message


def release(message: DdexMessage, reference: str) -> DdexRelease:
    return next(r for r in message.releases if r.reference == reference)


def grants_of(message: DdexMessage, reference: str = "R0") -> list[dict[str, Any]]:
    return list(release(message, reference).grants)


def check(
    grants: list[dict[str, Any]],
    *,
    roles: tuple[str, ...],
    resources: tuple[str, ...],
    action: str,
    territory: str,
    at: datetime,
) -> str:
    query = Query(subjects_for("u1", roles), frozenset(resources), action, territory, at)
    return decide([grant_from_mapping(g) for g in grants], query, 1).reason


def problems(**kwargs: Any) -> list[tuple[str, str, int | None]]:
    mapping = kwargs.pop("mapping", None)
    with pytest.raises(InvalidInputError) as caught:
        read(mapping, **kwargs)
    return [(e.field, e.message, e.line) for e in caught.value.errors]


# --- resources and releases -------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_a_release_is_its_icpn_verbatim_and_its_sound_recordings_are_tracks(version: str) -> None:
    message = read(
        version=version,
        recordings=[Recording("A1", "USRC17607839"), Recording("A2", "gb-aye-06-01498")],
        releases=[Release("R0", ("A1", "A2"), icpn="0602527894567", grid="A10302B0001234567X")],
    )
    (album,) = message.releases
    assert album.resource == ALBUM == album.key  # leading zero kept; ICPN before GRid
    assert album.aliases == (ALBUM, "release:A10302B0001234567X")
    assert album.tracks == (TRACK, "track:GBAYE0601498")  # ISRC: hyphens removed, upper case
    assert not album.track_release
    assert [g["resource"] for g in album.grants] == [ALBUM]


@pytest.mark.parametrize("version", VERSIONS)
def test_without_icpn_a_release_is_its_grid_else_its_proprietary_id_in_its_namespace(
    version: str,
) -> None:
    by_grid = read(version=version, releases=[Release("R0", ("A1",), grid="A10302B0001234567X")])
    assert by_grid.releases[0].resource == "release:A10302B0001234567X"
    by_id = read(version=version, releases=[Release("R0", ("A1",), proprietary=(SENDER, "CAT-77"))])
    assert by_id.releases[0].resource == f"release:{SENDER}:CAT-77"
    other = read(
        version=version,
        sender="PADPIDA2026999999Z",
        releases=[Release("R0", ("A1",), proprietary=("PADPIDA2026999999Z", "CAT-77"))],
    )
    assert other.releases[0].resource != by_id.releases[0].resource  # two senders kept apart


@pytest.mark.parametrize("version", VERSIONS)
def test_a_track_release_is_not_a_resource_its_deals_apply_to_its_track(version: str) -> None:
    message = read(
        version=version,
        releases=[
            Release("R0", ("A1",), icpn="0602527894567"),
            Release("R1", ("A1",), proprietary=(SENDER, "TR-1"), track=True),
        ],
        deals=[(("R0",), (Deal(),)), (("R1",), (Deal(use_types=("PermanentDownload",)),))],
    )
    album, single = message.releases
    assert album.tracks == (TRACK,)
    assert single.track_release and single.resource == TRACK and single.tracks == ()
    assert single.key == f"release:{SENDER}:TR-1"
    assert [(g["resource"], g["actions"]) for g in single.grants] == [(TRACK, ["download"])]
    # A track on an album and on its track release: both rights reach the track.
    grants = list(album.grants) + list(single.grants)
    at = datetime(2026, 6, 1, tzinfo=UTC)
    role = ("ddex:SubscriptionModel",)
    on_track = (TRACK, ALBUM)  # the track and its ancestor, the album
    assert (
        check(grants, roles=role, resources=on_track, action="stream", territory="GB", at=at)
        == "granted"
    )
    assert (
        check(grants, roles=role, resources=on_track, action="download", territory="GB", at=at)
        == "granted"
    )
    assert (
        check(grants, roles=role, resources=(ALBUM,), action="download", territory="GB", at=at)
        == "not_licensed"
    )


def test_erns_3_release_id_that_is_an_isrc_makes_a_track_release() -> None:
    message = read(
        version="382",
        releases=[Release("R1", ("A1",), isrc="USRC17607839", release_type="Single")],
        deals=[(("R1",), (Deal(),))],
    )
    (single,) = message.releases
    assert single.track_release and single.resource == TRACK and single.key == TRACK


def test_a_track_on_two_releases_is_listed_by_both() -> None:
    message = read(
        recordings=[Recording("A1", "USRC17607839")],
        releases=[Release("R0", ("A1",), icpn="0602527894567")],
    )
    other = read(
        message_id="M-2",
        recordings=[Recording("A7", "USRC17607839")],
        releases=[Release("R9", ("A7",), icpn="5012345678900")],
        deals=[(("R9",), (Deal(),))],
    )
    assert message.releases[0].tracks == other.releases[0].tracks == (TRACK,)
    assert {message.releases[0].resource, other.releases[0].resource} == {
        ALBUM,
        "release:5012345678900",
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_videos_and_other_resource_kinds_are_skipped_and_counted(version: str) -> None:
    message = read(
        version=version,
        recordings=[
            Recording("A1", "USRC17607839"),
            Recording("A2", None, kind="Video"),
            Recording("A3", None, kind="Image"),
            Recording("A4", None),  # a sound recording without an ISRC
        ],
        releases=[
            Release("R0", ("A1", "A2", "A3", "A4"), icpn="0602527894567"),
            Release("R1", ("A2",), proprietary=(SENDER, "V-1"), track=True),
            Release("R2", ("A4",), proprietary=(SENDER, "T-4"), track=True),
            Release("R3", ("A2",), icpn="5012345678900", release_type="VideoSingle"),
        ],
        deals=[(("R0", "R1", "R2", "R3"), (Deal(),))],
    )
    assert message.skipped_resources == {"video": 1, "image": 1, "no_isrc": 1}
    album, video_track, no_isrc, video_single = message.releases
    assert album.tracks == (TRACK,) and len(album.grants) == 1  # the album's sound is licensed
    assert video_track.resource is None and video_track.grants == ()
    assert [s.reason for s in video_track.skipped] == ["video"]
    assert [s.reason for s in no_isrc.skipped] == ["no_isrc"]
    assert [s.reason for s in video_single.skipped] == ["video"]
    assert message.skipped_deals() == {"video": 2, "no_isrc": 1}


# --- subjects and actions ---------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_the_subject_is_a_ddex_role_per_commercial_model_or_the_mapped_roles(version: str) -> None:
    deal = Deal(models=("SubscriptionModel", "AdvertisementSupportedModel"))
    plain = read(version=version, deals=[(("R0",), (deal,))])
    assert sorted(g["subject"] for g in grants_of(plain)) == [
        "role:ddex:AdvertisementSupportedModel",
        "role:ddex:SubscriptionModel",
    ]
    mapping = mapping_from_dict(
        {"subjects": {"SubscriptionModel": ["role:plan:premium", "role:plan:family"]}}
    )
    mapped = read(mapping, version=version, deals=[(("R0",), (deal,))])
    assert sorted(
        (g["subject"], g["attributes"]["commercial_model"]) for g in grants_of(mapped)
    ) == [
        ("role:ddex:AdvertisementSupportedModel", "AdvertisementSupportedModel"),
        ("role:plan:family", "SubscriptionModel"),
        ("role:plan:premium", "SubscriptionModel"),
    ]
    at = datetime(2026, 6, 1, tzinfo=UTC)
    family = check(
        grants_of(mapped),
        roles=("plan:family",),
        resources=(ALBUM,),
        action="stream",
        territory="SE",
        at=at,
    )
    assert family == "granted"
    assert (
        check(
            grants_of(mapped),
            roles=("plan:free",),
            resources=(ALBUM,),
            action="stream",
            territory="SE",
            at=at,
        )
        == "not_licensed"
    )


@pytest.mark.parametrize(
    ("use_type", "actions"),
    [
        ("OnDemandStream", ["stream"]),
        ("Stream", ["stream"]),
        ("NonInteractiveStream", ["radio"]),
        ("PermanentDownload", ["download"]),
        ("ConditionalDownload", ["offline"]),
        ("TetheredDownload", ["offline"]),
        ("UserMakeAvailableUserProvided", ["ddex.usermakeavailableuserprovided"]),
        ("Webcast", ["ddex.webcast"]),
        ("UserDefined:KaraokeSing", ["ddex.userdefined.karaokesing"]),
    ],
)
@pytest.mark.parametrize("version", VERSIONS)
def test_each_use_type_becomes_its_action(version: str, use_type: str, actions: list[str]) -> None:
    message = read(version=version, deals=[(("R0",), (Deal(use_types=(use_type,)),))])
    (grant,) = grants_of(message)
    assert grant["actions"] == actions
    assert grant["attributes"]["use_types"] == [use_type.split(":")[0]]  # as written


def test_the_mapping_file_can_remap_or_silence_a_use_type() -> None:
    mapping = mapping_from_dict({"actions": {"Webcast": ["radio", "stream"], "Podcast": []}})
    deal = Deal(use_types=("Webcast", "Podcast", "PermanentDownload"))
    (grant,) = grants_of(read(mapping, deals=[(("R0",), (deal,))]))
    assert grant["actions"] == ["download", "radio", "stream"]
    silent = read(mapping, deals=[(("R0",), (Deal(use_types=("Podcast",)),))])
    assert grants_of(silent) == [] and [s.reason for s in silent.releases[0].skipped] == [
        "use_type"
    ]


def test_a_user_defined_value_that_cannot_be_an_action_is_an_error_naming_the_deal() -> None:
    (problem,) = problems(deals=[(("R0",), (Deal(), Deal(use_types=("UserDefined:Sing Along",))))])
    field, message, line = problem
    assert field == "t.xml:DealList/ReleaseDeal[1]/Deal[2]/DealTerms/UseType"
    assert "UserDefined:Sing Along" in message and "[actions]" in message and line is not None
    mapped = mapping_from_dict({"actions": {"UserDefined:Sing Along": ["karaoke"]}})
    (grant,) = grants_of(
        read(mapped, deals=[(("R0",), (Deal(use_types=("UserDefined:Sing Along",)),))])
    )
    assert grant["actions"] == ["karaoke"]


# --- territories ------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("territories", "excluded", "expected", "expected_excluded"),
    [
        (("Worldwide",), (), ["*"], None),
        (("GB", "US", "GB"), (), ["GB", "US"], None),
        (("Worldwide", "GB"), (), ["*"], None),
        ((), ("DE", "FR"), ["*"], ["DE", "FR"]),
    ],
)
def test_territory_codes(
    version: str,
    territories: tuple[str, ...],
    excluded: tuple[str, ...],
    expected: list[str],
    expected_excluded: list[str] | None,
) -> None:
    deal = Deal(territories=territories, excluded=excluded)
    (grant,) = grants_of(read(version=version, deals=[(("R0",), (deal,))]))
    assert grant["territories"] == expected
    assert grant.get("exclude_territories") == expected_excluded


def test_tis_2136_is_worldwide() -> None:
    (grant,) = grants_of(read(version="43", deals=[(("R0",), (Deal(territories=("2136",)),))]))
    assert grant["territories"] == ["*"]


@pytest.mark.parametrize("version", VERSIONS)
def test_worldwide_minus_excluded_territories_answers_territory(version: str) -> None:
    deal = Deal(territories=(), excluded=("DE", "FR"))
    grants = grants_of(read(version=version, deals=[(("R0",), (deal,))]))
    at = datetime(2026, 6, 1, tzinfo=UTC)
    role = ("ddex:SubscriptionModel",)
    for territory, reason in (
        ("GB", "granted"),
        ("JP", "granted"),
        ("DE", "territory"),
        ("FR", "territory"),
    ):
        assert (
            check(
                grants, roles=role, resources=(ALBUM,), action="stream", territory=territory, at=at
            )
            == reason
        )


@pytest.mark.parametrize("code", ["UK", "EU", "ES-CE", "826", "gb", "XK"])
def test_a_territory_code_that_is_neither_iso_nor_worldwide_is_an_error_naming_the_deal(
    code: str,
) -> None:
    (problem,) = problems(deals=[(("R0",), (Deal(territories=("GB", code)),))])
    assert problem[0] == "t.xml:DealList/ReleaseDeal[1]/Deal[1]/DealTerms/TerritoryCode"
    assert repr(code) in problem[1]


def test_worldwide_cannot_be_excluded() -> None:
    (problem,) = problems(deals=[(("R0",), (Deal(territories=(), excluded=("Worldwide",)),))])
    assert problem[0].endswith("/ExcludedTerritoryCode")


# --- validity ---------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_end_date_is_inclusive_the_grant_ends_at_midnight_after_it(version: str) -> None:
    deal = Deal(periods=(("2026-03-06", "2026-12-31"),))
    (grant,) = grants_of(read(version=version, deals=[(("R0",), (deal,))]))
    assert (grant["valid_from"], grant["valid_until"]) == (
        "2026-03-06T00:00:00Z",
        "2027-01-01T00:00:00Z",
    )
    end = datetime(2027, 1, 1, tzinfo=UTC)
    role = ("ddex:SubscriptionModel",)

    def at(instant: datetime) -> str:
        return check(
            [grant], roles=role, resources=(ALBUM,), action="stream", territory="GB", at=instant
        )

    assert at(end - timedelta(seconds=1)) == "granted"  # 2026-12-31T23:59:59Z, still the end date
    assert at(end) == "expired"
    assert at(datetime(2026, 3, 6, tzinfo=UTC) - timedelta(seconds=1)) == "not_yet_valid"
    assert at(datetime(2026, 3, 6, tzinfo=UTC)) == "granted"


def test_date_only_values_are_read_in_the_mappings_time_zone() -> None:
    mapping = mapping_from_dict({"time_zone": "Europe/Berlin"})
    deal = Deal(periods=(("2026-03-06", "2026-07-31"),))
    (grant,) = grants_of(read(mapping, deals=[(("R0",), (deal,))]))
    # Berlin is UTC+1 in March, UTC+2 in summer.
    assert (grant["valid_from"], grant["valid_until"]) == (
        "2026-03-05T23:00:00Z",
        "2026-07-31T22:00:00Z",
    )


def test_date_times_are_taken_as_given_and_without_offset_as_utc() -> None:
    deal = Deal(periods=(("2026-03-06T12:30:00+02:00", "2026-04-01T00:00:00.5"),))
    (grant,) = grants_of(read(deals=[(("R0",), (deal,))]))
    assert (grant["valid_from"], grant["valid_until"]) == (
        "2026-03-06T10:30:00Z",
        "2026-04-01T00:00:00.500000Z",
    )


def test_year_and_month_dates_cover_the_whole_year_or_month() -> None:
    deal = Deal(periods=(("2026-02", "2026-02"), ("2027", "2027")))
    grants = grants_of(read(deals=[(("R0",), (deal,))]))
    assert sorted((g["valid_from"], g["valid_until"]) for g in grants) == [
        ("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"),
        ("2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"),
    ]


def test_a_deal_without_dates_is_unbounded_and_one_with_an_end_only_starts_now() -> None:
    deal = Deal(periods=((None, None), (None, "2026-12-31")))
    grants = grants_of(read(version="382", deals=[(("R0",), (deal,))]))
    assert sorted(str(g.get("valid_until")) for g in grants) == ["2027-01-01T00:00:00Z", "None"]
    assert all("valid_from" not in g for g in grants)


# --- distribution channels ----------------------------------------------------


OURS = "PADPIDA2026020202B"


@pytest.mark.parametrize("version", VERSIONS)
def test_a_deal_for_another_channel_is_skipped_and_one_for_ours_applies(version: str) -> None:
    deals = (
        Deal(),
        Deal(channels=("PADPIDA2026090909Z",), use_types=("PermanentDownload",)),
        Deal(channels=(OURS,), use_types=("ConditionalDownload",)),
    )
    unconfigured = read(version=version, deals=[(("R0",), deals)])
    assert [s.reason for s in unconfigured.releases[0].skipped] == ["channel", "channel"]
    assert unconfigured.skipped_deals() == {"channel": 2}
    mapping = mapping_from_dict({"channels": [OURS.lower()]})
    configured = read(mapping, version=version, deals=[(("R0",), deals)])
    assert sorted(g["actions"][0] for g in grants_of(configured)) == ["offline", "stream"]
    (skipped,) = configured.releases[0].skipped
    assert (skipped.reason, skipped.deal) == ("channel", "ReleaseDeal[1]/Deal[2]")
    assert configured.releases[0].deals == 3


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("configured", [OURS, f"DPID:{OURS}", "example music SERVICE"])
def test_a_channel_matches_by_partyid_bare_or_qualified_or_by_full_name(
    version: str, configured: str
) -> None:
    deal = (
        Deal(channel_names=("Example Music Service",))
        if configured.startswith("example")
        else Deal(channels=(OURS,))
    )
    message = read(
        mapping_from_dict({"channels": [configured]}), version=version, deals=[(("R0",), (deal,))]
    )
    assert len(grants_of(message)) == 1


def test_an_excluded_distribution_channel_that_is_ours_skips_the_deal() -> None:
    mapping = mapping_from_dict({"channels": [OURS]})
    ours = read(mapping, deals=[(("R0",), (Deal(excluded_channels=(OURS,)),))])
    theirs = read(mapping, deals=[(("R0",), (Deal(excluded_channels=("PADPIDA2026090909Z",)),))])
    assert [s.reason for s in ours.releases[0].skipped] == ["channel"]
    assert len(grants_of(theirs)) == 1


# --- attributes, source, ids --------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_attributes_keep_the_deal_as_written_and_the_source_names_the_sender(version: str) -> None:
    deal = Deal(
        models=("PayAsYouGoModel",),
        use_types=("PermanentDownload", "ConditionalDownload"),
        price_code="FrontLine",
        price_type_attribute="StandardRetailPrice",
    )
    (grant,) = grants_of(read(version=version, message_id="ACME-77", deals=[(("R0",), (deal,))]))
    assert grant["attributes"] == {
        "commercial_model": "PayAsYouGoModel",
        "use_types": ["PermanentDownload", "ConditionalDownload"],
        "price_type": "FrontLine",
        "message_id": "ACME-77",
    }
    assert grant["source"] == f"ddex:{SENDER}"
    only_attribute = Deal(price_type_attribute="PreOrderPrice")
    (grant,) = grants_of(read(version=version, deals=[(("R0",), (only_attribute,))]))
    assert grant["attributes"]["price_type"] == "PreOrderPrice"
    (grant,) = grants_of(read(version=version))
    assert "price_type" not in grant["attributes"]


def _ids(message: DdexMessage) -> list[str]:
    return [g["id"] for r in message.releases for g in r.grants]


@pytest.mark.parametrize("version", VERSIONS)
def test_grant_ids_are_deterministic_valid_and_survive_a_new_message_id(version: str) -> None:
    deals = [(("R0",), (Deal(), Deal(territories=("GB",), use_types=("PermanentDownload",))))]
    first = read(version=version, deals=deals)
    again = read(version=version, deals=deals)
    assert first == again and len(set(_ids(first))) == 2
    resent = read(version=version, message_id="M-2", created="2026-04-01T00:00:00Z", deals=deals)
    assert _ids(resent) == _ids(first)  # the same deals re-sent: the same grants, updated
    assert grants_of(resent)[0]["attributes"]["message_id"] == "M-2"
    changed = read(version=version, deals=[(("R0",), (Deal(territories=("GB", "IE")),))])
    assert _ids(changed)[0] not in _ids(first)  # a changed deal is another grant
    for gid in _ids(first):
        assert gid.startswith(f"ddex:{ALBUM}:") and len(gid) <= 200
        assert grant_from_mapping(grants_of(first)[0]).id == _ids(first)[0]


def test_two_releases_with_the_same_deal_on_the_same_track_get_different_ids() -> None:
    message = read(
        releases=[
            Release("R1", ("A1",), proprietary=(SENDER, "TR-1"), track=True),
            Release("R2", ("A1",), grid="A10302B0001234567X", track=True),
        ],
        deals=[(("R1", "R2"), (Deal(),))],
    )
    one, two = (release(message, r).grants[0] for r in ("R1", "R2"))
    assert one["resource"] == two["resource"] == TRACK and one["id"] != two["id"]


def test_a_long_resource_gives_a_hash_only_id() -> None:
    long_id = "X" * 150
    message = read(releases=[Release("R0", ("A1",), proprietary=(SENDER, long_id))])
    (grant,) = grants_of(message)
    assert grant["id"].startswith("ddex:") and len(grant["id"]) == 45
    assert isinstance(grant_from_mapping(grant), Grant)


def test_one_grant_per_validity_period_and_repeats_collapse() -> None:
    deal = Deal(
        periods=(("2026-01-01", "2026-01-31"), ("2026-03-01", None), ("2026-01-01", "2026-01-31"))
    )
    grants = grants_of(read(deals=[(("R0",), (deal, deal))]))
    assert len(grants) == 2
    assert release(read(deals=[(("R0",), (deal, deal))]), "R0").deals == 2


# --- deals that give nothing ----------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_deals_without_terms_use_types_or_models_are_skipped_with_their_reason(
    version: str,
) -> None:
    message = read(
        version=version,
        deals=[
            (
                ("R0",),
                (Deal(terms=False), Deal(use_types=()), Deal(models=()), Deal()),
            )
        ],
    )
    (album,) = message.releases
    assert [s.reason for s in album.skipped] == [
        "out_of_band",
        "no_use_type",
        "no_commercial_model",
    ]
    assert len(album.grants) == 1 and album.deals == 4


def test_a_release_without_deals_has_none_the_message_is_the_whole_truth() -> None:
    message = read(deals=[])
    (album,) = message.releases
    assert (album.deals, album.grants, album.skipped) == (0, (), ())


# --- ERN 3 TakeDown -------------------------------------------------------------


def test_an_ern3_takedown_cancels_every_deal_of_the_releases_it_refers_to() -> None:
    message = read(
        version="382",
        releases=[
            Release("R0", ("A1",), icpn="0602527894567"),
            Release("R1", ("A1",), isrc="USRC17607839", track=True),
        ],
        deals=[
            (("R0",), (Deal(), Deal(use_types=("PermanentDownload",)))),
            (("R0",), (Deal(takedown=True),)),
            (("R1",), (Deal(),)),
        ],
    )
    album, single = message.releases
    assert album.taken_down and album.grants == () and album.deals == 3
    assert [(s.reason, s.deal) for s in album.skipped] == [
        ("taken_down", "ReleaseDeal[1]/Deal[1]"),
        ("taken_down", "ReleaseDeal[1]/Deal[2]"),
    ]
    assert not single.taken_down and len(single.grants) == 1  # the other release keeps its deal


# --- the header -----------------------------------------------------------------


@pytest.mark.parametrize("version", ["382", "411", "43"])
def test_a_test_message_is_flagged(version: str) -> None:
    message = read(version=version, control="TestMessage")
    assert message.header.test and message.header.control == "TestMessage"
    assert not read(version=version).header.test
    assert not read(version=version, control="LiveMessage").header.test


def test_the_header_gives_sender_id_creation_time_and_kind() -> None:
    message = read(version="382", created="2026-03-01T10:00:00+01:00", message_id="X-1")
    header = message.header
    assert (header.kind, header.version, header.sender, header.message_id) == (
        "new",
        "3.8.2",
        SENDER,
        "X-1",
    )
    assert header.created == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert header.source == f"ddex:{SENDER}"
    assert message.name == "t.xml"


def test_the_deprecated_all_deals_cancelled_cancels_like_a_takedown() -> None:
    data = ern(version="382", deals=[(("R0",), (Deal(), Deal(takedown=True)))])
    data = data.replace(
        b"<TakeDown>true</TakeDown>", b"<AllDealsCancelled>true</AllDealsCancelled>"
    )
    (album,) = read_message(io.BytesIO(data)).releases
    assert album.taken_down and album.grants == ()
    assert [s.reason for s in album.skipped] == ["taken_down"]
    kept = ern(version="382", deals=[(("R0",), (Deal(), Deal(takedown=True)))])
    kept = kept.replace(b"<TakeDown>true</TakeDown>", b"<TakeDown>false</TakeDown>")
    (album,) = read_message(io.BytesIO(kept)).releases
    assert not album.taken_down and len(album.grants) == 1
