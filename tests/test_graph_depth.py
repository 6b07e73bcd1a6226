"""The resource graph's depth limit, and checks that never miss a deny above it.

Depth counts levels: a resource without parents is on level 1, its children on
level 2; a path may have at most ``MAX_DEPTH`` (16) levels. Writes (``PUT
/v1/resources``, imports) count the levels above the new parents *and* below
the written resource. A graph deeper anyway (written before that, or with SQL)
makes checks under it fail closed: ``allowed: false, reason: "denied"``.

A chain here is a list of ids, bottom first: ``chain[i + 1]`` is the parent of
``chain[i]``, so ``chain[-1]`` is the root and ``chain[0]`` is on level
``len(chain)``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from support import Api, running, settings_for
from test_import_helpers import chunked, ndjson_lines

from entitlements import metrics
from entitlements.service.imports import ImportOptions, ImportReport, ImportService
from entitlements.store.imports import PostgresImportStore
from entitlements.store.postgres import (
    GRAPH_CHECK_TASK,
    MAX_DEPTH,
    PostgresStore,
    bump_revision,
)

AT = datetime(2026, 6, 1, tzinfo=UTC)
LIMIT = "at most 16 levels deep"


def chain(name: str, levels: int) -> list[str]:
    return [f"node:{name}{i:02d}" for i in range(levels)]


async def put_chain(api: Api, ids: list[str]) -> None:
    """Through the API, root first (each write adds a child below what exists)."""
    await api.put_resource(ids[-1], [])
    for child, parent in reversed(list(itertools.pairwise(ids))):
        await api.put_resource(child, [parent])


async def raw_chain(store: PostgresStore, ids: list[str]) -> None:
    """Write a chain with SQL, past every check (as a graph from before the fix), and
    announce it on the change feed like any write."""
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO resources (id, type, revision)
               SELECT r, split_part(r, ':', 1), 0 FROM unnest($1::text[]) AS r
               ON CONFLICT (id) DO NOTHING""",
            ids,
        )
        await conn.executemany(
            "INSERT INTO resource_parents (child, parent) VALUES ($1, $2)",
            list(itertools.pairwise(ids)),
        )
        await bump_revision(conn, [("resource", r) for r in ids])


def grant(gid: str, resource: str, effect: str = "allow") -> dict[str, Any]:
    return {
        "id": gid,
        "subject": "*",
        "resource": resource,
        "actions": ["stream"],
        "territories": ["*"],
        "effect": effect,
    }


async def put_grants(api: Api, *grants: dict[str, Any]) -> None:
    for g in grants:
        await api.put_grant(g["id"], **{k: v for k, v in g.items() if k != "id"})


def check_body(resource: str) -> dict[str, Any]:
    return {"resource": resource, "action": "stream", "territory": "GB", "at": AT.isoformat()}


def answer(decision: dict[str, Any]) -> tuple[bool, str, str | None]:
    return decision["allowed"], decision["reason"], decision["grant"]


DENIED = (False, "denied", None)


# --- writes ------------------------------------------------------------------------------


@pytest.mark.parametrize("top", [4, 5, 6, 8])
async def test_put_refuses_parents_on_top_of_a_chain_that_would_pass_the_limit(
    api: Api, top: int
) -> None:
    """12 levels exist; a separate chain of ``top`` levels is fine alone. Hanging the
    12 under it makes 12 + ``top`` levels: 16 is allowed, 17-20 are refused."""
    bottom, above = chain("b", 12), chain("t", top)
    await put_chain(api, bottom)
    await put_chain(api, above)
    r = await api.client.put(
        f"/v1/resources/{bottom[-1]}", json={"parents": [above[0]]}, headers=api.admin
    )
    if 12 + top <= MAX_DEPTH:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    [error] = r.json()["errors"]
    assert error["field"] == "parents"
    assert LIMIT in error["message"]
    assert f"{12 + top} levels ({top} above it, 11 below it)" in error["message"]
    got = await api.client.get(f"/v1/resources/{bottom[-1]}", headers=api.admin)
    assert got.json()["parents"] == []


async def test_put_refuses_a_parent_in_the_middle_that_stacks_two_chains(api: Api) -> None:
    """The written resource is in the middle: 9 levels above the new parent's top, 8
    below it, 18 in all."""
    lower, upper = chain("l", 9), chain("u", 9)
    await put_chain(api, lower)
    await put_chain(api, upper)
    r = await api.client.put(
        f"/v1/resources/{lower[-1]}", json={"parents": [upper[0]]}, headers=api.admin
    )
    assert r.status_code == 422, r.text
    assert LIMIT in r.json()["errors"][0]["message"]


async def run_import(store: PostgresStore, records: list[dict[str, Any]]) -> ImportReport:
    data = ndjson_lines({"kind": "resource"} | r for r in records)
    return await ImportService(PostgresImportStore(store.pool)).run(
        chunked(data, 4096), ImportOptions("ndjson")
    )


def chain_records(ids: list[str]) -> list[dict[str, Any]]:
    return [{"id": c, "parents": [p]} for c, p in itertools.pairwise(ids)] + [
        {"id": ids[-1], "parents": []}
    ]


async def test_two_imports_that_each_look_fine_cannot_stack_past_the_limit(
    clean: PostgresStore,
) -> None:
    """Import 1: a chain of 10 levels. Import 2: another chain of 10, and the first
    chain's root under its bottom: 20 levels. Each file alone is within the limit.
    Every record of the second file that gave parents lies on the 20-level path."""
    first, second = chain("a", 10), chain("z", 10)
    assert (await run_import(clean, chain_records(first))).status == "committed"
    records = [*chain_records(second), {"id": first[-1], "parents": [second[0]]}]
    report = await run_import(clean, records)
    assert report.status == "failed"
    assert {e["field"] for e in report.errors} == {"parents"}
    lines = {e["line"]: e["message"] for e in report.errors}
    assert set(lines) == {*range(1, 10), 11}  # line 10: the root, no parents
    assert all(LIMIT in m for m in lines.values()), lines
    assert "would have 20 levels (10 above it, 9 below it)" in lines[11]
    assert (await clean.get_resource(first[-1])).parents == ()
    assert await clean.pool.fetchval("SELECT count(*) FROM resources") == len(first)


async def test_an_import_may_fill_the_graph_to_exactly_the_limit(clean: PostgresStore) -> None:
    first, second = chain("a", 10), chain("z", 6)
    assert (await run_import(clean, chain_records(first))).status == "committed"
    records = [*chain_records(second), {"id": first[-1], "parents": [second[0]]}]
    assert (await run_import(clean, records)).status == "committed"
    assert (await clean.get_resource(first[-1])).parents == (second[0],)


# --- evaluation fails closed ---------------------------------------------------------------


@pytest.fixture
async def too_deep(clean: PostgresStore) -> list[str]:
    """A 20-level chain written with SQL; the leaf's check walks 16 levels up."""
    ids = chain("d", 20)
    await raw_chain(clean, ids)
    return ids


@pytest.fixture
async def uncached(clean: PostgresStore, pg_dsn: str) -> AsyncIterator[Api]:
    async with running(settings_for(pg_dsn, cache_size=0)) as (client, state):
        yield Api(client, state)


async def takedown_above_the_walk(api: Api, ids: list[str]) -> None:
    """An allow near the bottom, a takedown 18 levels above the leaf: everything in the
    chain below it is denied by the rules."""
    await put_grants(api, grant("deal", ids[1]), grant("takedown", ids[18], "deny"))


async def assert_never_allowed(api: Api, ids: list[str]) -> None:
    token = api.token("alice")
    for rid in ids[:4]:  # the resources more than 16 levels deep
        assert answer(await api.check(token, **check_body(rid))) == DENIED, rid
    r = await api.client.post(
        "/v1/check/batch",
        json={"checks": [check_body(rid) for rid in ids[:18]]},
        headers=api.headers(token),
    )
    assert r.status_code == 200, r.text
    assert [x["allowed"] for x in r.json()["results"]] == [False] * 18
    listed = await api.client.get(
        "/v1/entitlements",
        params={"action": "stream", "territory": "GB"},
        headers=api.headers(token),
    )
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == []


async def test_a_takedown_above_the_walk_denies_uncached(
    uncached: Api, too_deep: list[str]
) -> None:
    await takedown_above_the_walk(uncached, too_deep)
    await assert_never_allowed(uncached, too_deep)


async def test_a_takedown_above_the_walk_denies_from_the_in_process_cache(
    api: Api, too_deep: list[str]
) -> None:
    await api.state.follower.catch_up()
    await takedown_above_the_walk(api, too_deep)
    await assert_never_allowed(api, too_deep)
    hits = float(metrics.L1_HIT._value.get())
    await assert_never_allowed(api, too_deep)  # now from L1
    assert float(metrics.L1_HIT._value.get()) > hits


async def test_a_takedown_above_the_walk_denies_from_redis(
    clean: PostgresStore, pg_dsn: str, redis_url: str, redis_prefix: str, too_deep: list[str]
) -> None:
    cfg = settings_for(pg_dsn, redis_url=redis_url, redis_prefix=redis_prefix)
    async with running(cfg) as (client, state):
        first = Api(client, state)
        await takedown_above_the_walk(first, too_deep)
        await assert_never_allowed(first, too_deep)  # fills Redis
    async with running(cfg) as (client, state):  # a new worker: empty L1, warm Redis
        second = Api(client, state)
        hits = float(metrics.L2_HIT._value.get())
        await assert_never_allowed(second, too_deep)
        assert float(metrics.L2_HIT._value.get()) > hits


async def test_a_redis_entry_from_before_the_flag_is_never_read(
    clean: PostgresStore, pg_dsn: str, redis_url: str, redis_prefix: str, too_deep: list[str]
) -> None:
    """A worker from before ``too_deep`` cached the leaf's view as [revision, ancestors,
    grants], found the allow below, and missed the takedown. Such an entry, under the key
    it used or under today's, is ignored: the leaf is still denied."""
    leaf = too_deep[0]
    cfg = settings_for(pg_dsn, redis_url=redis_url, redis_prefix=redis_prefix)
    async with running(cfg) as (client, state):
        api = Api(client, state)
        await takedown_above_the_walk(api, too_deep)
        revision = await clean.revision()
        allow = ["deal", "*", too_deep[1], ["stream"], ["*"], [], None, None, "allow", None, None]
        old = orjson.dumps([revision, sorted(too_deep[:17]), [allow]])
        redis = aioredis.Redis.from_url(redis_url)
        try:
            for key in (f"{redis_prefix}r:{leaf}", f"{redis_prefix}v2:r:{leaf}"):
                await redis.set(key, old, ex=60)
        finally:
            await redis.aclose()
        assert answer(await api.check(api.token("alice"), **check_body(leaf))) == DENIED


async def test_a_graph_too_deep_is_denied_even_without_any_deny(
    uncached: Api, too_deep: list[str]
) -> None:
    """The walk cannot tell what lies above it, so it never allows: the fail-closed answer
    is a deny with no grant and no end, not the allow found below."""
    await put_grants(uncached, grant("deal", too_deep[0]))
    decision = await uncached.check(uncached.token("alice"), **check_body(too_deep[0]))
    assert answer(decision) == DENIED and decision["valid_until"] is None
    # Level 16 is walked whole: the same allow counts there.
    await put_grants(uncached, grant("deal-16", too_deep[4]))
    decision = await uncached.check(uncached.token("alice"), **check_body(too_deep[4]))
    assert answer(decision) == (True, "granted", "deal-16")


async def test_repairing_the_graph_lifts_the_fail_closed_answer(
    api: Api, too_deep: list[str]
) -> None:
    await api.state.follower.catch_up()
    await put_grants(api, grant("deal", too_deep[0]))
    token = api.token("alice")
    assert answer(await api.check(token, **check_body(too_deep[0]))) == DENIED
    await api.put_resource(too_deep[15], [])  # cut the chain to 16 levels
    assert answer(await api.check(token, **check_body(too_deep[0]))) == (True, "granted", "deal")


async def test_checks_on_a_graph_too_deep_log_a_rate_limited_warning(
    uncached: Api, too_deep: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    token = uncached.token("alice")
    with caplog.at_level(logging.WARNING, logger="entitlements"):
        for _ in range(5):
            await uncached.check(token, **check_body(too_deep[0]))
    warnings = [r.getMessage() for r in caplog.records if "deeper than 16 levels" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert too_deep[0] in warnings[0] and "denied" in warnings[0]


# --- upgrading: the start-up warning -------------------------------------------------------


async def start_and_scan(pg_dsn: str) -> None:
    """Start a worker, and wait for its start-up scan of the graph (a background task)."""
    async with running(settings_for(pg_dsn)):
        [scan] = [t for t in asyncio.all_tasks() if t.get_name() == GRAPH_CHECK_TASK]
        await scan


async def test_start_up_names_a_graph_already_too_deep(
    clean: PostgresStore, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """16 levels, and 25 leaves under the bottom one (level 17), written with SQL."""
    ids = chain("s", 16)
    await raw_chain(clean, ids)
    leaves = [f"leaf:x{i:02d}" for i in range(25)]
    for leaf in leaves:
        await raw_chain(clean, [leaf, ids[0]])
    with caplog.at_level(logging.WARNING, logger="entitlements"):
        await start_and_scan(pg_dsn)
    [warning] = [r.getMessage() for r in caplog.records if "levels deep" in r.getMessage()]
    assert warning.startswith("25 resource(s) lie more than 16 levels deep")
    assert ", ".join(leaves[:20]) + " (and 5 more)" in warning
    assert leaves[20] not in warning and ids[0] not in warning


async def test_start_up_is_quiet_about_a_graph_within_the_limit(
    clean: PostgresStore, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    await raw_chain(clean, chain("s", 16))
    with caplog.at_level(logging.WARNING, logger="entitlements"):
        await start_and_scan(pg_dsn)
    assert not [r for r in caplog.records if "16 levels" in r.getMessage()]
