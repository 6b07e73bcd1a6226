"""schema.sql: a database made by an earlier schema is brought up to date at start."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from entitlements.domain.model import grant_from_mapping, resource_from_mapping
from entitlements.store.postgres import PostgresStore

# The identifier tables as the first release created them: the database's default
# collation, and a partial index for the shared grants of a resource.
EARLIER_SCHEMA = """
CREATE TABLE ent_revision (singleton boolean PRIMARY KEY DEFAULT true, value bigint NOT NULL);
INSERT INTO ent_revision VALUES (true, 7);
CREATE TABLE resources (id text PRIMARY KEY, type text NOT NULL, revision bigint NOT NULL,
                        updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE resource_parents (
    child text NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    parent text NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    PRIMARY KEY (child, parent));
CREATE TABLE grants (
    id text PRIMARY KEY, subject text NOT NULL, resource text NOT NULL,
    actions text[] NOT NULL, territories text[] NOT NULL,
    exclude_territories text[] NOT NULL DEFAULT '{}', valid_from timestamptz,
    valid_until timestamptz, effect text NOT NULL DEFAULT 'allow', attributes jsonb,
    source text, revision bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX grants_resource_subject ON grants (resource, subject);
CREATE INDEX grants_resource_shared ON grants (resource, subject)
    WHERE NOT starts_with(subject, 'user:');
CREATE INDEX grants_subject_resource ON grants (subject, resource);
INSERT INTO resources (id, type, revision) VALUES ('release:r1', 'release', 1),
                                                  ('track:t1', 'track', 1);
INSERT INTO resource_parents VALUES ('track:t1', 'release:r1');
INSERT INTO grants (id, subject, resource, actions, territories, revision) VALUES
    ('deal', 'role:plan:premium', 'release:r1', '{stream}', '{GB}', 1),
    ('buy', 'user:ann', 'track:t1', '{download}', '{*}', 1);
"""

IDENTIFIERS = {
    ("grants", "id"),
    ("grants", "subject"),
    ("grants", "resource"),
    ("grants", "source"),
    ("resources", "id"),
    ("resources", "type"),
    ("resource_parents", "child"),
    ("resource_parents", "parent"),
}


@pytest.fixture
async def earlier_dsn(admin_dsn: str) -> AsyncIterator[str]:
    name = f"entitlements_schema_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = urlunsplit(urlsplit(admin_dsn)._replace(path="/" + name))  # host may be a socket
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(EARLIER_SCHEMA)
    finally:
        await conn.close()
    try:
        yield dsn
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def test_earlier_database_is_converted_and_keeps_its_data(earlier_dsn: str) -> None:
    store = await PostgresStore.open(earlier_dsn, min_size=1, max_size=2)
    try:
        rows = await store.pool.fetch(
            """SELECT table_name, column_name, collation_name FROM information_schema.columns
               WHERE table_schema = current_schema() AND data_type = 'text'"""
        )
        collations = {(r["table_name"], r["column_name"]): r["collation_name"] for r in rows}
        assert {k: collations[k] for k in IDENTIFIERS} == dict.fromkeys(IDENTIFIERS, "C")
        indexes = {r[0] for r in await store.pool.fetch("SELECT indexname FROM pg_indexes")}
        assert "grants_resource_shared" not in indexes
        assert {"grants_resource_subject", "grants_subject"} <= indexes
        assert "grants_subject_resource" not in indexes

        # Nothing lost, and the old rows answer checks and views as before.
        data = await store.load_check("track:t1", ["user:ann", "role:plan:premium", "*"])
        assert data.ancestors == {"track:t1", "release:r1"}
        assert {g.id for g in data.grants} == {"deal", "buy"}
        view = await store.load_resource_view("track:t1")
        assert {g.id for g in view.grants} == {"deal"}
        assert view.revision == 7

        # New writes work on the converted tables, and a second start changes nothing.
        await store.put_resource(
            resource_from_mapping({"id": "track:t2", "parents": ["release:r1"]})
        )
        grant = {"id": "g2", "subject": "*", "resource": "track:t2", "actions": ["stream"]}
        await store.put_grant(grant_from_mapping({**grant, "territories": ["FR"]}))
    finally:
        await store.close()
    again = await PostgresStore.open(earlier_dsn, min_size=1, max_size=1)
    try:
        assert await again.pool.fetchval("SELECT count(*) FROM grants") == 3
    finally:
        await again.close()


async def test_resource_view_reads_only_shared_grants_from_the_index(clean: PostgresStore) -> None:
    """A hot track's purchases are not read for its view: the index range stops before them."""
    store = clean
    await store.put_grant(
        grant_from_mapping(
            {
                "id": "deal",
                "subject": "*",
                "resource": "track:hot",
                "actions": ["stream"],
                "territories": ["*"],
            }
        )
    )
    for i in range(30):
        await store.put_grant(
            grant_from_mapping(
                {
                    "id": f"buy{i}",
                    "subject": f"user:u{i}",
                    "resource": "track:hot",
                    "actions": ["download"],
                    "territories": ["*"],
                }
            )
        )
    view = await store.load_resource_view("track:hot")
    assert [g.id for g in view.grants] == ["deal"]
    async with store.pool.acquire() as conn:
        await conn.execute("SET enable_seqscan = off")  # a tiny table: ask for the index plan
        raw = await conn.fetchval(
            "EXPLAIN (FORMAT JSON, ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + store._VIEW_SQL,
            ["track:hot"],
        )
        await conn.execute("RESET enable_seqscan")
    plan = json.loads(raw) if isinstance(raw, str) else raw
    scans = list(_nodes(plan[0]["Plan"] if isinstance(plan, list) else plan))
    on_grants = [n for n in scans if n.get("Index Name") == "grants_resource_subject"]
    assert on_grants, "the view does not use grants_resource_subject"
    # The index range stops before the purchases: one row read, none filtered out.
    assert all("subject < 'user:'" in n["Index Cond"] for n in on_grants)
    assert sum(n["Actual Rows"] for n in on_grants) == 1
    assert all(n.get("Rows Removed by Filter", 0) == 0 for n in scans)


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)
