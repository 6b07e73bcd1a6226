"""The L2 cache on a real Redis Cluster (3 masters, 3 replicas; ``tests/redis_cluster.py``).

Entries spread over every master (no hash tag funnels them into one slot), a
multi-key read crosses slots, and a master killed under load fails over to its
replica with no wrong answer and no 5xx.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from redis_cluster import RedisClusterServers
from support import Api, eventually, running, settings_for

from entitlements import metrics
from entitlements.cache.redis import FORMAT
from entitlements.store.postgres import PostgresStore

pytestmark = pytest.mark.servers


def cluster_settings(pg_dsn: str, cluster: RedisClusterServers, prefix: str, **extra: Any) -> Any:
    return settings_for(
        pg_dsn,
        redis_url=cluster.seed_url,
        redis_cluster=True,
        redis_prefix=prefix,
        cache_size=1,  # a one-entry L1: nearly every look-up goes to Redis
        **extra,
    )


async def catalogue(api: Api, n: int) -> tuple[list[str], list[str]]:
    """n users, each granted their own track only."""
    users = [f"u{uuid.uuid4().hex[:8]}" for _ in range(n)]
    tracks = [f"track:{uuid.uuid4().hex[:8]}" for _ in range(n)]
    for i, (user, track) in enumerate(zip(users, tracks, strict=True)):
        await api.put_grant(
            f"g{i}-{user}", subject=f"user:{user}", resource=track, actions=["stream"],
            territories=["*"],
        )  # fmt: skip
    return users, tracks


def l2_hits() -> float:
    return float(metrics.L2_HIT._value.get())


async def test_entries_spread_over_every_master_and_batches_cross_slots(
    clean: PostgresStore, pg_dsn: str, redis_cluster: RedisClusterServers
) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}:"
    settings = cluster_settings(pg_dsn, redis_cluster, prefix)
    async with running(settings) as (c1, s1):
        api = Api(c1, s1)
        users, tracks = await catalogue(api, 12)
        token = api.token(users[0])
        batch = {"checks": [{"resource": t, "action": "stream", "territory": "GB"} for t in tracks]}
        response = await c1.post("/v1/check/batch", json=batch, headers=api.headers(token))
        assert response.status_code == 200, response.text
        assert [r["allowed"] for r in response.json()["results"]] == [True] + [False] * 11
    keys = [f"{prefix}{FORMAT}:r:{t}" for t in tracks]
    owners = {(await redis_cluster.master_for_key(k)).port for k in keys}
    assert len(owners) == 3  # the twelve views live on all three masters

    # A second worker (empty L1) answers the same batch from Redis: one read across slots.
    async with running(settings) as (c2, s2):
        two = Api(c2, s2)
        before = l2_hits()
        response = await c2.post("/v1/check/batch", json=batch, headers=two.headers(token))
        assert response.status_code == 200, response.text
        assert [r["allowed"] for r in response.json()["results"]] == [True] + [False] * 11
        assert l2_hits() - before >= 12


async def test_a_master_killed_under_load_fails_over_without_a_wrong_answer_or_a_5xx(
    clean: PostgresStore, pg_dsn: str, redis_cluster: RedisClusterServers
) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}:"
    settings = cluster_settings(pg_dsn, redis_cluster, prefix)
    async with running(settings) as (c1, s1), running(settings) as (c2, s2):
        apis = [Api(c1, s1), Api(c2, s2)]
        users, tracks = await catalogue(apis[0], 6)
        tokens = [apis[0].token(u) for u in users]
        tally = {"right": 0, "wrong": 0, "5xx": 0, "other": 0}
        stop = asyncio.Event()

        async def load(worker: int) -> None:
            api, i = apis[worker % 2], worker
            while not stop.is_set():
                who, what = i % 6, (i // 6) % 6
                response = await api.client.post(
                    "/v1/check",
                    json={"resource": tracks[what], "action": "stream", "territory": "GB"},
                    headers=api.headers(tokens[who]),
                )
                if response.status_code >= 500:
                    tally["5xx"] += 1
                elif response.status_code != 200:
                    tally["other"] += 1
                elif response.json()["allowed"] is (who == what):
                    tally["right"] += 1
                else:
                    tally["wrong"] += 1
                i += 1

        tasks = [asyncio.create_task(load(w)) for w in range(8)]
        try:
            assert await eventually(lambda: _answered(tally, 200), timeout=10.0)
            await redis_cluster.wait_replicas_synced()
            dead = await redis_cluster.kill_master_for_key(f"{prefix}{FORMAT}:r:{tracks[0]}")
            promoted = await redis_cluster.wait_failover(dead)
            assert promoted.port != dead.port
            after = tally["right"]
            assert await eventually(lambda: _answered(tally, after + 300), timeout=15.0)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        assert tally["wrong"] == 0 and tally["5xx"] == 0 and tally["other"] == 0, tally
        hits = l2_hits()
        # Redis serves again after the failover (the breaker closed, the slot map moved).
        token, track = tokens[0], tracks[0]
        for _ in range(30):
            await apis[1].check(token, resource=track, action="stream", territory="GB")
            await apis[1].check(token, resource=tracks[1], action="stream", territory="GB")
        assert l2_hits() > hits


async def _answered(tally: dict[str, int], n: int) -> bool:
    return tally["right"] >= n
