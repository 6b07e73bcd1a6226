"""Checks read from a real streaming replica (``tests/pg_replication.py``) only while
it is recent enough: paused replay, lag beyond the bound, a replica stopped under load.

The app runs against the fixture's own primary with the replica in
``ENTITLEMENTS_DATABASE_REPLICA_URLS``; ``replica.reads_served`` counts the reads
the replica answered, so each test can say where its checks were read.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pg_replication import PostgresReplication
from support import Api, eventually, running, settings_for

from entitlements.store.replicas import Replica, ReplicaRouter

pytestmark = pytest.mark.servers

STALENESS = 2.0


@pytest.fixture
async def api(
    pg_replication: PostgresReplication, request: pytest.FixtureRequest
) -> AsyncIterator[Api]:
    cache = getattr(request, "param", 0)
    settings = settings_for(
        pg_replication.primary_dsn,
        database_replica_urls=[pg_replication.replica_dsn],
        replica_probe_interval=0.1,
        staleness=STALENESS,
        cache_size=cache,
    )
    async with running(settings) as (client, state):
        api = Api(client, state)
        assert await eventually(lambda: _status_is(api, "ok"), timeout=10.0)
        yield api


def router(api: Api) -> ReplicaRouter:
    replicas = api.state.replicas
    assert replicas is not None
    return replicas


def replica(api: Api) -> Replica:
    return router(api).replicas[0]


async def readyz(api: Api) -> dict[str, Any]:
    response = await api.client.get("/readyz")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _status_is(api: Api, status: str) -> bool:
    return bool((await readyz(api))["replicas"][0]["status"] == status)


async def grant(api: Api, user: str, resource: str) -> int:
    response = await api.put_grant(
        f"g-{uuid.uuid4().hex[:10]}",
        subject=f"user:{user}",
        resource=resource,
        actions=["stream"],
        territories=["*"],
    )
    revision: int = response.json()["revision"]
    return revision


def question(resource: str, **extra: Any) -> dict[str, Any]:
    return {"resource": resource, "action": "stream", "territory": "GB", **extra}


@pytest.mark.parametrize("api", [0, 1000], indirect=True, ids=["uncached", "cached"])
async def test_min_revision_is_answered_by_the_primary_while_replay_is_paused(
    api: Api, pg_replication: PostgresReplication
) -> None:
    user, track = f"u{uuid.uuid4().hex[:8]}", f"track:{uuid.uuid4().hex[:8]}"
    token = api.token(user)
    served = replica(api).reads_served
    await pg_replication.pause_replay()
    revision = await grant(api, user, track)
    await pg_replication.wait_received()  # the replica has the WAL, but has not applied it

    for _ in range(5):
        decision = await api.check(token, **question(track, min_revision=revision))
        assert decision["allowed"] is True and decision["revision"] >= revision
    if api.state.settings.cache_size == 0:
        assert replica(api).reads_served == served  # none of them read the paused replica
    else:
        # The cache may read the replica (it is within the bound): the track's view,
        # which the write did not change, is kept; the user's grants, which it did,
        # are found behind the change index and read again from the primary. Once.
        assert replica(api).reads_served - served <= 2

    await pg_replication.resume_replay()
    other = f"track:{uuid.uuid4().hex[:8]}"  # not cached anywhere yet
    latest = await grant(api, user, other)
    await pg_replication.wait_caught_up()
    assert await eventually(lambda: _replica_has(api, latest), timeout=5.0)
    before = replica(api).reads_served
    decision = await api.check(token, **question(other, min_revision=revision))
    assert decision["allowed"] is True and decision["revision"] >= latest
    assert replica(api).reads_served > before  # the caught-up replica answered


async def _replica_has(api: Api, revision: int) -> bool:
    return replica(api).revision >= revision


async def test_a_replica_lagging_beyond_the_bound_is_not_read(
    api: Api, pg_replication: PostgresReplication
) -> None:
    user, track = f"u{uuid.uuid4().hex[:8]}", f"track:{uuid.uuid4().hex[:8]}"
    token = api.token(user)
    await pg_replication.pause_replay()
    await grant(api, user, track)
    # Within the bound the replica may still answer (its answers are at most STALENESS
    # old); past it, it is "behind" and skipped, and /readyz says so with a 200.
    assert await eventually(lambda: _status_is(api, "behind"), timeout=STALENESS + 3)
    served = replica(api).reads_served
    for _ in range(20):
        # Every answer shows the write the replica has not applied: none came from it.
        assert (await api.check(token, **question(track)))["allowed"] is True
    # Listings too: the new grant is listed, so the candidates came from the primary.
    listing = await api.client.get(
        "/v1/entitlements",
        params={"action": "stream", "territory": "GB"},
        headers=api.headers(token),
    )
    assert listing.status_code == 200, listing.text
    assert [item["resource"] for item in listing.json()["items"]] == [track]
    assert replica(api).reads_served == served
    body = await readyz(api)
    assert body["replicas"][0]["lag_seconds"] > STALENESS
    metrics = (await api.client.get("/metrics")).text
    assert "entitlements_replica_up{" in metrics and "entitlements_replica_lag_seconds{" in metrics

    await pg_replication.resume_replay()
    assert await eventually(lambda: _status_is(api, "ok"), timeout=5.0)
    before = replica(api).reads_served
    assert (await api.check(token, **question(track)))["allowed"] is True
    assert replica(api).reads_served == before + 1  # back in use once caught up


async def test_a_replica_stopped_under_load_costs_no_error_and_no_wrong_answer(
    api: Api, pg_replication: PostgresReplication
) -> None:
    users = [f"u{uuid.uuid4().hex[:8]}" for _ in range(4)]
    tracks = [f"track:{uuid.uuid4().hex[:8]}" for _ in range(4)]
    for user, track in zip(users, tracks, strict=True):
        await grant(api, user, track)  # each user may stream their own track only
    await pg_replication.wait_caught_up()
    assert await eventually(lambda: _status_is(api, "ok"), timeout=5.0)
    tokens = [api.token(u) for u in users]
    stop = asyncio.Event()
    answers = {"right": 0, "wrong": 0, "errors": 0}

    async def load(worker: int) -> None:
        i = worker
        while not stop.is_set():
            who, what = i % 4, (i // 4) % 4
            response = await api.client.post(
                "/v1/check", json=question(tracks[what]), headers=api.headers(tokens[who])
            )
            if response.status_code != 200:
                answers["errors"] += 1
            elif response.json()["allowed"] is (who == what):
                answers["right"] += 1
            else:
                answers["wrong"] += 1
            i += 1

    tasks = [asyncio.create_task(load(w)) for w in range(8)]
    try:
        assert await eventually(lambda: _served_some(api), timeout=5.0)
        await pg_replication.stop_replica("immediate")
        assert await eventually(lambda: _status_is(api, "down"), timeout=5.0)
        at_stop = answers["right"]
        assert await eventually(lambda: _more(answers, at_stop + 100), timeout=10.0)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert answers["errors"] == 0 and answers["wrong"] == 0, answers
    assert answers["right"] > 100


async def _served_some(api: Api) -> bool:
    return replica(api).reads_served > 20


async def _more(answers: dict[str, int], n: int) -> bool:
    return answers["right"] >= n


@pytest.mark.parametrize("api", [1000], indirect=True, ids=["cached"])
async def test_cache_fills_read_the_replica_while_writes_go_on(
    api: Api, pg_replication: PostgresReplication
) -> None:
    """A write elsewhere does not send cache fills to the primary: what the replica
    returns is validated against the change index, key by key."""
    user, track = f"u{uuid.uuid4().hex[:8]}", f"track:{uuid.uuid4().hex[:8]}"
    await grant(api, user, track)
    await pg_replication.wait_caught_up()
    token = api.token(user)
    for _ in range(5):
        await grant(api, f"other{uuid.uuid4().hex[:6]}", f"track:{uuid.uuid4().hex[:8]}")
        before = replica(api).reads_served
        fresh_track = f"track:{uuid.uuid4().hex[:8]}"  # never cached
        assert (await api.check(token, **question(fresh_track)))["allowed"] is False
        assert replica(api).reads_served > before
    assert (await api.check(token, **question(track)))["allowed"] is True
