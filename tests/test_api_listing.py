"""GET /v1/entitlements: everything listed checks true, the rest false, pages are exact."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from support import Api

from entitlements.domain.model import grant_from_mapping, resource_from_mapping


async def build_catalogue(api: Api, seed: int = 7) -> list[str]:
    """3 labels, 12 releases, 120 tracks (some on two releases), mixed deals, denies and windows."""
    rng = random.Random(seed)
    store = api.state.store
    now = datetime.now(UTC)
    releases = [f"release:r{i:02d}" for i in range(12)]
    for i, rel in enumerate(releases):
        await store.put_resource(resource_from_mapping({"id": rel, "parents": [f"label:l{i % 3}"]}))
    tracks = [f"track:t{i:03d}" for i in range(120)]
    for i, t in enumerate(tracks):
        parents = {releases[i % 12]}
        if i % 7 == 0:
            parents.add(releases[(i + 5) % 12])
        await store.put_resource(resource_from_mapping({"id": t, "parents": sorted(parents)}))
    grants: list[dict[str, Any]] = [
        {
            "id": "l0",
            "subject": "role:plan:premium",
            "resource": "label:l0",
            "actions": ["stream"],
            "territories": ["*"],
        },
        {
            "id": "l1",
            "subject": "role:plan:premium",
            "resource": "label:l1",
            "actions": ["stream"],
            "territories": ["*"],
            "exclude_territories": ["GB"],
        },
        {
            "id": "r5-future",
            "subject": "*",
            "resource": "release:r05",
            "actions": ["stream"],
            "territories": ["GB"],
            "valid_from": (now + timedelta(days=3)).isoformat(),
        },
        {
            "id": "r6-past",
            "subject": "*",
            "resource": "release:r06",
            "actions": ["stream"],
            "territories": ["GB"],
            "valid_until": (now - timedelta(days=3)).isoformat(),
        },
        {
            "id": "r8-dl",
            "subject": "*",
            "resource": "release:r08",
            "actions": ["download"],
            "territories": ["GB"],
        },
    ]
    for t in rng.sample(tracks, 15):
        grants.append(
            {
                "id": f"buy-{t}",
                "subject": "user:alice",
                "resource": t,
                "actions": ["stream"],
                "territories": ["GB"],
            }
        )
    for t in rng.sample(tracks, 10):
        grants.append(
            {
                "id": f"down-{t}",
                "subject": "*",
                "resource": t,
                "actions": ["stream"],
                "territories": ["*"],
                "effect": "deny",
            }
        )
    for raw in grants:
        await store.put_grant(grant_from_mapping(raw))
    return [*tracks, *releases, "label:l0", "label:l1", "label:l2"]


async def list_all(api: Api, token: str, limit: int, **params: str) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = {"action": "stream", "territory": "GB", "limit": str(limit), **params}
        if cursor:
            query["cursor"] = cursor
        r = await api.client.get("/v1/entitlements", params=query, headers=api.headers(token))
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append([item["resource"] for item in body["items"]])
        assert all(item["allowed"] for item in body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 500, "pagination does not end"


async def check_many(api: Api, token: str, resources: list[str]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for i in range(0, len(resources), 500):
        chunk = resources[i : i + 500]
        r = await api.client.post(
            "/v1/check/batch",
            json={
                "checks": [{"resource": x, "action": "stream", "territory": "GB"} for x in chunk]
            },
            headers=api.headers(token),
        )
        assert r.status_code == 200, r.text
        out.update(zip(chunk, (d["allowed"] for d in r.json()["results"]), strict=True))
    return out


async def test_listed_iff_check_allows(api: Api) -> None:
    everything = await build_catalogue(api)
    alice = api.token("alice", roles=("plan:premium",))
    listed = [r for page in await list_all(api, alice, limit=1000) for r in page]
    truth = await check_many(api, alice, everything)
    assert listed, "the catalogue grants alice something"
    assert set(listed) == {r for r, ok in truth.items() if ok}
    # and, the other way round, a sample of unlisted resources really is refused
    unlisted = [r for r in everything if r not in set(listed)]
    assert unlisted and not any(truth[r] for r in unlisted)


async def test_pages_never_repeat_or_skip(api: Api) -> None:
    await build_catalogue(api)
    alice = api.token("alice", roles=("plan:premium",))
    whole = [r for page in await list_all(api, alice, limit=1000) for r in page]
    for size in (1, 3, 10, 17):
        pages = await list_all(api, alice, limit=size)
        flat = [r for page in pages for r in page]
        assert flat == whole, f"limit={size}"
        assert all(len(p) <= size for p in pages)
        assert len(flat) == len(set(flat))


async def test_type_filter_and_bad_cursor(api: Api) -> None:
    await build_catalogue(api)
    alice = api.token("alice", roles=("plan:premium",))
    tracks = [r for page in await list_all(api, alice, limit=50, type="track") for r in page]
    assert tracks and all(r.startswith("track:") for r in tracks)
    r = await api.client.get(
        "/v1/entitlements",
        params={"action": "stream", "territory": "GB", "cursor": "!!!"},
        headers=api.headers(alice),
    )
    assert r.status_code == 422
    r = await api.client.get(
        "/v1/entitlements",
        params={"action": "stream", "territory": "UK"},
        headers=api.headers(alice),
    )
    assert r.status_code == 422
