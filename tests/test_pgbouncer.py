"""The API through a real PgBouncer (the OS package, 1.18) in transaction pooling mode.

Four server connections for everything (``default_pool_size=4``; two imports hold one each), shared by two
app instances ("workers") and their imports: any session state (a named prepared
statement, a session ``SET``, a session advisory lock, LISTEN) would surface here
as an error or as a missed change. LISTEN goes to the direct DSN
(``ENTITLEMENTS_DATABASE_LISTEN_URL``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pgbouncer_server import PgBouncer
from servers import PgBouncerFactory
from support import Api, eventually, running, settings_for
from test_import_helpers import chunked, grant_record, ndjson_lines

from entitlements.settings import Settings
from entitlements.store.postgres import PostgresStore

pytestmark = pytest.mark.servers

IMPORTER = ("entitlements:import",)
DDEX = Path(__file__).parent / "ddex"
NDJSON_TYPE = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
async def bouncer(pgbouncer_factory: PgBouncerFactory, pg_dsn: str) -> AsyncIterator[PgBouncer]:
    bouncer = await pgbouncer_factory(pg_dsn, {"default_pool_size": "4"})
    try:
        yield bouncer
    finally:
        await bouncer.close()


def pooled_settings(bouncer: PgBouncer, pg_dsn: str, **overrides: object) -> Settings:
    return settings_for(
        bouncer.dsn_for(pg_dsn),
        database_pooler="pgbouncer",
        database_listen_url=pg_dsn,
        staleness=30.0,  # a missed NOTIFY would show: the poll alone would take 1 s
        **overrides,
    )


async def test_checks_writes_feed_and_imports_through_pgbouncer(
    clean: PostgresStore, pg_dsn: str, bouncer: PgBouncer
) -> None:
    settings = pooled_settings(bouncer, pg_dsn)
    async with running(settings) as (c1, s1), running(settings) as (c2, s2):
        one, two = Api(c1, s1), Api(c2, s2)
        reader = one.token("svc", scopes=("entitlements:check:any",))
        alice = one.token("alice", roles=("plan:premium",))
        await one.put_resource("release:r1", ["label:acme"])
        await one.put_resource("track:t1", ["release:r1"])
        body = dict(resource="track:t1", action="stream", territory="GB")
        # The second worker caches a deny...
        assert (await two.check(alice, **body))["allowed"] is False
        written = await one.put_grant(
            "g1", subject="role:plan:premium", resource="label:acme", actions=["stream"],
            territories=["*"],
        )  # fmt: skip
        revision = written.json()["revision"]
        # ...and drops it when the change reaches it through the feed (LISTEN, direct).
        assert await eventually(lambda: _allowed(two, alice, body), timeout=5.0), (
            "the change never reached the second worker"
        )
        assert (await two.check(alice, **body, min_revision=revision))["allowed"] is True

        feed = await c2.get(
            "/v1/changes", params={"since": revision - 1}, headers=two.headers(reader)
        )
        assert feed.status_code == 200, feed.text
        assert {"revision": revision, "kind": "resource", "key": "label:acme"} in feed.json()[
            "changes"
        ]

        # Imports (COPY, their own connection, the live marker lock) while checks run.
        async def import_batch(prefix: str) -> dict[str, object]:
            data = ndjson_lines(grant_record(i, prefix=prefix) for i in range(500))
            response = await c1.post(
                "/v1/imports",
                content=chunked(data, 4096),
                headers=one.headers(one.token("ops", scopes=IMPORTER)) | NDJSON_TYPE,
            )
            assert response.status_code == 200, response.text
            report: dict[str, object] = response.json()
            return report

        async def checks() -> int:
            n = 0
            for _ in range(50):
                assert (await two.check(alice, **body))["allowed"] is True
                assert (await one.check(alice, **body))["allowed"] is True
                n += 2
            return n

        first, second, n = await asyncio.gather(import_batch("a"), import_batch("b"), checks())
        assert (first["status"], second["status"], n) == ("committed", "committed", 100)
        # Twice more on the same PgBouncer server connections: no statement left behind.
        assert (await import_batch("c"))["status"] == "committed"
        listed = await c2.get("/v1/grants", params={"limit": 5}, headers=two.admin)
        assert listed.status_code == 200, listed.text


async def test_a_ddex_import_through_pgbouncer(
    clean: PostgresStore, pg_dsn: str, bouncer: PgBouncer
) -> None:
    """DDEX: TEMP staging tables (ON COMMIT DROP) and its own statements, twice on the
    same server connections."""
    body = (DDEX / "ern43_album.xml").read_bytes()
    async with running(pooled_settings(bouncer, pg_dsn)) as (client, state):
        api = Api(client, state)
        headers = api.headers(api.token("ops", scopes=IMPORTER)) | {
            "Content-Type": "application/xml"
        }
        for inserted in (4, 0):  # the second time: nothing new, nothing left behind
            response = await client.post("/v1/imports", content=body, headers=headers)
            assert response.status_code == 200, response.text
            report = response.json()
            assert report["status"] == "committed"
            assert report["counts"]["inserted"] == inserted


async def test_without_a_listen_url_the_feed_is_polled(
    clean: PostgresStore, pg_dsn: str, bouncer: PgBouncer
) -> None:
    settings = settings_for(bouncer.dsn_for(pg_dsn), database_pooler="pgbouncer", staleness=1.0)
    async with running(settings) as (c1, s1), running(settings) as (c2, s2):
        one, two = Api(c1, s1), Api(c2, s2)
        alice = one.token("alice")
        body = dict(resource="track:p1", action="stream", territory="GB")
        assert (await two.check(alice, **body))["allowed"] is False
        await one.put_grant(
            "p1", subject="user:alice", resource="track:p1", actions=["stream"], territories=["*"]
        )
        assert await eventually(lambda: _allowed(two, alice, body), timeout=5.0)


async def _allowed(api: Api, token: str, body: dict[str, str]) -> bool:
    return bool((await api.check(token, **body))["allowed"])
