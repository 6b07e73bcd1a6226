"""Every Decision rule, end to end: REST API → service → real Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from support import Api

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@pytest.fixture
async def catalogue(api: Api) -> Api:
    """label:acme ← release:r1 ← track:t1 → release:r2 → label:indigo (t1 is on two releases)."""
    await api.put_resource("release:r1", ["label:acme"])
    await api.put_resource("release:r2", ["label:indigo"])
    await api.put_resource("track:t1", ["release:r1", "release:r2"])
    await api.put_resource("track:t2", ["release:r1"])
    return api


async def test_grant_on_label_applies_to_track_through_release(catalogue: Api) -> None:
    api = catalogue
    await api.put_grant(
        "g1",
        subject="role:plan:premium",
        resource="label:acme",
        actions=["stream"],
        territories=["*"],
    )
    alice = api.token("alice", roles=("plan:premium",))
    decision = await api.check(alice, resource="track:t2", action="stream", territory="GB")
    assert decision["allowed"] is True
    assert decision["reason"] == "granted"
    assert decision["grant"] == "g1"
    bob = api.token("bob", roles=("plan:free",))
    assert (await api.check(bob, resource="track:t2", action="stream", territory="GB"))[
        "reason"
    ] == "not_licensed"


async def test_track_on_two_releases_gets_both_labels_grants(catalogue: Api) -> None:
    api = catalogue
    await api.put_grant(
        "indigo",
        subject="role:plan:premium",
        resource="label:indigo",
        actions=["download"],
        territories=["*"],
    )
    alice = api.token("alice", roles=("plan:premium",))
    # t1 is on release:r2 (indigo) as well as release:r1 (acme).
    assert (await api.check(alice, resource="track:t1", action="download", territory="JP"))[
        "allowed"
    ]
    # t2 is only on acme's release.
    assert not (await api.check(alice, resource="track:t2", action="download", territory="JP"))[
        "allowed"
    ]


async def test_deny_on_one_ancestor_beats_allow_on_another(catalogue: Api) -> None:
    api = catalogue
    await api.put_grant(
        "allow", subject="*", resource="label:acme", actions=["stream"], territories=["*"]
    )
    await api.put_grant(
        "takedown",
        subject="*",
        resource="release:r2",
        actions=["stream"],
        territories=["*"],
        effect="deny",
    )
    carol = api.token("carol")
    d = await api.check(carol, resource="track:t1", action="stream", territory="GB")
    assert (d["allowed"], d["reason"], d["grant"]) == (False, "denied", "takedown")
    assert (await api.check(carol, resource="track:t2", action="stream", territory="GB"))["allowed"]


async def test_worldwide_minus_exclusions(api: Api) -> None:
    await api.put_grant(
        "ww",
        subject="user:alice",
        resource="track:x",
        actions=["stream"],
        territories=["*"],
        exclude_territories=["DE", "FR"],
    )
    alice = api.token("alice")
    assert (await api.check(alice, resource="track:x", action="stream", territory="GB"))["allowed"]
    for t in ("DE", "FR"):
        d = await api.check(alice, resource="track:x", action="stream", territory=t)
        assert (d["allowed"], d["reason"]) == (False, "territory")


async def test_window_boundaries_are_half_open(api: Api) -> None:
    start, end = T0, T0 + timedelta(days=30)
    await api.put_grant(
        "w",
        subject="user:alice",
        resource="track:x",
        actions=["stream"],
        territories=["GB"],
        valid_from=iso(start),
        valid_until=iso(end),
    )
    alice = api.token("alice")
    us = timedelta(microseconds=1)

    async def at(t: datetime) -> dict[str, object]:
        return await api.check(
            alice, resource="track:x", action="stream", territory="GB", at=iso(t)
        )

    before = await at(start - us)
    assert (before["allowed"], before["reason"], before["valid_until"]) == (
        False,
        "not_yet_valid",
        iso(start),
    )
    first = await at(start)
    assert (first["allowed"], first["valid_until"]) == (True, iso(end))
    last = await at(end - us)
    assert last["allowed"] is True
    after = await at(end)
    assert (after["allowed"], after["reason"], after["valid_until"]) == (False, "expired", None)


async def test_each_reason_and_attributes(api: Api) -> None:
    await api.put_grant(
        "gb",
        subject="user:alice",
        resource="track:x",
        actions=["stream"],
        territories=["GB"],
        attributes={"quality": "lossless"},
    )
    alice = api.token("alice")
    granted = await api.check(alice, resource="track:x", action="stream", territory="GB")
    assert granted["reason"] == "granted" and granted["attributes"] == {"quality": "lossless"}
    assert (await api.check(alice, resource="track:x", action="stream", territory="US"))[
        "reason"
    ] == "territory"
    assert (await api.check(alice, resource="track:x", action="download", territory="GB"))[
        "reason"
    ] == "not_licensed"
    unknown = await api.check(
        alice, resource="track:never-heard-of", action="stream", territory="GB"
    )
    assert (unknown["allowed"], unknown["reason"]) == (False, "not_licensed")


async def test_valid_until_is_the_exact_change(api: Api) -> None:
    await api.put_grant(
        "a",
        subject="user:alice",
        resource="track:x",
        actions=["stream"],
        territories=["GB"],
        valid_until=iso(T0 + timedelta(days=10)),
    )
    await api.put_grant(
        "b",
        subject="user:alice",
        resource="track:x",
        actions=["stream"],
        territories=["GB"],
        valid_from=iso(T0 + timedelta(days=5)),
        valid_until=iso(T0 + timedelta(days=20)),
    )
    alice = api.token("alice")
    d = await api.check(alice, resource="track:x", action="stream", territory="GB", at=iso(T0))
    # Allowed by "a" until day 10, and by "b" from day 5 to day 20: the answer changes on day 20.
    assert d["allowed"] and d["valid_until"] == iso(T0 + timedelta(days=20))


async def test_revision_advances_with_every_write_and_is_reported(api: Api) -> None:
    r1 = (
        await api.put_grant(
            "a", subject="*", resource="track:x", actions=["stream"], territories=["*"]
        )
    ).json()
    r2 = (
        await api.put_grant(
            "b", subject="*", resource="track:y", actions=["stream"], territories=["*"]
        )
    ).json()
    assert r2["revision"] == r1["revision"] + 1
    same = (
        await api.put_grant(
            "b", subject="*", resource="track:y", actions=["stream"], territories=["*"]
        )
    ).json()
    assert same["revision"] == r2["revision"] and same["changed"] is False
    d = await api.check(api.token(), resource="track:x", action="stream", territory="GB")
    assert d["revision"] == r2["revision"]
    deleted = await api.client.delete("/v1/grants/a", headers=api.admin)
    assert deleted.json()["revision"] == r2["revision"] + 1


async def test_min_revision_ahead_of_every_write_is_refused(api: Api) -> None:
    r = await api.client.post(
        "/v1/check",
        json={"resource": "track:x", "action": "stream", "territory": "GB", "min_revision": 10**12},
        headers=api.headers(api.token()),
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "min_revision"


async def test_batch_answers_in_order(catalogue: Api) -> None:
    api = catalogue
    await api.put_grant(
        "g", subject="*", resource="label:acme", actions=["stream"], territories=["GB"]
    )
    checks = [
        {"resource": r, "action": "stream", "territory": t}
        for r in ("track:t1", "track:t2", "track:zzz")
        for t in ("GB", "US")
    ]
    r = await api.client.post(
        "/v1/check/batch", json={"checks": checks}, headers=api.headers(api.token())
    )
    assert r.status_code == 200, r.text
    got = [(x["allowed"], x["reason"]) for x in r.json()["results"]]
    assert got == [
        (True, "granted"),
        (False, "territory"),
        (True, "granted"),
        (False, "territory"),
        (False, "not_licensed"),
        (False, "not_licensed"),
    ]


async def test_resource_cycle_is_refused(api: Api) -> None:
    await api.put_resource("release:r1", ["label:acme"])
    await api.put_resource("track:t1", ["release:r1"])
    r = await api.client.put(
        "/v1/resources/label:acme", json={"parents": ["track:t1"]}, headers=api.admin
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "parents"
    assert "cycle" in r.json()["errors"][0]["message"]
    got = await api.client.get("/v1/resources/label:acme", headers=api.admin)
    assert got.json()["parents"] == []
