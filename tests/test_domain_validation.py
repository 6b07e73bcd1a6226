"""Input validation: the one validator every way in (API, import, CLI) goes through.

Each refusal must name the field (a dotted path such as ``territories.0``) and
every problem in one input is reported at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from entitlements.domain.model import (
    MAX_ATTRIBUTES_BYTES,
    MAX_PARENTS,
    Grant,
    Resource,
    grant_from_mapping,
    parse_resource,
    parse_territory,
    parse_time,
    resource_from_mapping,
)
from entitlements.domain.territories import ISO_3166_ALPHA2, is_territory
from entitlements.errors import FieldError, InvalidInputError


def base(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "deal-1",
        "subject": "role:plan:premium",
        "resource": "track:USRC17607839",
        "actions": ["stream", "download"],
        "territories": ["GB", "IE"],
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not ...}


def refused(fn: Any, *args: Any, **kwargs: Any) -> list[FieldError]:
    with pytest.raises(InvalidInputError) as info:
        fn(*args, **kwargs)
    errors = list(info.value.errors)
    assert errors, "an InvalidInputError must say what is wrong"
    for e in errors:
        assert isinstance(e, FieldError)
        assert e.message
    return errors


def fields(fn: Any, *args: Any, **kwargs: Any) -> list[str]:
    return [e.field for e in refused(fn, *args, **kwargs)]


# --- a good grant --------------------------------------------------------------


def test_a_full_grant_is_accepted_and_normalised() -> None:
    g = grant_from_mapping(
        base(
            territories=["*"],
            exclude_territories=["DE", "FR", "DE"],
            valid_from="2026-01-01T00:00:00+01:00",
            valid_until="2027-01-01T00:00:00Z",
            effect="deny",
            attributes={"quality": "lossless", "bitrate": 1411},
            source="label-feed",
        )
    )
    assert g == Grant(
        id="deal-1",
        subject="role:plan:premium",
        resource="track:USRC17607839",
        actions=frozenset({"stream", "download"}),
        territories=frozenset({"*"}),
        exclude_territories=frozenset({"DE", "FR"}),
        valid_from=datetime(2025, 12, 31, 23, 0, tzinfo=UTC),
        valid_until=datetime(2027, 1, 1, tzinfo=UTC),
        effect="deny",
        attributes={"quality": "lossless", "bitrate": 1411},
        source="label-feed",
    )
    assert g.valid_from is not None and g.valid_from.utcoffset() == timedelta(0)


def test_defaults_for_optional_fields() -> None:
    g = grant_from_mapping(base())
    assert g.effect == "allow"
    assert g.exclude_territories == frozenset()
    assert (g.valid_from, g.valid_until, g.attributes, g.source) == (None, None, None, None)
    nulls = grant_from_mapping(
        base(
            exclude_territories=None,
            valid_from=None,
            valid_until=None,
            effect=None,
            attributes=None,
            source=None,
        )
    )
    assert nulls == g


def test_the_json_form_round_trips() -> None:
    g = grant_from_mapping(
        base(valid_from="2026-01-01T00:00:00Z", exclude_territories=["IE"], attributes={"a": 1})
    )
    assert grant_from_mapping(g.to_json()) == g


# --- territories ------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["UK", "gb", "Gb", "XX", "GBR", "", " GB", "GB ", "EU", None, 12, ["GB"]]
)
def test_parse_territory_refuses(bad: object) -> None:
    assert fields(parse_territory, bad) == ["territory"]
    assert fields(parse_territory, bad, "where") == ["where"]


@pytest.mark.parametrize("code", ["GB", "US", "DE", "SS", "AX"])
def test_parse_territory_accepts(code: str) -> None:
    assert parse_territory(code) == code


@pytest.mark.parametrize("bad", ["UK", "gb", "XX", "GBR", "", None, 12])
def test_a_bad_territory_code_is_refused_by_index(bad: object) -> None:
    assert fields(grant_from_mapping, base(territories=[bad])) == ["territories.0"]
    assert fields(grant_from_mapping, base(territories=["GB", "DE", bad])) == ["territories.2"]
    assert fields(grant_from_mapping, base(exclude_territories=["FR", bad])) == [
        "exclude_territories.1"
    ]


def test_every_bad_code_is_reported() -> None:
    assert fields(grant_from_mapping, base(territories=["UK", "GB", "XX", "gb"])) == [
        "territories.0",
        "territories.2",
        "territories.3",
    ]


@pytest.mark.parametrize(
    ("territories", "bad_fields"),
    [
        (["*", "GB"], ["territories.0"]),
        (["GB", "*"], ["territories.1"]),
        (["*", "*"], ["territories.0", "territories.1"]),
    ],
)
def test_worldwide_mixed_with_codes_is_refused(
    territories: list[str], bad_fields: list[str]
) -> None:
    assert fields(grant_from_mapping, base(territories=territories)) == bad_fields


def test_worldwide_cannot_be_excluded() -> None:
    assert fields(grant_from_mapping, base(territories=["*"], exclude_territories=["*"])) == [
        "exclude_territories.0"
    ]


@pytest.mark.parametrize(
    ("territories", "expected"),
    [
        (["*"], {"*"}),
        (["GB"], {"GB"}),
        (["GB", "IE", "GB"], {"GB", "IE"}),
        (sorted(ISO_3166_ALPHA2), set(ISO_3166_ALPHA2)),
    ],
)
def test_valid_territories_are_accepted(territories: list[str], expected: set[str]) -> None:
    assert grant_from_mapping(base(territories=territories)).territories == expected


@pytest.mark.parametrize("value", [[], "GB", "*", {"GB": 1}, 5])
def test_territories_must_be_a_non_empty_list(value: object) -> None:
    assert fields(grant_from_mapping, base(territories=value)) == ["territories"]


def test_territories_are_required() -> None:
    assert fields(grant_from_mapping, base(territories=...)) == ["territories"]
    assert fields(grant_from_mapping, base(territories=None)) == ["territories"]


# --- windows and times ------------------------------------------------------------


def test_an_inverted_window_is_refused_on_valid_until() -> None:
    errs = refused(
        grant_from_mapping,
        base(valid_from="2026-02-01T00:00:00Z", valid_until="2026-01-01T00:00:00Z"),
    )
    assert [e.field for e in errs] == ["valid_until"]


def test_an_empty_window_is_refused_on_valid_until() -> None:
    assert fields(
        grant_from_mapping,
        base(valid_from="2026-01-01T01:00:00+01:00", valid_until="2026-01-01T00:00:00Z"),
    ) == ["valid_until"]


def test_the_shortest_window_is_accepted() -> None:
    g = grant_from_mapping(
        base(valid_from="2026-01-01T00:00:00Z", valid_until="2026-01-01T00:00:00.000001Z")
    )
    assert g.valid_until is not None and g.valid_from is not None
    assert g.valid_until - g.valid_from == timedelta(microseconds=1)


def test_a_half_open_window_is_accepted() -> None:
    assert grant_from_mapping(base(valid_from="2026-01-01T00:00:00Z")).valid_until is None
    assert grant_from_mapping(base(valid_until="2026-01-01T00:00:00Z")).valid_from is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-31T00:00:00Z", datetime(2026, 1, 31, tzinfo=UTC)),
        ("2026-01-31t00:00:00z", datetime(2026, 1, 31, tzinfo=UTC)),
        ("2026-01-31 00:00:00Z", datetime(2026, 1, 31, tzinfo=UTC)),
        ("2026-01-31T02:00:00+02:00", datetime(2026, 1, 31, tzinfo=UTC)),
        ("2026-01-30T19:00:00-05:00", datetime(2026, 1, 31, tzinfo=UTC)),
        ("2026-01-31T00:00:00-00:00", datetime(2026, 1, 31, tzinfo=UTC)),
        ("2026-01-31T00:00:00.5Z", datetime(2026, 1, 31, 0, 0, 0, 500000, tzinfo=UTC)),
        ("2026-01-31T00:00:00.000001Z", datetime(2026, 1, 31, 0, 0, 0, 1, tzinfo=UTC)),
    ],
)
def test_parse_time_accepts_rfc3339_and_returns_utc(text: str, expected: datetime) -> None:
    got = parse_time(text, "at")
    assert got == expected
    assert got.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-31T00:00:00",  # no offset: a wall clock, not an instant
        "2026-01-31T00:00:00.123",
        "2026-01-31",
        "2026-01-31T00:00Z",
        "2026-01-31T00:00:00+0100",
        "2026-01-31T00:00:00+01",
        "20260131T000000Z",
        "2026-02-30T00:00:00Z",
        "2026-01-31T24:00:00Z",
        "2026-01-31T00:00:60Z",
        "2026-01-31T00:00:00+24:00",
        "2026-01-31T00:00:00 Z",
        " 2026-01-31T00:00:00Z",
        "2026-01-31T00:00:00Z\n",
        "\uff12\uff10\uff12\uff16-01-31T00:00:00Z",  # full-width digits
        "yesterday",
        "",
        1767225600,
        None,
        datetime(2026, 1, 31, tzinfo=UTC),
    ],
)
def test_parse_time_refuses(text: object) -> None:
    assert fields(parse_time, text, "valid_from") == ["valid_from"]


@pytest.mark.parametrize(
    "text",
    [
        # Valid RFC 3339 whose UTC instant falls outside what datetime holds.
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
    ],
)
def test_parse_time_refuses_instants_out_of_range_instead_of_crashing(text: str) -> None:
    # Must be a field error (422), not an OverflowError escaping as a 500.
    assert fields(parse_time, text, "valid_from") == ["valid_from"]
    assert fields(grant_from_mapping, base(valid_until=text)) == ["valid_until"]


def test_a_time_without_offset_is_refused_in_a_grant() -> None:
    assert fields(
        grant_from_mapping, base(valid_from="2026-01-01T00:00:00", valid_until="2026-02-01")
    ) == ["valid_from", "valid_until"]


# --- resources --------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "track",
        ":x",
        "Track:1",
        "TRACK:1",
        "1track:x",
        "track:",
        "track: x",
        "track:x y",
        "track:-x",
        "track:\u00e9",
        "tr ack:x",
        "a" * 300,
        "track:" + "a" * 201,
        "t" * 33 + ":x",
        "",
        None,
        7,
        ["track:x"],
    ],
)
def test_parse_resource_refuses(bad: object) -> None:
    assert fields(parse_resource, bad) == ["resource"]
    assert fields(grant_from_mapping, base(resource=bad)) == ["resource"]


@pytest.mark.parametrize(
    "good",
    [
        "track:USRC17607839",
        "release:0602527894567",
        "label:acme",
        "track:a:b",
        "work:iswc=T-034.524.680-1",
        "t" * 32 + ":" + "x" * 200,
    ],
)
def test_parse_resource_accepts(good: str) -> None:
    assert parse_resource(good) == good


def test_a_resource_with_parents() -> None:
    r = resource_from_mapping(
        {"id": "track:t1", "parents": ["release:r2", "release:r1", "release:r2"]}
    )
    assert r == Resource("track:t1", ("release:r1", "release:r2"))
    assert resource_from_mapping({"id": "label:acme"}) == Resource("label:acme")
    assert resource_from_mapping({"kind": "resource", "id": "label:acme", "parents": []}) == (
        Resource("label:acme")
    )


def test_a_resource_cannot_be_its_own_parent() -> None:
    assert fields(
        resource_from_mapping, {"id": "track:t1", "parents": ["release:r1", "track:t1"]}
    ) == ["parents.1"]
    assert fields(resource_from_mapping, {"parents": ["track:t1"]}, resource_id="track:t1") == [
        "parents.0"
    ]


def test_parents_are_limited() -> None:
    many = [f"release:r{i}" for i in range(MAX_PARENTS)]
    assert len(resource_from_mapping({"id": "track:t1", "parents": many}).parents) == MAX_PARENTS
    assert fields(
        resource_from_mapping, {"id": "track:t1", "parents": [*many, "release:one-more"]}
    ) == ["parents"]


def test_resource_errors_are_all_reported() -> None:
    assert fields(
        resource_from_mapping,
        {"id": "Track:1", "parents": ["release:ok", "bad", ":x"], "colour": "red"},
    ) == ["colour", "id", "parents.1", "parents.2"]
    assert fields(resource_from_mapping, {"parents": "release:r1"}) == ["id", "parents"]
    assert fields(resource_from_mapping, {"id": "track:t1", "parents": None}) == ["parents"]
    assert fields(resource_from_mapping, ["track:t1"]) == [""]


def test_a_resource_id_from_the_url_must_agree_with_the_body() -> None:
    assert resource_from_mapping({"parents": []}, resource_id="track:t1").id == "track:t1"
    assert resource_from_mapping({"id": "track:t1"}, resource_id="track:t1").id == "track:t1"
    assert fields(resource_from_mapping, {"id": "track:t2"}, resource_id="track:t1") == ["id"]


# --- the other grant fields --------------------------------------------------------


def test_unknown_fields_are_refused_by_name() -> None:
    errs = refused(grant_from_mapping, base(colour="red", Territories=["GB"]))
    assert [(e.field, e.message) for e in errs] == [
        ("Territories", "unknown field"),
        ("colour", "unknown field"),
    ]


def test_an_unknown_field_name_is_truncated() -> None:
    assert fields(grant_from_mapping, base(**{"x" * 500: 1})) == ["x" * 64]


@pytest.mark.parametrize(
    ("actions", "bad_fields"),
    [
        ([], ["actions"]),
        ("stream", ["actions"]),
        (None, ["actions"]),
        (["Stream"], ["actions.0"]),
        (["stream", "DOWNLOAD"], ["actions.1"]),
        (["stream", ""], ["actions.1"]),
        (["stream", "down load"], ["actions.1"]),
        (["1stream"], ["actions.0"]),
        (["_stream"], ["actions.0"]),
        ([1, "stream", None], ["actions.0", "actions.2"]),
        ([f"a{i}" for i in range(33)], ["actions"]),
    ],
)
def test_actions_must_be_lowercase_identifiers(actions: object, bad_fields: list[str]) -> None:
    assert fields(grant_from_mapping, base(actions=actions)) == bad_fields


def test_actions_are_required_and_deduplicated() -> None:
    assert fields(grant_from_mapping, base(actions=...)) == ["actions"]
    g = grant_from_mapping(base(actions=["stream", "stream", "download_hq", "x.y-z"]))
    assert g.actions == {"stream", "download_hq", "x.y-z"}


@pytest.mark.parametrize("effect", ["allow", "deny"])
def test_effect_allow_or_deny(effect: str) -> None:
    assert grant_from_mapping(base(effect=effect)).effect == effect


@pytest.mark.parametrize("effect", ["Allow", "DENY", "block", "", True, 0, ["deny"]])
def test_effect_other_values_are_refused(effect: object) -> None:
    assert fields(grant_from_mapping, base(effect=effect)) == ["effect"]


def test_attributes_must_be_a_small_object() -> None:
    assert grant_from_mapping(base(attributes={})).attributes == {}
    assert grant_from_mapping(base(attributes={"q": [1, {"b": None}]})).attributes == {
        "q": [1, {"b": None}]
    }
    # {"k":"…"} is 8 bytes of JSON around the value.
    exactly = {"k": "x" * (MAX_ATTRIBUTES_BYTES - 8)}
    assert grant_from_mapping(base(attributes=exactly)).attributes == exactly
    over = {"k": "x" * (MAX_ATTRIBUTES_BYTES - 7)}
    assert fields(grant_from_mapping, base(attributes=over)) == ["attributes"]


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ([], "attributes"),
        (["a"], "attributes"),
        ("quality", "attributes"),
        (1, "attributes"),
        (True, "attributes"),
        ({1: "int key"}, "attributes"),
        ({"s": {1, 2}}, "attributes.s"),
        ({"o": object()}, "attributes.o"),
    ],
)
def test_attributes_other_shapes_are_refused(attributes: object, field: str) -> None:
    assert fields(grant_from_mapping, base(attributes=attributes)) == [field]


def nested(levels: int) -> dict[str, Any]:
    """Attributes ``levels`` deep: {"a": {"a": ... {}}} (the outer object is level 1)."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def test_attributes_nest_at_most_32_levels() -> None:
    assert grant_from_mapping(base(attributes=nested(32))).attributes == nested(32)
    assert fields(grant_from_mapping, base(attributes=nested(33))) == ["attributes" + ".a" * 32]
    # Far deeper than Python's recursion limit: refused the same way, by a walk without recursion.
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    problem = refused(grant_from_mapping, base(attributes={"x": deep}))
    assert [e.field for e in problem] == ["attributes.x" + ".0" * 31]
    assert "at most 32 levels" in problem[0].message


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ({"n": 123456789012345678901234567890}, "attributes.n"),
        ({"n": 2**53}, "attributes.n"),
        ({"n": -(2**53)}, "attributes.n"),
        ({"n": [1, 2**64]}, "attributes.n.1"),
        ({"n": {"m": 1.2345678901234568e29}}, "attributes.n.m"),  # what a parser makes of the int
        ({"n": float("nan")}, "attributes.n"),
        ({"n": float("inf")}, "attributes.n"),
    ],
)
def test_attributes_numbers_stay_within_the_exact_json_range(
    attributes: dict[str, Any], field: str
) -> None:
    assert fields(grant_from_mapping, base(attributes=attributes)) == [field]


def test_attributes_numbers_at_the_edge_of_the_range_are_kept() -> None:
    edge = {"max": 2**53 - 1, "min": -(2**53 - 1), "f": 9007199254740991.0, "x": 1.5e-300}
    assert grant_from_mapping(base(attributes=edge)).attributes == edge


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ({"q": "a\x00b"}, "attributes.q"),
        ({"a\x00b": 1}, "attributes.a\\x00b"),  # the key is shown escaped
        ({"q": ["ok", {"r": "\x00"}]}, "attributes.q.1.r"),
        ({"q": "\ud800"}, "attributes.q"),
        ({"\udc00": "q"}, "attributes.\\udc00"),
    ],
)
def test_attributes_refuse_text_postgres_cannot_hold(
    attributes: dict[str, Any], field: str
) -> None:
    """Postgres text and jsonb cannot hold U+0000; a lone surrogate is not UTF-8."""
    problem = refused(grant_from_mapping, base(attributes=attributes))
    assert [e.field for e in problem] == [field]
    assert "\x00" not in problem[0].field + problem[0].message


def test_unknown_field_names_are_shown_escaped() -> None:
    problem = refused(grant_from_mapping, base(**{"colour\x00": "red"}))
    assert [e.field for e in problem] == ["colour\\x00"]
    problem = refused(resource_from_mapping, {"id": "track:1", "\x00": 1})
    assert [e.field for e in problem] == ["\\x00"]


@pytest.mark.parametrize(
    "subject", ["user:alice", "user:auth0|5f1a", "user:a:b", "role:plan:premium", "role:x", "*"]
)
def test_subject_forms(subject: str) -> None:
    assert grant_from_mapping(base(subject=subject)).subject == subject


@pytest.mark.parametrize(
    "subject",
    [
        "alice",
        "user:",
        "role:",
        "user:a b",
        "role:a b",
        "User:alice",
        "group:staff",
        "**",
        "* ",
        "",
        "user:" + "a" * 256,
        "role:" + "a" * 129,
        None,
        1,
        ["*"],
    ],
)
def test_other_subjects_are_refused(subject: object) -> None:
    assert fields(grant_from_mapping, base(subject=subject)) == ["subject"]


@pytest.mark.parametrize("gid", ["", "-x", "a b", "a" * 201, 5, None])
def test_bad_grant_ids_are_refused(gid: object) -> None:
    assert fields(grant_from_mapping, base(id=gid)) == ["id"]


def test_an_id_from_the_url_must_agree_with_the_body() -> None:
    assert grant_from_mapping(base(id=...), grant_id="deal-9").id == "deal-9"
    assert grant_from_mapping(base(id="deal-9"), grant_id="deal-9").id == "deal-9"
    assert fields(grant_from_mapping, base(id="deal-1"), grant_id="deal-9") == ["id"]


def test_a_grant_must_be_an_object() -> None:
    data: object
    for data in (None, [], "grant", 1):
        assert fields(grant_from_mapping, data) == [""]


def test_required_fields_are_all_named() -> None:
    assert fields(grant_from_mapping, {}) == ["id", "subject", "resource", "actions", "territories"]


def test_all_errors_are_reported_at_once() -> None:
    errs = refused(
        grant_from_mapping,
        {
            "id": "bad id",
            "subject": "group:x",
            "resource": "Track:1",
            "actions": ["Stream", "ok"],
            "territories": ["UK", "GB", "*"],
            "exclude_territories": ["EU"],
            "valid_from": "2026-02-01T00:00:00Z",
            "valid_until": "2026-01-01T00:00:00Z",
            "effect": "block",
            "attributes": [],
            "source": "",
            "colour": "red",
        },
    )
    assert sorted(e.field for e in errs) == sorted(
        [
            "colour",
            "id",
            "subject",
            "resource",
            "actions.0",
            "territories.0",
            "territories.2",
            "exclude_territories.0",
            "valid_until",
            "effect",
            "attributes",
            "source",
        ]
    )
    assert len(errs) == 12
    assert "(and 11 more)" in str(InvalidInputError(errs))


# --- ISO 3166-1 alpha-2: exactly the officially assigned codes ----------------------

# The 249 officially assigned codes (ISO 3166 Maintenance Agency), grouped by
# initial letter and written out independently of the module under test.
OFFICIAL = {
    "A": "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ",
    "B": "BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ",
    "C": "CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ",
    "D": "DE DJ DK DM DO DZ",
    "E": "EC EE EG EH ER ES ET",
    "F": "FI FJ FK FM FO FR",
    "G": "GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY",
    "H": "HK HM HN HR HT HU",
    "I": "ID IE IL IM IN IO IQ IR IS IT",
    "J": "JE JM JO JP",
    "K": "KE KG KH KI KM KN KP KR KW KY KZ",
    "L": "LA LB LC LI LK LR LS LT LU LV LY",
    "M": "MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ",
    "N": "NA NC NE NF NG NI NL NO NP NR NU NZ",
    "O": "OM",
    "P": "PA PE PF PG PH PK PL PM PN PR PS PT PW PY",
    "Q": "QA",
    "R": "RE RO RS RU RW",
    "S": "SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ",
    "T": "TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ",
    "U": "UA UG UM US UY UZ",
    "V": "VA VC VE VG VI VN VU",
    "W": "WF WS",
    "Y": "YE YT",
    "Z": "ZA ZM ZW",
}
# Per-letter counts as published, a check on the transcription above.
OFFICIAL_COUNTS = {
    "A": 16, "B": 21, "C": 19, "D": 6, "E": 7, "F": 6, "G": 19, "H": 6, "I": 10,
    "J": 4, "K": 11, "L": 11, "M": 23, "N": 12, "O": 1, "P": 14, "Q": 1, "R": 5,
    "S": 21, "T": 16, "U": 6, "V": 7, "W": 2, "Y": 2, "Z": 3,
}  # fmt: skip


def test_the_official_list_is_transcribed_correctly() -> None:
    for letter, codes in OFFICIAL.items():
        split = codes.split()
        assert len(split) == OFFICIAL_COUNTS[letter], letter
        assert all(c[0] == letter and len(c) == 2 and c.isupper() for c in split)
        assert len(set(split)) == len(split)
    assert sum(OFFICIAL_COUNTS.values()) == 249


def test_the_territory_set_is_exactly_the_assigned_iso_codes() -> None:
    official = {c for codes in OFFICIAL.values() for c in codes.split()}
    assert len(ISO_3166_ALPHA2) == 249
    assert set(ISO_3166_ALPHA2) - official == set()
    assert official - set(ISO_3166_ALPHA2) == set()


@pytest.mark.parametrize("code", ["GB", "US", "SS", "BQ", "CW", "SX", "AX", "BL", "MF", "PS", "TL"])
def test_assigned_codes_are_present(code: str) -> None:
    assert code in ISO_3166_ALPHA2
    assert is_territory(code)
    assert parse_territory(code) == code


@pytest.mark.parametrize(
    "code",
    [
        *("UK", "EU", "UN", "EZ"),  # reserved
        *("XK", "XX", "AA", "QM", "ZZ"),  # user-assigned
        *("AN", "YU", "CS", "TP", "ZR", "BU", "DD", "SU"),  # deleted
        *("gb", "us"),  # lowercase
    ],
)
def test_unassigned_codes_are_absent(code: str) -> None:
    assert code not in ISO_3166_ALPHA2
    assert not is_territory(code)
    assert fields(parse_territory, code) == ["territory"]
