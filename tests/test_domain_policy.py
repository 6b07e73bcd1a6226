"""The Decision rules of docs/design.md, one by one, on the pure ``decide``.

No server: grants are built in memory and the caller's subjects and the
resource's ancestors are expanded here, as the service does before it asks
the policy. Every instant is explicit, so window boundaries are hit exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from entitlements.domain import Decision, Grant, Query, Resource, decide, subjects_for

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
US = timedelta(microseconds=1)

# A tiny catalogue: a track on two releases, each under its own label.
CATALOGUE = {
    r.id: r
    for r in (
        Resource("label:acme"),
        Resource("label:indie"),
        Resource("release:r1", ("label:acme",)),
        Resource("release:r2", ("label:indie",)),
        Resource("release:other", ("label:acme",)),
        Resource("track:t1", ("release:r1", "release:r2")),
        Resource("track:t2", ("release:other",)),
    )
}


def lineage(resource: str) -> frozenset[str]:
    """The resource and every ancestor (what the store hands the policy)."""
    seen: set[str] = set()
    todo = [resource]
    while todo:
        rid = todo.pop()
        if rid in seen:
            continue
        seen.add(rid)
        known = CATALOGUE.get(rid)
        if known is not None:
            todo.extend(known.parents)
    return frozenset(seen)


def grant(
    gid: str,
    *,
    resource: str = "track:t1",
    subject: str = "*",
    actions: Iterable[str] = ("stream",),
    territories: Iterable[str] = ("*",),
    exclude: Iterable[str] = (),
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
    effect: str = "allow",
    attributes: Mapping[str, Any] | None = None,
) -> Grant:
    return Grant(
        id=gid,
        subject=subject,
        resource=resource,
        actions=frozenset(actions),
        territories=frozenset(territories),
        exclude_territories=frozenset(exclude),
        valid_from=valid_from,
        valid_until=valid_until,
        effect=effect,  # type: ignore[arg-type]
        attributes=attributes,
    )


def check(
    grants: Iterable[Grant],
    *,
    user: str = "alice",
    roles: Iterable[str] = (),
    resource: str = "track:t1",
    action: str = "stream",
    territory: str = "GB",
    at: datetime = NOW,
    revision: int = 7,
) -> Decision:
    query = Query(
        subjects=subjects_for(user, roles),
        resources=lineage(resource),
        action=action,
        territory=territory,
        at=at,
    )
    return decide(list(grants), query, revision)


def outcome(d: Decision) -> tuple[bool, str]:
    return d.allowed, d.reason


# --- deny over allow ----------------------------------------------------------


def test_a_matching_deny_beats_any_number_of_allows() -> None:
    allows = [grant(f"allow-{i}") for i in range(10)]
    takedown = grant("takedown", effect="deny")
    for grants in ([*allows, takedown], [takedown, *allows], [*allows[:5], takedown, *allows[5:]]):
        d = check(grants)
        assert outcome(d) == (False, "denied")
        assert d.attributes is None


def test_denied_decision_names_the_deny_grant() -> None:
    # docs/design.md only fixes ``grant`` for an allow; the policy names the takedown.
    d = check([grant("a"), grant("takedown", effect="deny")])
    assert d.grant == "takedown"


def test_the_named_deny_does_not_depend_on_the_order_of_grants() -> None:
    # The store returns rows in no promised order; a cached and an uncached
    # answer must be the same decision, field for field.
    denies = [
        grant("takedown-a", effect="deny"),
        grant("takedown-b", effect="deny", resource="label:acme"),
        grant("takedown-c", effect="deny", valid_until=X),
    ]
    answers = {
        check([grant("a"), *order]).grant
        for order in (denies, denies[::-1], denies[1:] + denies[:1])
    }
    assert len(answers) == 1, answers
    assert answers <= {"takedown-a", "takedown-b", "takedown-c"}


def test_a_deny_in_another_territory_does_not_deny() -> None:
    d = check([grant("a"), grant("d", effect="deny", territories=["DE"])], territory="GB")
    assert outcome(d) == (True, "granted")
    assert d.grant == "a"
    d = check([grant("a"), grant("d", effect="deny", territories=["DE"])], territory="DE")
    assert outcome(d) == (False, "denied")


def test_a_worldwide_deny_with_an_exclusion_does_not_deny_the_excluded_territory() -> None:
    grants = [grant("a"), grant("d", effect="deny", exclude=["GB"])]
    assert outcome(check(grants, territory="GB")) == (True, "granted")
    assert outcome(check(grants, territory="DE")) == (False, "denied")


def test_a_deny_outside_its_window_does_not_deny() -> None:
    past = grant("d-past", effect="deny", valid_from=NOW - DAY, valid_until=NOW)
    future = grant("d-future", effect="deny", valid_from=NOW + US)
    d = check([grant("a"), past, future])
    assert outcome(d) == (True, "granted")
    assert d.valid_until == NOW + US


def test_a_deny_for_another_subject_or_action_does_not_deny() -> None:
    grants = [
        grant("a"),
        grant("d-bob", effect="deny", subject="user:bob"),
        grant("d-role", effect="deny", subject="role:free"),
        grant("d-dl", effect="deny", actions=["download"]),
    ]
    d = check(grants, user="alice", roles=["premium"])
    assert outcome(d) == (True, "granted")
    assert d.valid_until is None


def test_a_deny_on_an_ancestor_denies_the_descendant() -> None:
    grants = [grant("a", resource="track:t1"), grant("d", resource="label:indie", effect="deny")]
    assert outcome(check(grants, resource="track:t1")) == (False, "denied")


def test_a_deny_alone_is_denied_not_not_licensed() -> None:
    assert outcome(check([grant("d", effect="deny")])) == (False, "denied")


# --- grants through ancestors -------------------------------------------------


def test_a_grant_on_a_label_applies_to_a_track_through_its_release() -> None:
    d = check([grant("lbl", resource="label:acme")], resource="track:t1")
    assert outcome(d) == (True, "granted")
    assert d.grant == "lbl"
    d = check([grant("lbl", resource="label:acme")], resource="release:r1")
    assert outcome(d) == (True, "granted")


def test_a_track_on_two_releases_gets_the_grants_of_both_labels() -> None:
    grants = [
        grant("acme-stream", resource="label:acme", actions=["stream"]),
        grant("indie-download", resource="label:indie", actions=["download"]),
    ]
    stream = check(grants, resource="track:t1", action="stream")
    download = check(grants, resource="track:t1", action="download")
    assert (outcome(stream), stream.grant) == ((True, "granted"), "acme-stream")
    assert (outcome(download), download.grant) == ((True, "granted"), "indie-download")
    # Each release only sees its own label.
    assert outcome(check(grants, resource="release:r1", action="download")) == (
        False,
        "not_licensed",
    )
    assert outcome(check(grants, resource="release:r2", action="stream")) == (
        False,
        "not_licensed",
    )


def test_a_deny_on_one_of_two_releases_still_denies_the_track() -> None:
    grants = [
        grant("acme", resource="label:acme"),
        grant("r1", resource="release:r1"),
        grant("takedown-r2", resource="release:r2", effect="deny"),
    ]
    assert outcome(check(grants, resource="track:t1")) == (False, "denied")
    # The release that is not taken down keeps its rights.
    assert outcome(check(grants, resource="release:r1")) == (True, "granted")


def test_grants_do_not_flow_up_or_sideways() -> None:
    on_track = [grant("t1", resource="track:t1")]
    assert outcome(check(on_track, resource="release:r1")) == (False, "not_licensed")
    assert outcome(check(on_track, resource="track:t2")) == (False, "not_licensed")
    # A sibling release under the same label: its grant does not reach t1.
    sibling = [grant("other", resource="release:other")]
    assert outcome(check(sibling, resource="track:t1")) == (False, "not_licensed")
    assert outcome(check(sibling, resource="track:t2")) == (True, "granted")


# --- subjects -----------------------------------------------------------------


def test_subjects_for_expands_user_roles_and_everyone() -> None:
    assert subjects_for("alice", ["plan:premium", "staff"]) == {
        "user:alice",
        "role:plan:premium",
        "role:staff",
        "*",
    }
    assert subjects_for("alice", []) == {"user:alice", "*"}


def test_a_user_grant_applies_to_that_user_only() -> None:
    grants = [grant("g", subject="user:alice")]
    assert outcome(check(grants, user="alice")) == (True, "granted")
    assert outcome(check(grants, user="bob")) == (False, "not_licensed")
    assert outcome(check(grants, user="alice2")) == (False, "not_licensed")
    assert outcome(check(grants, user="Alice")) == (False, "not_licensed")


def test_a_user_grant_is_not_matched_by_a_role_of_the_same_name() -> None:
    assert outcome(check([grant("g", subject="user:alice")], user="bob", roles=["alice"])) == (
        False,
        "not_licensed",
    )
    assert outcome(check([grant("g", subject="role:alice")], user="alice")) == (
        False,
        "not_licensed",
    )


@pytest.mark.parametrize(
    ("roles", "allowed"),
    [
        (["plan:premium"], True),
        (["free", "plan:premium"], True),
        (["plan:Premium"], False),
        (["plan:premium2"], False),
        (["plan:prem"], False),
        (["premium"], False),
        (["plan"], False),
        ([], False),
    ],
)
def test_role_matching_is_exact(roles: list[str], allowed: bool) -> None:
    d = check([grant("g", subject="role:plan:premium")], roles=roles)
    assert d.allowed is allowed
    assert d.reason == ("granted" if allowed else "not_licensed")


def test_star_applies_to_any_caller() -> None:
    grants = [grant("g", subject="*")]
    for user, roles in (("alice", []), ("bob", ["x"]), ("svc-1", ["a", "b"])):
        assert outcome(check(grants, user=user, roles=roles)) == (True, "granted")


# --- actions ------------------------------------------------------------------


def test_the_action_must_be_listed() -> None:
    grants = [grant("g", actions=["stream", "preview"])]
    assert outcome(check(grants, action="stream")) == (True, "granted")
    assert outcome(check(grants, action="preview")) == (True, "granted")
    assert outcome(check(grants, action="download")) == (False, "not_licensed")
    assert outcome(check(grants, action="streaming")) == (False, "not_licensed")
    assert outcome(check(grants, action="stream.hq")) == (False, "not_licensed")


# --- territories --------------------------------------------------------------


def test_worldwide_minus_exclusions() -> None:
    grants = [grant("ww", territories=["*"], exclude=["DE", "FR"])]
    assert outcome(check(grants, territory="GB")) == (True, "granted")
    assert outcome(check(grants, territory="US")) == (True, "granted")
    assert outcome(check(grants, territory="DE")) == (False, "territory")
    assert outcome(check(grants, territory="FR")) == (False, "territory")


def test_listed_codes_only() -> None:
    grants = [grant("uk-ie", territories=["GB", "IE"])]
    assert outcome(check(grants, territory="IE")) == (True, "granted")
    d = check(grants, territory="US")
    assert outcome(d) == (False, "territory")
    assert d.grant is None
    assert d.valid_until is None


def test_another_territorys_grant_adds_to_this_one() -> None:
    grants = [grant("gb", territories=["GB"]), grant("de", territories=["DE"])]
    assert check(grants, territory="GB").grant == "gb"
    assert check(grants, territory="DE").grant == "de"
    assert check(grants, territory="FR").reason == "territory"


# --- windows: half-open, exact to the microsecond -------------------------------


START = datetime(2026, 4, 1, tzinfo=UTC)
END = datetime(2026, 7, 1, tzinfo=UTC)
WINDOW = [grant("w", valid_from=START, valid_until=END)]


def test_at_valid_from_is_allowed() -> None:
    d = check(WINDOW, at=START)
    assert outcome(d) == (True, "granted")
    assert d.valid_until == END


def test_one_microsecond_before_valid_from_is_not_yet_valid() -> None:
    d = check(WINDOW, at=START - US)
    assert outcome(d) == (False, "not_yet_valid")
    assert d.valid_until == START
    assert d.grant is None


def test_at_valid_until_is_expired() -> None:
    d = check(WINDOW, at=END)
    assert outcome(d) == (False, "expired")
    assert d.valid_until is None


def test_one_microsecond_before_valid_until_is_allowed() -> None:
    d = check(WINDOW, at=END - US)
    assert outcome(d) == (True, "granted")
    assert d.valid_until == END


def test_windows_compare_instants_not_wall_clocks() -> None:
    # The same instant written in another offset is the same boundary.
    plus2 = START.astimezone(timezone(timedelta(hours=2)))
    assert plus2.hour == 2
    assert outcome(check(WINDOW, at=plus2)) == (True, "granted")
    assert outcome(check(WINDOW, at=plus2 - US)) == (False, "not_yet_valid")


def test_open_ended_windows() -> None:
    only_from = [grant("f", valid_from=START)]
    only_until = [grant("u", valid_until=END)]
    assert outcome(check(only_from, at=START - US)) == (False, "not_yet_valid")
    assert outcome(check(only_from, at=datetime(9999, 1, 1, tzinfo=UTC))) == (True, "granted")
    assert outcome(check(only_until, at=datetime(1, 1, 2, tzinfo=UTC))) == (True, "granted")
    assert outcome(check(only_until, at=END)) == (False, "expired")


# --- every reason, and which wins when several apply -----------------------------


def test_each_reason() -> None:
    assert outcome(check([grant("a")])) == (True, "granted")
    assert outcome(check([grant("a"), grant("d", effect="deny")])) == (False, "denied")
    assert outcome(check([grant("a", territories=["DE"])])) == (False, "territory")
    assert outcome(check([grant("a", valid_from=NOW + HOUR)])) == (False, "not_yet_valid")
    assert outcome(check([grant("a", valid_until=NOW)])) == (False, "expired")
    assert outcome(check([])) == (False, "not_licensed")
    assert outcome(check([grant("a", subject="user:bob")])) == (False, "not_licensed")


def test_granted_beats_every_other_no() -> None:
    grants = [
        grant("elsewhere", territories=["DE"]),
        grant("coming", valid_from=NOW + DAY),
        grant("gone", valid_until=NOW - DAY),
        grant("now"),
    ]
    d = check(grants)
    assert (outcome(d), d.grant) == ((True, "granted"), "now")


def test_denied_beats_every_other_no() -> None:
    grants = [
        grant("elsewhere", territories=["DE"]),
        grant("coming", valid_from=NOW + DAY),
        grant("gone", valid_until=NOW - DAY),
        grant("d", effect="deny"),
    ]
    assert outcome(check(grants)) == (False, "denied")


def test_not_yet_valid_beats_expired_here() -> None:
    # Licensed here before and again later: the useful answer is "coming back".
    grants = [grant("gone", valid_until=NOW - DAY), grant("coming", valid_from=NOW + DAY)]
    d = check(grants)
    assert outcome(d) == (False, "not_yet_valid")
    assert d.valid_until == NOW + DAY


def test_not_yet_valid_here_beats_territory() -> None:
    grants = [
        grant("de-now", territories=["DE"]),
        grant("gb-later", territories=["GB"], valid_from=NOW + DAY),
    ]
    assert outcome(check(grants, territory="GB")) == (False, "not_yet_valid")


def test_expired_here_beats_territory() -> None:
    grants = [
        grant("de-now", territories=["DE"]),
        grant("gb-gone", territories=["GB"], valid_until=NOW),
    ]
    d = check(grants, territory="GB")
    assert outcome(d) == (False, "expired")
    assert d.valid_until is None


def test_territory_beats_not_licensed() -> None:
    grants = [grant("bob", subject="user:bob"), grant("de", territories=["DE"])]
    assert outcome(check(grants, territory="GB")) == (False, "territory")


def test_territory_counts_an_allow_elsewhere_whatever_its_window() -> None:
    # The policy's choice: "territory" means the right exists, just not here;
    # an allow elsewhere that has expired or not started still counts.
    expired_elsewhere = [grant("de", territories=["DE"], valid_until=NOW - DAY)]
    future_elsewhere = [grant("de", territories=["DE"], valid_from=NOW + DAY)]
    for grants in (expired_elsewhere, future_elsewhere):
        d = check(grants, territory="GB")
        assert outcome(d) == (False, "territory")
        assert d.valid_until is None


def test_an_inactive_deny_is_no_licence() -> None:
    # A takedown that has ended, or one elsewhere, does not make a right exist.
    ended = grant("d", effect="deny", valid_until=NOW)
    elsewhere = grant("d2", effect="deny", territories=["DE"])
    d = check([ended, elsewhere], territory="GB")
    assert outcome(d) == (False, "not_licensed")
    assert d.grant is None
    assert d.valid_until is None


def test_a_future_deny_alone_changes_the_reason_when_it_starts() -> None:
    d = check([grant("d", effect="deny", valid_from=NOW + HOUR)])
    assert outcome(d) == (False, "not_licensed")
    assert d.valid_until == NOW + HOUR


# --- valid_until: the exact instant the decision changes -------------------------


X = NOW + 10 * DAY


def test_valid_until_is_the_end_of_the_allow() -> None:
    assert check([grant("a", valid_until=X)]).valid_until == X


def test_valid_until_follows_an_overlapping_allow() -> None:
    grants = [grant("a", valid_until=X), grant("b", valid_from=X - HOUR, valid_until=X + DAY)]
    d = check(grants)
    assert (d.allowed, d.grant, d.valid_until) == (True, "a", X + DAY)
    # From inside the overlap, too.
    d = check(grants, at=X - HOUR)
    assert (d.allowed, d.valid_until) == (True, X + DAY)


def test_valid_until_follows_back_to_back_allows() -> None:
    grants = [grant("a", valid_until=X), grant("b", valid_from=X, valid_until=X + DAY)]
    assert check(grants).valid_until == X + DAY


def test_valid_until_is_the_start_of_a_deny() -> None:
    grants = [grant("a"), grant("takedown", effect="deny", valid_from=X)]
    d = check(grants)
    assert (outcome(d), d.valid_until) == ((True, "granted"), X)
    assert outcome(check(grants, at=X)) == (False, "denied")


def test_valid_until_of_not_yet_valid_is_valid_from() -> None:
    d = check([grant("a", valid_from=X, valid_until=X + DAY)])
    assert (outcome(d), d.valid_until) == ((False, "not_yet_valid"), X)


def test_valid_until_is_none_without_a_change_ahead() -> None:
    assert check([grant("a")]).valid_until is None
    assert check([grant("a", valid_until=NOW)]).valid_until is None
    assert check([]).valid_until is None
    assert check([grant("d", effect="deny")]).valid_until is None


def test_a_boundary_that_changes_nothing_is_skipped() -> None:
    grants = [grant("forever"), grant("b", valid_from=NOW + HOUR, valid_until=X)]
    assert check(grants).valid_until is None
    grants = [grant("long", valid_until=X + DAY), grant("short", valid_until=X)]
    assert check(grants).valid_until == X + DAY


def test_valid_until_counts_a_change_of_reason_while_still_refused() -> None:
    # Denied until X, but the only allow ended earlier: at X the reason
    # becomes "expired". ``allowed`` stays false, yet the decision changes.
    grants = [grant("a", valid_until=NOW + HOUR), grant("d", effect="deny", valid_until=X)]
    d = check(grants)
    assert (outcome(d), d.valid_until) == ((False, "denied"), X)
    assert outcome(check(grants, at=X)) == (False, "expired")
    # Not yet valid until X, when the allow opens together with a deny.
    grants = [grant("a", valid_from=X), grant("d", effect="deny", valid_from=X)]
    d = check(grants)
    assert (outcome(d), d.valid_until) == ((False, "not_yet_valid"), X)


def test_valid_until_ignores_grants_that_do_not_match() -> None:
    grants = [
        grant("a"),
        grant("bob-deny", subject="user:bob", effect="deny", valid_from=NOW + HOUR),
        grant("dl-deny", actions=["download"], effect="deny", valid_from=NOW + HOUR),
        grant("de-deny", territories=["DE"], effect="deny", valid_from=NOW + HOUR),
        grant("other-deny", resource="track:t2", effect="deny", valid_from=NOW + HOUR),
    ]
    assert check(grants).valid_until is None


def test_valid_until_is_after_at() -> None:
    # A boundary exactly at ``at`` is already in effect; the next change is later.
    grants = [grant("a", valid_from=NOW, valid_until=X)]
    assert check(grants, at=NOW).valid_until == X


# --- grant, attributes, revision --------------------------------------------------


def test_grant_is_the_id_of_a_matching_allow() -> None:
    grants = [
        grant("bob", subject="user:bob"),
        grant("de", territories=["DE"]),
        grant("dl", actions=["download"]),
        grant("gone", valid_until=NOW),
        grant("mine", subject="user:alice"),
    ]
    assert check(grants).grant == "mine"


def test_of_several_allows_the_longest_lasting_is_named_whatever_the_order() -> None:
    grants = [grant("short", valid_until=X), grant("forever"), grant("mid", valid_until=X + DAY)]
    for order in (grants, grants[::-1], grants[1:] + grants[:1]):
        assert check(order).grant == "forever"
    tied = [grant("b", valid_until=X), grant("a", valid_until=X)]
    assert check(tied).grant == check(tied[::-1]).grant == "a"


def test_attributes_come_with_a_granted_decision() -> None:
    attrs = {"quality": "lossless", "model": "subscription"}
    d = check([grant("a", attributes=attrs)])
    assert d.attributes == attrs
    assert d.to_json()["attributes"] == attrs


def test_attributes_are_those_of_the_named_grant() -> None:
    grants = [
        grant("hq", attributes={"quality": "hq"}, valid_until=X),
        grant("lq", attributes={"quality": "lq"}),
    ]
    d = check(grants)
    assert (d.grant, d.attributes) == ("lq", {"quality": "lq"})


def test_no_attributes_without_a_grant() -> None:
    attrs = {"quality": "lossless"}
    denied = check([grant("a", attributes=attrs), grant("d", effect="deny", attributes=attrs)])
    assert denied.attributes is None
    assert check([grant("a", attributes=attrs, territories=["DE"])]).attributes is None
    assert check([grant("a", attributes=attrs, valid_until=NOW)]).attributes is None


@pytest.mark.parametrize("revision", [0, 1, 42, 2**62])
def test_revision_is_passed_through(revision: int) -> None:
    assert check([grant("a")], revision=revision).revision == revision
    assert check([], revision=revision).revision == revision
    assert check([grant("d", effect="deny")], revision=revision).revision == revision


def test_decision_json() -> None:
    d = check([grant("a", valid_until=X, attributes={"q": 1})], revision=9)
    assert d.to_json() == {
        "allowed": True,
        "reason": "granted",
        "grant": "a",
        "valid_until": "2026-03-11T12:00:00Z",
        "revision": 9,
        "attributes": {"q": 1},
        "ancestors": [],
    }


# --- any instant: a past contract-time question and a future one ----------------


def test_a_past_instant_is_answered_as_of_then() -> None:
    deal = [
        grant(
            "deal-2019",
            valid_from=datetime(2019, 1, 1, tzinfo=UTC),
            valid_until=datetime(2020, 1, 1, tzinfo=UTC),
        ),
        grant("takedown", effect="deny", valid_from=datetime(2019, 6, 1, tzinfo=UTC)),
    ]
    may = check(deal, at=datetime(2019, 5, 1, tzinfo=UTC))
    assert (outcome(may), may.grant) == ((True, "granted"), "deal-2019")
    assert may.valid_until == datetime(2019, 6, 1, tzinfo=UTC)
    assert outcome(check(deal, at=datetime(2019, 7, 1, tzinfo=UTC))) == (False, "denied")
    assert outcome(check(deal, at=datetime(2018, 7, 1, tzinfo=UTC))) == (False, "not_yet_valid")
    assert outcome(check(deal)) == (False, "denied")


def test_a_future_instant_is_answered_as_of_then() -> None:
    grants = [grant("now", valid_until=NOW + DAY), grant("renewal", valid_from=NOW + 30 * DAY)]
    assert outcome(check(grants)) == (True, "granted")
    gap = check(grants, at=NOW + 2 * DAY)
    assert (outcome(gap), gap.valid_until) == ((False, "not_yet_valid"), NOW + 30 * DAY)
    later = check(grants, at=NOW + 365 * DAY)
    assert (outcome(later), later.grant, later.valid_until) == ((True, "granted"), "renewal", None)
