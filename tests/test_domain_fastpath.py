"""The validator's fast path accepts only what the full validator accepts, and the same way."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entitlements.domain.model import (
    _fast_grant,
    _fast_row,
    _grant_from_mapping,
    grant_row,
    grant_row_from_mapping,
)
from entitlements.errors import InvalidInputError

# Values near the edges of every rule: valid ones, wrong types, wrong shapes.
ANY_JUNK = st.one_of(st.none(), st.integers(), st.booleans(), st.floats(), st.text(max_size=5))

# Attributes near their edges: NUL and lone surrogates in keys and strings, numbers
# either side of ±(2^53 - 1), NaN and infinities, nesting.
SAFE = 2**53 - 1
JSON_TEXT = st.text(alphabet=st.sampled_from(["a", "b", "é", "\x00", "\ud800"]), max_size=3)
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([SAFE, -SAFE, SAFE + 1, -SAFE - 1, 2**64]),
    st.floats(),
    st.sampled_from([1e16, 9007199254740991.0, 9007199254740992.0, 1.2345678901234568e29]),
    JSON_TEXT,
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(JSON_TEXT, inner, max_size=3)
    ),
    max_leaves=8,
)
ATTRIBUTES = st.dictionaries(JSON_TEXT, JSON_VALUES, max_size=3)


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


FIELDS: dict[str, Any] = {
    "id": st.one_of(st.sampled_from(["g1", "a/b:c", "", " g", "x" * 201, "é"]), ANY_JUNK),
    "subject": st.one_of(
        st.sampled_from(
            ["*", "user:u1", "role:plan:premium", "user:", "role:a b", "group:x", "**"]
        ),
        ANY_JUNK,
    ),
    "resource": st.one_of(
        st.sampled_from(["track:1", "label:acme", "Track:1", "track:", "t" * 250, "track:a b"]),
        ANY_JUNK,
    ),
    "actions": st.one_of(
        st.lists(st.sampled_from(["stream", "download", "Stream", "", 3]), max_size=4),
        st.tuples(st.just("stream")),
        ANY_JUNK,
    ),
    "territories": st.one_of(
        st.lists(st.sampled_from(["GB", "US", "*", "UK", "gb", "", 1]), max_size=3),
        st.just(["*"]),
        st.just(("*",)),
        ANY_JUNK,
    ),
    "exclude_territories": st.one_of(
        st.lists(st.sampled_from(["DE", "FR", "*", "XX"]), max_size=2), ANY_JUNK
    ),
    "valid_from": st.one_of(
        st.sampled_from(["2026-01-01T00:00:00Z", "2026-02-01T00:00:00+01:00", "2026-01-01", "x"]),
        ANY_JUNK,
    ),
    "valid_until": st.one_of(
        st.sampled_from(
            ["2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z", "0001-01-01T00:00:00+01:00"]
        ),
        ANY_JUNK,
    ),
    "effect": st.one_of(st.sampled_from(["allow", "deny", "Allow", ""]), ANY_JUNK),
    "attributes": st.one_of(
        st.just({"q": "hi"}),
        st.just({"big": "x" * 5000}),
        st.just([1]),
        ANY_JUNK,
        ATTRIBUTES,
        st.sampled_from([nested(32), nested(33), {"deep": nested(40)}]),
    ),
    "source": st.one_of(st.sampled_from(["feed-1", "", "a b"]), ANY_JUNK),
    "colour": st.just("red"),
}
REQUIRED = ("id", "subject", "resource", "actions", "territories")


VALID: dict[str, Any] = {
    "id": st.sampled_from(["g1", "a/b:c"]),
    "subject": st.sampled_from(["*", "user:u1", "role:plan:premium"]),
    "resource": st.sampled_from(["track:1", "label:acme"]),
    "actions": st.lists(st.sampled_from(["stream", "download"]), min_size=1, max_size=3),
    "territories": st.one_of(st.just(["*"]), st.lists(st.sampled_from(["GB", "US"]), min_size=1)),
    "exclude_territories": st.lists(st.sampled_from(["DE", "FR"]), max_size=2),
    "valid_from": st.sampled_from(["2026-01-01T00:00:00Z", "2026-02-01T00:00:00+01:00"]),
    "valid_until": st.sampled_from(["2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z"]),
    "effect": st.sampled_from(["allow", "deny"]),
    "attributes": st.just({"q": "hi"}),
    "source": st.just("feed-1"),
}


@st.composite
def grants(draw: st.DrawFn) -> dict[str, Any]:
    present = draw(st.sets(st.sampled_from(sorted(FIELDS))))
    # Most rows should be valid or nearly so, or the fast path is never exercised:
    # usually the required fields, and each field usually a valid value.
    if draw(st.integers(0, 3)):
        present |= set(REQUIRED)
    return {
        name: draw(VALID[name] if name in VALID and draw(st.integers(0, 4)) else FIELDS[name])
        for name in present
    }


@settings(max_examples=3000, deadline=None)
@given(data=grants(), url_id=st.sampled_from([None, "g1", "other"]))
def test_fast_path_agrees_with_the_full_validator(data: dict[str, Any], url_id: str | None) -> None:
    fast = _fast_grant(data, url_id)
    row = _fast_row(data, url_id)
    try:
        full = _grant_from_mapping(data, grant_id=url_id)
    except InvalidInputError:
        assert fast is None and row is None, data
        return
    assert fast is None or fast == full, (data, fast, full)
    # The row the import stages is the normal form the store keeps of the same grant.
    assert row is None or row == grant_row(full), (data, row, full)


@settings(max_examples=1000, deadline=None)
@given(data=grants())
def test_import_row_is_the_api_grant_row(data: dict[str, Any]) -> None:
    """Bulk import's entry point accepts, refuses and normalises exactly as the API does."""
    try:
        full = _grant_from_mapping(data)
    except InvalidInputError as exc:
        try:
            grant_row_from_mapping(data)
        except InvalidInputError as same:
            assert same.errors == exc.errors
        else:
            raise AssertionError(f"the import accepted what the API refuses: {data}") from None
        return
    assert grant_row_from_mapping(data) == grant_row(full)


@settings(max_examples=1500, deadline=None)
@given(attributes=st.one_of(ATTRIBUTES, st.dictionaries(st.just("x"), JSON_VALUES, max_size=1)))
def test_fast_path_agrees_on_attributes(attributes: dict[str, Any]) -> None:
    """A valid grant but for its attributes: the fast path's quick proof that they are
    plain JSON never accepts what the full validator's walk refuses."""
    data = {
        "id": "g1",
        "subject": "user:u1",
        "resource": "track:1",
        "actions": ["stream"],
        "territories": ["*"],
        "attributes": attributes,
    }
    row = _fast_row(data, None)
    try:
        full = _grant_from_mapping(data)
    except InvalidInputError:
        assert row is None, attributes
        return
    assert row is None or row == grant_row(full), (attributes, row, full)


def test_fast_path_takes_an_ordinary_feed_row() -> None:
    row = {
        "id": "g-1",
        "subject": "user:u1",
        "resource": "track:USRC17600123",
        "actions": ["stream", "download"],
        "territories": ["GB", "US"],
        "exclude_territories": [],
        "valid_from": "2026-01-01T00:00:00Z",
        "attributes": {"model": "purchase"},
        "source": "feed",
    }
    fast = _fast_grant(row, None)
    assert fast is not None and fast == _grant_from_mapping(row)
    assert _fast_row(row, None) == grant_row(fast)
    fast_row = _fast_row(row, None)
    assert fast_row is not None and fast_row[3:6] == (("download", "stream"), ("GB", "US"), ())


COPY_SPECIALS = st.sampled_from(["\t", "\n", "\r", "\\", "\x00"])


@settings(max_examples=500, deadline=None)
@given(
    field=st.sampled_from(["id", "subject", "resource", "source", "actions"]),
    before=st.text(alphabet="abc:", max_size=4),
    special=COPY_SPECIALS,
    after=st.text(alphabet="abc", max_size=4),
)
def test_identifiers_never_hold_what_copy_text_would_have_to_escape(
    field: str, before: str, special: str, after: str
) -> None:
    """The import writes ids, subjects, resources, sources and actions into COPY text
    unescaped (entitlements.store.import_rows.copy_text): the validator must refuse
    tabs, line breaks, backslashes and NULs in all of them."""
    row = {
        "id": "g1",
        "subject": "user:u1",
        "resource": "track:t1",
        "actions": ["stream"],
        "territories": ["GB"],
        "source": "feed",
    }
    value = before + special + after
    bad = {**row, field: [value] if field == "actions" else value}
    for prefix in ("", "user:", "track:"):
        if field in ("subject", "resource"):
            bad[field] = prefix + value
        with pytest.raises(InvalidInputError):
            grant_row_from_mapping(bad)
