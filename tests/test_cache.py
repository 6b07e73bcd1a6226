"""Caching and consistency: cached answers equal uncached ones, revokes are never served stale."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import Api, running, settings_for

from entitlements import metrics
from entitlements.domain.model import grant_from_mapping, resource_from_mapping
from entitlements.service.checks import CheckRequest
from entitlements.store.postgres import PostgresStore, bump_revision

T0 = datetime(2026, 6, 1, tzinfo=UTC)
TIMES = [T0 + timedelta(days=d) for d in (-10, 0, 5, 10)]
RESOURCES = ["label:a", "release:r1", "release:r2", "track:t1", "track:t2"]
USERS = ["u1", "u2"]


def counter(c: Any, *labels: str) -> float:
    return float(c.labels(*labels)._value.get())


@pytest.fixture
async def two_apps(
    clean: PostgresStore, pg_dsn: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[Api, Api]]:
    """A cached app (L1 + Redis L2) and an uncached one on the same database."""
    cached = settings_for(pg_dsn, redis_url=redis_url, redis_prefix=redis_prefix)
    async with running(cached) as (c1, s1), running(settings_for(pg_dsn, cache_size=0)) as (c2, s2):
        yield Api(c1, s1), Api(c2, s2)


grant_st = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["g1", "g2", "g3", "g4", "g5"]),
        "subject": st.sampled_from(["*", "user:u1", "user:u2", "role:premium"]),
        "resource": st.sampled_from(RESOURCES),
        "actions": st.sampled_from([["stream"], ["download"], ["stream", "download"]]),
        "territories": st.sampled_from([["*"], ["GB"], ["GB", "US"]]),
        "effect": st.sampled_from(["allow", "allow", "deny"]),
        "window": st.sampled_from([(None, None), (0, None), (None, 2), (1, 3), (0, 2)]),
    }
)
op_st = st.one_of(
    st.tuples(st.just("grant"), grant_st),
    st.tuples(st.just("delete"), st.sampled_from(["g1", "g2", "g3", "g4", "g5"])),
    st.tuples(
        st.just("parents"),
        st.sampled_from(["track:t1", "track:t2", "release:r1", "release:r2"]),
        st.lists(st.sampled_from(["release:r1", "release:r2", "label:a"]), max_size=2, unique=True),
    ),
    st.tuples(
        st.just("check"),
        st.sampled_from(USERS),
        st.sampled_from([(), ("premium",)]),
        st.sampled_from(RESOURCES),
        st.sampled_from(["stream", "download"]),
        st.sampled_from(["GB", "US", "DE"]),
        st.sampled_from(range(len(TIMES))),
    ),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(op_st, min_size=5, max_size=25))
async def test_cache_on_and_off_give_equal_answers(
    two_apps: tuple[Api, Api], ops: list[Any]
) -> None:
    cached, uncached = two_apps
    store = cached.state.store
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute("TRUNCATE grants, resource_parents, resources")
        await bump_revision(conn, [("all", "*")])
    await cached.state.follower.catch_up()
    for op in ops:
        kind = op[0]
        if kind == "grant":
            g = dict(op[1])
            start, end = g.pop("window")
            if start is not None:
                g["valid_from"] = TIMES[start].isoformat()
            if end is not None:
                g["valid_until"] = TIMES[end].isoformat()
            await cached.put_grant(g["id"], **{k: v for k, v in g.items() if k != "id"})
        elif kind == "delete":
            await cached.client.delete(f"/v1/grants/{op[1]}", headers=cached.admin)
        elif kind == "parents":
            r = await cached.client.put(
                f"/v1/resources/{op[1]}", json={"parents": op[2]}, headers=cached.admin
            )
            assert r.status_code in {200, 201, 422}, r.text  # 422: a cycle, refused
        else:
            _, user, roles, resource, action, territory, t = op
            body = {
                "resource": resource,
                "action": action,
                "territory": territory,
                "at": TIMES[t].isoformat(),
            }
            answers = []
            for app in (cached, uncached):
                token = app.token(user, roles=roles)
                answers.append(await app.check(token, **body))
            keys = ("allowed", "reason", "grant", "valid_until")
            got, want = (tuple(a[k] for k in keys) for a in answers)
            assert got == want, (op, answers)


async def test_revoke_with_min_revision_is_never_allowed_on_any_worker(
    clean: PostgresStore, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    """Two workers (separate caches). Worker A revokes; worker B must honour it."""
    cfg = settings_for(pg_dsn, redis_url=redis_url, redis_prefix=redis_prefix)
    async with running(cfg) as (ca, sa), running(cfg) as (cb, sb):
        a, b = Api(ca, sa), Api(cb, sb)
        await a.put_grant(
            "buy", subject="user:alice", resource="track:x", actions=["stream"], territories=["*"]
        )
        await b.state.follower.catch_up()
        alice = b.token("alice")
        body = {"resource": "track:x", "action": "stream", "territory": "GB"}
        for _ in range(3):  # warm every cache layer of both workers
            assert (await a.check(alice, **body))["allowed"]
            assert (await b.check(alice, **body))["allowed"]
        revoked = await a.client.delete("/v1/grants/buy", headers=a.admin)
        revision = revoked.json()["revision"]
        # Read-your-writes: with the revoke's revision, no worker may still allow.
        for app in (a, b):
            d = await app.check(alice, **body, min_revision=revision)
            assert d["allowed"] is False and d["revision"] >= revision


async def test_without_min_revision_every_worker_stops_within_the_bound(
    clean: PostgresStore, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    bound = 5.0
    cfg = settings_for(pg_dsn, redis_url=redis_url, redis_prefix=redis_prefix, staleness=bound)
    async with running(cfg) as (ca, sa), running(cfg) as (cb, sb):
        a, b = Api(ca, sa), Api(cb, sb)
        await a.put_grant(
            "deal", subject="*", resource="label:acme", actions=["stream"], territories=["*"]
        )
        await a.put_resource("track:x", ["label:acme"])
        await b.state.follower.catch_up()
        alice = a.token("alice")
        body = {"resource": "track:x", "action": "stream", "territory": "GB"}
        assert (await b.check(alice, **body))["allowed"]
        # The deal on the label is revoked: the cached view of the *track* must go too.
        await a.client.delete("/v1/grants/deal", headers=a.admin)
        revoked_at = time.monotonic()
        assert (await a.check(alice, **body))["allowed"] is False, "the writing worker at once"
        while (await b.check(alice, **body))["allowed"]:
            assert time.monotonic() - revoked_at < bound, (
                "worker B served a revoked right past the bound"
            )
            await asyncio.sleep(0.02)


async def test_a_miss_storm_on_one_hot_key_costs_one_query(api: Api) -> None:
    await api.put_grant(
        "deal", subject="role:premium", resource="label:acme", actions=["stream"], territories=["*"]
    )
    await api.put_resource("track:hot", ["label:acme"])
    before_r = counter(metrics.DB_LOADS, "resource")
    before_u = counter(metrics.DB_LOADS, "user")
    req = CheckRequest("alice", ("premium",), "track:hot", "stream", "GB")
    decisions = await asyncio.gather(*(api.state.checks.check(req) for _ in range(1000)))
    assert all(d.allowed for d in decisions)
    assert counter(metrics.DB_LOADS, "resource") - before_r == 1
    assert counter(metrics.DB_LOADS, "user") - before_u == 1


async def test_a_new_worker_reads_redis_before_postgres(
    clean: PostgresStore, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    cfg = settings_for(pg_dsn, redis_url=redis_url, redis_prefix=redis_prefix)
    await clean.put_grant(
        grant_from_mapping(
            {
                "id": "g",
                "subject": "*",
                "resource": "track:x",
                "actions": ["stream"],
                "territories": ["*"],
            }
        )
    )
    await clean.put_resource(resource_from_mapping({"id": "track:x", "parents": ["release:r"]}))
    req = CheckRequest("alice", (), "track:x", "stream", "GB")
    async with running(cfg) as (_, first):
        assert (await first.checks.check(req)).allowed
    hits = counter(metrics.CACHE_LOOKUPS, "l2", "hit")
    loads = counter(metrics.DB_LOADS, "resource")
    async with running(cfg) as (_, second):
        assert (await second.checks.check(req)).allowed
    assert counter(metrics.CACHE_LOOKUPS, "l2", "hit") - hits >= 1
    assert counter(metrics.DB_LOADS, "resource") - loads == 0


async def test_metrics_endpoint_reports_cache_and_latency(api: Api) -> None:
    await api.check(api.token(), resource="track:x", action="stream", territory="GB")
    text = (await api.client.get("/metrics")).text
    assert "entitlements_request_seconds_bucket" in text
    assert 'entitlements_cache_lookups_total{layer="l1"' in text
