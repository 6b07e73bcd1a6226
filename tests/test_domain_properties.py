"""Property tests: ``decide`` against a small oracle written from docs/design.md.

The oracle below is deliberately naive and shares no code with
``entitlements.domain.policy``: it re-reads the Decision rules literally, and
finds ``valid_until`` by brute force, evaluating itself at every instant of a
small pool that all windows are drawn from. Drawing the query instant from the
same pool means window boundaries are hit exactly, where half-open mistakes
live.

Where docs/design.md leaves the order of the refusal reasons to "the most helpful",
the oracle fixes it as: a licence here that is coming (``not_yet_valid``), one
here that has ended (``expired``), a licence that exists only for other
territories in any window (``territory``), nothing (``not_licensed``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from entitlements.domain import Decision, Grant, Query, decide, subjects_for

# --- the world the generator draws from ------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)
INSTANTS = [T0 + timedelta(hours=h) for h in (0, 1, 2, 5, 24)]
# Also ask between boundaries and one microsecond either side of one.
QUERY_INSTANTS = [
    *INSTANTS,
    T0 + timedelta(minutes=30),
    T0 + timedelta(hours=3),
    T0 + timedelta(hours=2) - timedelta(microseconds=1),
    T0 + timedelta(hours=2) + timedelta(microseconds=1),
    T0 - timedelta(days=1),
    T0 + timedelta(days=2),
]

# label:l <- release:r <- track:t, and release:x, a sibling under the same label.
PARENTS = {"track:t": ("release:r",), "release:r": ("label:l",), "release:x": ("label:l",)}
RESOURCES = ["track:t", "release:r", "label:l", "release:x"]
SUBJECTS = ["user:alice", "user:alice", "user:bob", "role:premium", "role:free", "*", "*"]
ACTIONS = ["stream", "download"]
CODES = ["GB", "DE", "FR"]


def ancestors_and_self(resource: str) -> frozenset[str]:
    out = {resource}
    frontier = [resource]
    while frontier:
        for parent in PARENTS.get(frontier.pop(), ()):
            if parent not in out:
                out.add(parent)
                frontier.append(parent)
    return frozenset(out)


def _ordered(
    pair: tuple[datetime | None, datetime | None],
) -> tuple[datetime | None, datetime | None]:
    """A non-empty window: swap an inverted pair, open-end an empty one."""
    start, end = pair
    if start is not None and end is not None and end <= start:
        return (end, start) if end < start else (start, None)
    return start, end


# Strategies are built once: building them inside a composite costs more than
# the whole evaluation.
_instant_or_none = st.sampled_from([None, *INSTANTS])
_windows = st.tuples(_instant_or_none, _instant_or_none).map(_ordered)
_territories = st.one_of(
    st.just(frozenset({"*"})),
    st.frozensets(st.sampled_from(CODES), min_size=1, max_size=2),
)
_grant_fields = st.tuples(
    st.sampled_from(SUBJECTS),
    st.sampled_from(RESOURCES),
    st.frozensets(st.sampled_from(ACTIONS), min_size=1),
    _territories,
    st.frozensets(st.sampled_from(CODES), max_size=2),
    _windows,
    st.sampled_from(["allow", "allow", "deny"]),
    st.booleans(),
)


def _grant(i: int, fields: tuple[Any, ...]) -> Grant:
    subject, resource, actions, territories, excludes, (start, end), effect, with_attrs = fields
    gid = f"g{i}"
    return Grant(
        id=gid,
        subject=subject,
        resource=resource,
        actions=actions,
        territories=territories,
        exclude_territories=excludes,
        valid_from=start,
        valid_until=end,
        effect=effect,
        attributes={"gid": gid} if with_attrs else None,
    )


grant_sets = st.lists(_grant_fields, min_size=1, max_size=8).map(
    lambda rows: [_grant(i, row) for i, row in enumerate(rows)]
)

# Only time and effect vary, every grant bears on the question: overlapping,
# abutting, ended and coming windows meet far more often than above.
_timed_fields = st.tuples(
    st.just("*"),
    st.just("track:t"),
    st.just(frozenset({"stream"})),
    st.sampled_from([frozenset({"*"}), frozenset({"GB"}), frozenset({"DE"})]),
    st.just(frozenset()),
    _windows,
    st.sampled_from(["allow", "allow", "allow", "deny"]),
    st.booleans(),
)
timed_grant_sets = st.lists(_timed_fields, min_size=1, max_size=6).map(
    lambda rows: [_grant(i, row) for i, row in enumerate(rows)]
)


@dataclass(frozen=True)
class Ask:
    user: str
    roles: tuple[str, ...]
    resource: str
    action: str
    territory: str
    at: datetime


asks = st.builds(
    Ask,
    # Weighted towards alice on the track, so most grants bear on the question.
    user=st.sampled_from(["alice", "alice", "bob", "carol"]),
    roles=st.lists(st.sampled_from(["premium", "free"]), max_size=2, unique=True).map(tuple),
    resource=st.sampled_from(["track:t", "track:t", "release:r", "label:l"]),
    action=st.sampled_from(ACTIONS),
    territory=st.sampled_from(CODES),
    at=st.sampled_from(QUERY_INSTANTS),
)

# The question the time-only grant sets all bear on.
timed_asks = st.sampled_from(QUERY_INSTANTS).map(
    lambda at: Ask("alice", (), "track:t", "stream", "GB", at)
)


# --- the oracle, from docs/design.md's words ---------------------------------------------------


def applies_to(g: Grant, ask: Ask) -> bool:
    """Subject is the user, one of the token's roles, or '*'; resource or an ancestor; action listed."""
    subject_ok = (
        g.subject == "*"
        or g.subject == "user:" + ask.user
        or any(g.subject == "role:" + r for r in ask.roles)
    )
    return subject_ok and g.resource in ancestors_and_self(ask.resource) and ask.action in g.actions


def in_set(g: Grant, territory: str) -> bool:
    """Territory in the set: the listed codes, or worldwide, minus the exclusions."""
    listed = "*" in g.territories or territory in g.territories
    return listed and territory not in g.exclude_territories


def in_window(g: Grant, t: datetime) -> bool:
    """Half-open [valid_from, valid_until)."""
    after_start = g.valid_from is None or g.valid_from <= t
    before_end = g.valid_until is None or t < g.valid_until
    return after_start and before_end


def oracle_at(gs: list[Grant], ask: Ask, t: datetime) -> tuple[bool, str, set[str]]:
    """(allowed, reason, ids of the allows that match) at instant ``t``."""
    mine = [g for g in gs if applies_to(g, ask)]
    matching = [g for g in mine if in_set(g, ask.territory) and in_window(g, t)]
    if any(g.effect == "deny" for g in matching):
        return False, "denied", set()
    allows = {g.id for g in matching if g.effect == "allow"}
    if allows:
        return True, "granted", allows
    licences = [g for g in mine if g.effect == "allow"]
    here = [g for g in licences if in_set(g, ask.territory)]
    if any(g.valid_from is not None and t < g.valid_from for g in here):
        return False, "not_yet_valid", set()
    if here:  # every licence here is outside its window and none is ahead: ended
        return False, "expired", set()
    if licences:
        return False, "territory", set()
    return False, "not_licensed", set()


def oracle_valid_until(gs: list[Grant], ask: Ask) -> datetime | None:
    now = oracle_at(gs, ask, ask.at)[:2]
    for t in sorted(i for i in INSTANTS if i > ask.at):
        if oracle_at(gs, ask, t)[:2] != now:
            return t
    return None


def run(gs: list[Grant], ask: Ask, revision: int = 1) -> Decision:
    query = Query(
        subjects=subjects_for(ask.user, ask.roles),
        resources=ancestors_and_self(ask.resource),
        action=ask.action,
        territory=ask.territory,
        at=ask.at,
    )
    return decide(gs, query, revision)


# --- properties ---------------------------------------------------------------------------

PROPS = settings(max_examples=300, deadline=None)


@PROPS
@given(gs=grant_sets, ask=asks, revision=st.integers(min_value=0, max_value=2**63 - 1))
def test_decide_agrees_with_the_oracle(gs: list[Grant], ask: Ask, revision: int) -> None:
    allowed, reason, allow_ids = oracle_at(gs, ask, ask.at)
    d = run(gs, ask, revision)
    assert (d.allowed, d.reason) == (allowed, reason)
    assert d.valid_until == oracle_valid_until(gs, ask)
    assert d.revision == revision
    if allowed:
        assert d.grant in allow_ids


@PROPS
@given(gs=timed_grant_sets, ask=timed_asks)
def test_windows_agree_with_the_oracle(gs: list[Grant], ask: Ask) -> None:
    at = ask.at
    allowed, reason, allow_ids = oracle_at(gs, ask, at)
    d = run(gs, ask)
    assert (d.allowed, d.reason) == (allowed, reason)
    assert d.valid_until == oracle_valid_until(gs, ask)
    if allowed:
        assert d.grant in allow_ids


@PROPS
@given(gs=grant_sets, ask=asks)
def test_an_allow_names_a_covering_allow_grant(gs: list[Grant], ask: Ask) -> None:
    d = run(gs, ask)
    if not d.allowed:
        return
    assert d.reason == "granted"
    named = {g.id: g for g in gs}[d.grant]  # type: ignore[index]
    assert named.effect == "allow"
    assert applies_to(named, ask)
    assert in_set(named, ask.territory)
    assert in_window(named, ask.at)
    assert d.attributes == named.attributes


@PROPS
@given(gs=grant_sets, ask=asks)
def test_a_matching_deny_always_denies(gs: list[Grant], ask: Ask) -> None:
    d = run(gs, ask)
    deny_matches = any(
        g.effect == "deny"
        and applies_to(g, ask)
        and in_set(g, ask.territory)
        and in_window(g, ask.at)
        for g in gs
    )
    assert (d.reason == "denied") is deny_matches
    if deny_matches:
        assert d.allowed is False
        assert d.attributes is None


@PROPS
@given(gs=grant_sets, ask=asks, later=st.sampled_from(QUERY_INSTANTS))
def test_the_decision_holds_until_valid_until(gs: list[Grant], ask: Ask, later: datetime) -> None:
    d = run(gs, ask)
    end = d.valid_until
    assert end is None or end > ask.at
    if later < ask.at:
        return
    e = run(gs, Ask(ask.user, ask.roles, ask.resource, ask.action, ask.territory, later))
    if end is None or later < end:
        assert (e.allowed, e.reason) == (d.allowed, d.reason)
    elif later == end:
        assert (e.allowed, e.reason) != (d.allowed, d.reason)


def same_decision_in_any_order_and_with_noise(
    gs: list[Grant], ask: Ask, order: random.Random
) -> None:
    noise = [
        Grant(
            id=f"noise-{i}",
            subject="user:mallory",
            resource=g.resource,
            actions=g.actions,
            territories=g.territories,
            exclude_territories=g.exclude_territories,
            valid_from=g.valid_from,
            valid_until=g.valid_until,
            effect=g.effect,
        )
        for i, g in enumerate(gs)
    ]
    shuffled = gs + noise
    order.shuffle(shuffled)
    assert run(shuffled, ask) == run(gs, ask)
    assert run(gs[::-1], ask) == run(gs, ask)


# The store returns rows in no promised order and a cache may hold a superset,
# so every field of the decision, ``grant`` included, must depend on neither.


@PROPS
@given(gs=grant_sets, ask=asks, order=st.randoms(use_true_random=False))
def test_order_and_irrelevant_grants_change_nothing(
    gs: list[Grant], ask: Ask, order: random.Random
) -> None:
    same_decision_in_any_order_and_with_noise(gs, ask, order)


@PROPS
@given(gs=timed_grant_sets, ask=timed_asks, order=st.randoms(use_true_random=False))
def test_order_changes_nothing_when_many_grants_match(
    gs: list[Grant], ask: Ask, order: random.Random
) -> None:
    same_decision_in_any_order_and_with_noise(gs, ask, order)
