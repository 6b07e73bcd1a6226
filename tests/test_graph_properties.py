"""Property: whatever graph is written, a check never misses a deny on an ancestor.

Random parent graphs are written through the real write paths (``PUT
/v1/resources`` one edge at a time in a random order, and imports that split a
chain between two files), in orders built to pass the depth limit: long chains
over a random order of nodes, their edges written bottom-up, top-down or shuffled.
Some examples also add edges with raw SQL, past every check, as a graph from
before the limit held (deeper than the limit, or with a cycle).

The oracle is plain Python over the whole graph, with no depth limit, and shares
no code with the service. It says, for each resource, whether a matching deny or
allow lies on it or any ancestor, and how many levels lie above it. Then:

- a matching deny anywhere above: never ``allowed`` (the property of issue 10);
- the graph above within ``MAX_DEPTH`` levels: the exact answer (allowed iff an
  allow matches and no deny does);
- deeper (or a cycle above): ``allowed: false, reason: "denied"``, no grant;
- a listing holds exactly the resources the oracle allows;
- a write through the API is refused exactly when the oracle finds a cycle or a
  path longer than ``MAX_DEPTH`` levels through the resource written;
- the start-up scan names exactly the resources more than ``MAX_DEPTH`` levels deep.

Each example is checked uncached, from a cached app loading Postgres into L1 and
Redis, and from that app's L1 again.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import Api, running, settings_for
from test_import_helpers import ndjson_lines

from entitlements.domain.model import grant_from_mapping
from entitlements.store.postgres import MAX_DEPTH, PostgresStore, bump_revision

N = 20
NODES = [f"node:n{i:02d}" for i in range(N)]
AT = datetime(2026, 6, 1, tzinfo=UTC)
ALICE = ("alice", ("premium",))
MATCHING_SUBJECTS = {"*", "user:alice", "role:premium"}
INF = math.inf

Op = tuple[Any, ...]


# --- the oracle ------------------------------------------------------------------------


@dataclass
class Graph:
    """The resources written so far and their parents, as the oracle sees them."""

    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def put(self, child: str, parents: list[str]) -> None:
        for p in parents:
            self.parents.setdefault(p, ())
        self.parents[child] = tuple(sorted(parents))

    def closure(self, resource: str) -> set[str]:
        """The resource and every ancestor, however far (cycles included)."""
        seen, todo = {resource}, [resource]
        while todo:
            for p in self.parents.get(todo.pop(), ()):
                if p not in seen:
                    seen.add(p)
                    todo.append(p)
        return seen

    def above(self, resource: str) -> float:
        """Levels of ancestors on the longest chain above (INF when a cycle is above)."""
        return longest(resource, self.parents)

    def below(self, resource: str) -> float:
        """Levels of descendants on the longest chain below (INF when a cycle is below)."""
        children: dict[str, tuple[str, ...]] = {}
        for c, ps in self.parents.items():
            for p in ps:
                children[p] = (*children.get(p, ()), c)
        return longest(resource, children)

    def refuses(self, child: str, parents: list[str]) -> bool:
        """Would a write of these parents be refused (a cycle, or a path through the
        child longer than MAX_DEPTH levels)?"""
        if not parents:
            return False
        after = Graph(dict(self.parents))
        after.put(child, parents)
        if child in set().union(*(after.closure(p) for p in parents)):
            return True
        return after.above(child) + 1 + after.below(child) > MAX_DEPTH


def longest(start: str, edges: dict[str, tuple[str, ...]]) -> float:
    """Edges on the longest path from ``start`` along ``edges``; INF if it reaches a cycle."""
    done: dict[str, float] = {}
    on_path: set[str] = set()

    def visit(node: str) -> float:
        if node in done:
            return done[node]
        if node in on_path:
            return INF
        on_path.add(node)
        best = max((1 + visit(n) for n in edges.get(node, ())), default=0.0)
        on_path.discard(node)
        done[node] = best
        return best

    return visit(start)


@dataclass(frozen=True)
class GrantSpec:
    gid: str
    resource: str
    effect: str
    subject: str
    territories: tuple[str, ...]

    def matches(self) -> bool:
        """Does it match alice (role premium) streaming in GB?"""
        return self.subject in MATCHING_SUBJECTS and (
            "*" in self.territories or "GB" in self.territories
        )


def expected(graph: Graph, grants: list[GrantSpec], resource: str) -> tuple[bool, bool, bool]:
    """(a matching deny above, a matching allow above, the walk is whole)."""
    scope = graph.closure(resource)
    hits = [g for g in grants if g.resource in scope and g.matches()]
    deny = any(g.effect == "deny" for g in hits)
    allow = any(g.effect == "allow" for g in hits)
    return deny, allow, graph.above(resource) < MAX_DEPTH


# --- what an example does ---------------------------------------------------------------

node = st.sampled_from(NODES)


@st.composite
def chain_ops(draw: st.DrawFn, bypass: bool) -> list[Op]:
    """A chain of 6-20 levels over a random order of nodes, its edges written in a chosen
    order: from the bottom up (each write puts parents on top of the chain below it, the
    order the limit used to miss), from the top down, or shuffled; one edge at a time
    through PUT, as two imports that split it, or (``bypass``) with raw SQL."""
    seq = draw(st.permutations(NODES))[: draw(st.integers(6, N))]
    edges = list(itertools.pairwise(seq))
    order = draw(st.sampled_from(["bottom-up", "top-down", "shuffled"]))
    if order == "top-down":
        edges.reverse()
    elif order == "shuffled":
        edges = draw(st.permutations(edges))
    via = draw(st.sampled_from(["put", "imports", "raw"] if bypass else ["put", "imports"]))
    if via == "imports":
        cut = draw(st.integers(1, len(edges) - 1))
        return [("import", edges[:cut]), ("import", edges[cut:])]
    if via == "raw":
        return [("raw", child, parent) for child, parent in edges]
    return [("put", child, [parent]) for child, parent in edges]


single_op: st.SearchStrategy[list[Op]] = st.tuples(
    st.just("put"), node, st.lists(node, max_size=2, unique=True)
).map(lambda op: [op])
raw_op: st.SearchStrategy[list[Op]] = st.tuples(st.just("raw"), node, node).map(lambda op: [op])

grant_st = st.tuples(
    node,
    st.sampled_from(["allow", "allow", "deny"]),
    st.sampled_from(["*", "user:alice", "user:bob", "role:premium", "role:free"]),
    st.sampled_from([("*",), ("GB",), ("DE",)]),
)


@st.composite
def examples(draw: st.DrawFn) -> tuple[list[Op], list[GrantSpec]]:
    """Writes (past every check with raw SQL in about half of the examples) and grants."""
    bypass = draw(st.booleans())
    pieces = chain_ops(bypass) | single_op
    if bypass:
        pieces |= raw_op
    ops = [op for piece in draw(st.lists(pieces, min_size=1, max_size=3)) for op in piece]
    specs = draw(st.lists(grant_st, max_size=8))
    grants = [GrantSpec(f"g{i}", *spec) for i, spec in enumerate(specs)]
    return ops, grants


# The cases of issue 10, always run: a 20-level chain whose edges put parents on top of
# the chain below (through PUT; as two imports; with SQL), an allow at the bottom and a
# takedown at the top.
CHAIN = list(itertools.pairwise(NODES))
ENDS = [
    GrantSpec("deal", NODES[0], "allow", "*", ("*",)),
    GrantSpec("takedown", NODES[-1], "deny", "*", ("*",)),
]
ISSUE_CASES = [
    ([("put", child, [parent]) for child, parent in CHAIN], ENDS),
    ([("import", CHAIN[:10]), ("import", CHAIN[10:])], ENDS),
    ([("raw", child, parent) for child, parent in CHAIN], ENDS),
]


# --- running it ---------------------------------------------------------------------------


@pytest.fixture
async def apps(
    clean: PostgresStore, pg_dsn: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[Api, Api]]:
    """A cached app (L1 + Redis) that takes the writes, and an uncached one."""
    cached = settings_for(pg_dsn, redis_url=redis_url, redis_prefix=redis_prefix)
    async with running(cached) as (c1, s1), running(settings_for(pg_dsn, cache_size=0)) as (c2, s2):
        yield Api(c1, s1), Api(c2, s2)


async def reset(api: Api) -> None:
    async with api.state.store.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "DELETE FROM grants; DELETE FROM resource_parents; DELETE FROM resources"
        )
        await bump_revision(conn, [("all", "*")])
    await api.state.follower.catch_up()


async def write(api: Api, graph: Graph, op: Op) -> None:
    kind = op[0]
    if kind == "put":
        _, child, parents = op
        # Setting the parents a resource already has changes nothing, and is not refused.
        same = graph.parents.get(child) == tuple(sorted(parents))
        refused = not same and graph.refuses(child, parents)
        r = await api.client.put(
            f"/v1/resources/{child}", json={"parents": parents}, headers=api.admin
        )
        assert r.status_code == (422 if refused else 200 if child in graph.parents else 201), (
            op,
            r.text,
        )
        if refused:
            assert r.json()["errors"][0]["field"].startswith("parents"), r.text
        else:
            graph.put(child, parents)
    elif kind == "import":
        records = {child: [parent] for child, parent in op[1]}
        after = Graph(dict(graph.parents))
        changed = [c for c, ps in records.items() if graph.parents.get(c) != tuple(ps)]
        for c, ps in records.items():
            after.put(c, ps)
        refused = any(
            c in set().union(*(after.closure(p) for p in records[c][:1]))
            or after.above(c) + 1 + after.below(c) > MAX_DEPTH
            for c in changed
        )
        body = ndjson_lines(
            {"kind": "resource", "id": c, "parents": ps} for c, ps in records.items()
        )
        headers = api.headers(api.token("ops", scopes=("entitlements:import",)))
        r = await api.client.post(
            "/v1/imports", content=body, headers=headers | {"Content-Type": "application/x-ndjson"}
        )
        assert r.status_code == (422 if refused else 200), (op, r.text)
        if not refused:
            graph.parents = after.parents
        await api.state.follower.catch_up()
    else:  # raw: one more parent, past every check
        _, child, parent = op
        async with api.state.store.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO resources (id, type, revision)
                   SELECT r, split_part(r, ':', 1), 0 FROM unnest($1::text[]) AS r
                   ON CONFLICT (id) DO NOTHING""",
                [child, parent],
            )
            await conn.execute(
                "INSERT INTO resource_parents VALUES ($1, $2) ON CONFLICT DO NOTHING", child, parent
            )
            await bump_revision(conn, [("resource", child)])
        graph.put(child, sorted({*graph.parents.get(child, ()), parent}))
        await api.state.follower.catch_up()


async def answers(api: Api) -> list[dict[str, Any]]:
    user, roles = ALICE
    r = await api.client.post(
        "/v1/check/batch",
        json={
            "checks": [
                {"resource": rid, "action": "stream", "territory": "GB", "at": AT.isoformat()}
                for rid in NODES
            ]
        },
        headers=api.headers(api.token(user, roles=roles)),
    )
    assert r.status_code == 200, r.text
    results: list[dict[str, Any]] = r.json()["results"]
    return results


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=examples())
@example(case=ISSUE_CASES[0])
@example(case=ISSUE_CASES[1])
@example(case=ISSUE_CASES[2])
async def test_a_check_never_misses_a_deny_on_an_ancestor(
    apps: tuple[Api, Api], case: tuple[list[Op], list[GrantSpec]]
) -> None:
    cached, uncached = apps
    ops, grants = case
    await reset(cached)
    graph = Graph()
    for op in ops:
        await write(cached, graph, op)
    stored = await cached.state.store.pool.fetch("SELECT child, parent FROM resource_parents")
    assert sorted((r["child"], r["parent"]) for r in stored) == sorted(
        (c, p) for c, ps in graph.parents.items() for p in ps
    )
    # The start-up scan finds exactly the resources more than MAX_DEPTH levels deep.
    count, sample = await cached.state.store.too_deep_resources(limit=N)
    deep = {r for r in graph.parents if graph.above(r) >= MAX_DEPTH}
    assert (count, set(sample)) == (len(deep), deep)
    for g in grants:  # the store's write path (the grants are not what is under test)
        await cached.state.store.put_grant(
            grant_from_mapping(
                {
                    "id": g.gid,
                    "subject": g.subject,
                    "resource": g.resource,
                    "actions": ["stream"],
                    "territories": list(g.territories),
                    "effect": g.effect,
                }
            )
        )
    await cached.state.follower.catch_up()
    want = {rid: expected(graph, grants, rid) for rid in NODES}
    for app in (uncached, cached, cached):  # the second cached round is answered from L1
        for rid, got in zip(NODES, await answers(app), strict=True):
            deny, allow, whole = want[rid]
            summary = (rid, graph.above(rid), deny, allow, got)
            if deny:
                assert not got["allowed"], summary
            if whole:
                assert got["allowed"] == (allow and not deny), summary
            else:
                assert (got["allowed"], got["reason"], got["grant"]) == (False, "denied", None), (
                    summary
                )
    user, roles = ALICE
    listed = await cached.client.get(
        "/v1/entitlements",
        params={"action": "stream", "territory": "GB"},
        headers=cached.headers(cached.token(user, roles=roles)),
    )
    assert listed.status_code == 200, listed.text
    allowed = {rid for rid, (deny, allow, whole) in want.items() if whole and allow and not deny}
    assert {item["resource"] for item in listed.json()["items"]} == allowed
