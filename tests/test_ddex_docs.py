"""docs/ddex.md says what its example message licenses: every check in its table, asked here."""

from __future__ import annotations

import io
import re
from datetime import datetime
from pathlib import Path

import pytest

from entitlements.ddex import DdexMessage, read_message
from entitlements.domain.model import grant_from_mapping
from entitlements.domain.policy import Query, decide, subjects_for

DOC = (Path(__file__).parent.parent / "docs" / "ddex.md").read_text(encoding="utf-8")


def example() -> DdexMessage:
    (xml,) = re.findall(r"```xml\n(.*?)```", DOC, re.S)
    return read_message(io.BytesIO(xml.encode()), name="single.xml")


def checks() -> list[tuple[str, str, str, str, str, str]]:
    table = DOC.split("<!-- checks -->")[1].split("<!-- /checks -->")[0]
    rows = [line for line in table.strip().splitlines()[2:] if line.startswith("|")]
    out = []
    for row in rows:
        cells = [c.strip().strip("`") for c in row.strip("|").split("|")]
        assert len(cells) == 6, row
        out.append((cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]))
    return out


def test_the_example_maps_to_the_grants_the_doc_shows() -> None:
    message = example()
    rows = sorted(
        (
            g["subject"],
            g["resource"],
            g["actions"],
            g["territories"],
            g.get("exclude_territories"),
            g.get("valid_from"),
            g.get("valid_until"),
        )
        for r in message.releases
        for g in r.grants
    )
    assert rows == [
        (
            "role:ddex:AdvertisementSupportedModel",
            "release:0602527894567",
            ["stream"],
            ["*"],
            ["DE"],
            "2026-03-06T00:00:00Z",
            "2027-01-01T00:00:00Z",
        ),
        (
            "role:ddex:PayAsYouGoModel",
            "track:USRC17607839",
            ["download"],
            ["GB", "IE"],
            None,
            "2026-03-06T00:00:00Z",
            None,
        ),
        (
            "role:ddex:SubscriptionModel",
            "release:0602527894567",
            ["offline", "stream"],
            ["*"],
            None,
            "2026-03-06T00:00:00Z",
            None,
        ),
    ]
    single = message.releases[0]
    assert single.tracks == ("track:USRC17607839",)


@pytest.mark.parametrize(("roles", "resource", "action", "territory", "at", "answer"), checks())
def test_each_check_in_the_doc(
    roles: str, resource: str, action: str, territory: str, at: str, answer: str
) -> None:
    message = example()
    parents: dict[str, set[str]] = {}
    for release in message.releases:
        for track in release.tracks:
            assert release.resource is not None
            parents.setdefault(track, set()).add(release.resource)
    grants = [grant_from_mapping(g) for r in message.releases for g in r.grants]
    resources = frozenset({resource, *parents.get(resource, set())})
    when = datetime.fromisoformat(at.replace("Z", "+00:00"))
    query = Query(subjects_for("alice", roles.split(",")), resources, action, territory, when)
    assert decide(grants, query, 1).reason == answer


def test_the_doc_has_checks_of_every_kind() -> None:
    answers = {row[-1] for row in checks()}
    assert answers == {"granted", "not_yet_valid", "expired", "territory", "not_licensed"}
