"""Check evaluation: the rules of docs/design.md's Decision section, pure.

Given the grants that could matter (those on the resource or an ancestor, for
the caller's subjects), decide at one instant and find when that answer would
next change by time alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from entitlements.domain.decision import Decision, Reason
from entitlements.domain.grant import Grant


@dataclass(frozen=True, slots=True)
class Query:
    """What a check asks, with subjects already expanded.

    ``subjects`` holds ``user:<id>``, ``role:<r>`` for each token role, and ``*``;
    ``resources`` is the resource and all of its ancestors. ``too_deep``: the
    ancestors could not all be read (the graph above the resource is deeper than
    ``MAX_DEPTH``), so ``resources`` may lack one holding a deny.
    """

    subjects: frozenset[str]
    resources: frozenset[str]
    action: str
    territory: str
    at: datetime
    too_deep: bool = False


def subjects_for(user_id: str, roles: Iterable[str]) -> frozenset[str]:
    """The grant subjects a caller matches: itself, each of its roles, and ``*``."""
    return frozenset((f"user:{user_id}", "*", *(f"role:{r}" for r in roles)))


def relevant(grants: Iterable[Grant], query: Query) -> list[Grant]:
    """Grants that match the subject, resource and action (time and place aside)."""
    return [
        g
        for g in grants
        if query.action in g.actions
        and g.subject in query.subjects
        and g.resource in query.resources
    ]


def _decide(grants: Sequence[Grant], territory: str, at: datetime) -> tuple[Reason, Grant | None]:
    allow: Grant | None = None
    deny: Grant | None = None
    licensed_elsewhere = future_here = past_here = False
    for g in grants:
        here = g.covers(territory)
        if g.effect == "deny":
            # Pick the deny as allows are picked, so the answer never depends on row order.
            if here and g.active_at(at) and (deny is None or _lasts_longer(g, deny)):
                deny = g
            continue
        if not here:
            licensed_elsewhere = True
        elif g.active_at(at):
            if allow is None or _lasts_longer(g, allow):
                allow = g
        elif g.valid_from is not None and at < g.valid_from:
            future_here = True
        else:
            past_here = True
    if deny is not None:
        return "denied", deny
    if allow is not None:
        return "granted", allow
    # The most helpful "no": something licensed here is coming, or was here, or
    # the right exists only in other territories, or there is nothing at all.
    if future_here:
        return "not_yet_valid", None
    if past_here:
        return "expired", None
    if licensed_elsewhere:
        return "territory", None
    return "not_licensed", None


def _lasts_longer(a: Grant, b: Grant) -> bool:
    """Prefer the allow that stays valid longest, then the smallest id (stable answers)."""
    if a.valid_until != b.valid_until:
        if a.valid_until is None:
            return True
        if b.valid_until is None:
            return False
        return a.valid_until > b.valid_until
    return a.id < b.id


def decide(
    grants: Iterable[Grant], query: Query, revision: int, ancestors: tuple[str, ...] = ()
) -> Decision:
    """Evaluate a check exactly, including when the answer next changes (``ancestors``
    is carried into the decision as it is).

    The decision is piecewise constant between window boundaries (windows are
    half-open), so the first boundary after ``at`` where the outcome differs is
    the exact ``valid_until``.

    A query whose ancestors are incomplete (``too_deep``) fails closed: a deny on
    an ancestor that was not read must never be missed, so the answer is
    ``allowed: false, reason: "denied"`` with no grant (of the fixed reasons, the
    only one that claims nothing about licences, places or windows) and no
    ``valid_until`` (time alone does not change it; repairing the graph does).
    """
    if query.too_deep:
        return Decision(
            allowed=False,
            reason="denied",
            grant=None,
            valid_until=None,
            revision=revision,
            ancestors=ancestors,
        )
    matching = relevant(grants, query)
    reason, grant = _decide(matching, query.territory, query.at)
    boundaries = sorted(
        {
            t
            for g in matching
            for t in (g.valid_from, g.valid_until)
            if t is not None and t > query.at
        }
    )
    valid_until = None
    for t in boundaries:
        if _decide(matching, query.territory, t)[0] != reason:
            valid_until = t
            break
    return Decision(
        allowed=reason == "granted",
        reason=reason,
        grant=grant.id if grant is not None else None,
        valid_until=valid_until,
        revision=revision,
        attributes=grant.attributes if grant is not None and reason == "granted" else None,
        ancestors=ancestors,
    )
