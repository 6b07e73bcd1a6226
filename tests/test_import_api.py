"""``POST /v1/imports`` and ``GET /v1/imports/{id}`` through the app, against real Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support import Api, eventually, running, settings_for
from test_import_helpers import chunked, csv_text, grant_record, ndjson_lines

from entitlements.store.postgres import PostgresStore

IMPORTER = ("entitlements:import",)
NDJSON_TYPE = {"Content-Type": "application/x-ndjson"}


def importer(api: Api) -> dict[str, str]:
    return api.headers(api.token("ops", scopes=IMPORTER))


async def test_an_ndjson_upload_is_imported_and_its_report_kept(api: Api) -> None:
    data = ndjson_lines(grant_record(i) for i in range(2000))
    response = await api.client.post(
        "/v1/imports",
        content=chunked(data, 4096),
        headers=importer(api) | NDJSON_TYPE,
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["status"] == "committed" and report["created_by"] == "ops"
    assert report["counts"] == {
        "rows": 2000,
        "inserted": 2000,
        "updated": 0,
        "unchanged": 0,
        "deleted": 0,
        "rejected": 0,
    }
    assert response.headers["location"] == f"/v1/imports/{report['id']}"
    later = await api.client.get(response.headers["location"], headers=importer(api))
    assert later.status_code == 200 and later.json() == report


@pytest.mark.parametrize(
    ("query", "content_type"),
    [("", "text/csv; charset=utf-8"), ("?format=csv", "application/octet-stream")],
)
async def test_csv_by_content_type_or_query(api: Api, query: str, content_type: str) -> None:
    response = await api.client.post(
        f"/v1/imports{query}",
        content=csv_text(grant_record(i) for i in range(10)),
        headers=importer(api) | {"Content-Type": content_type},
    )
    assert response.status_code == 200, response.text
    assert response.json()["counts"]["inserted"] == 10


async def test_query_options_dry_run_and_replace_source(api: Api) -> None:
    data = ndjson_lines(grant_record(i) for i in range(5))
    response = await api.client.post(
        "/v1/imports?dry_run=true&replace_source=feed-a&skip_invalid=true",
        content=data,
        headers=importer(api) | NDJSON_TYPE,
    )
    report = response.json()
    assert report["status"] == "dry_run" and report["source"] == "feed-a"
    assert report["counts"]["inserted"] == 5 and report["skip_invalid"] is True
    assert await api.state.store.pool.fetchval("SELECT count(*) FROM grants") == 0


async def test_the_import_starts_before_the_upload_ends(clean: PostgresStore, pg_dsn: str) -> None:
    """The body is consumed as it arrives: rows are merged while the client still sends,
    and the API keeps answering checks from a pool of ONE connection meanwhile (the
    import's transaction has a connection of its own)."""
    async with running(settings_for(pg_dsn, pool_min_size=1, pool_max_size=1)) as (client, state):
        api = Api(client, state)

        async def body() -> AsyncIterator[bytes]:
            yield ndjson_lines(grant_record(i) for i in range(25_000))
            assert await eventually(lambda: _merging(clean.pool), timeout=30)
            carol = api.token("carol")
            ask = {"resource": "track:T0000001", "action": "stream", "territory": "GB"}
            decision = await asyncio.wait_for(api.check(carol, **ask), timeout=10)
            assert decision["reason"] == "not_licensed"  # not committed yet
            yield ndjson_lines(grant_record(i) for i in range(25_000, 30_000))

        response = await api.client.post(
            "/v1/imports", content=body(), headers=importer(api) | NDJSON_TYPE
        )
        assert response.status_code == 200, response.text
        assert response.json()["counts"]["inserted"] == 30_000


async def _merging(pool: Any) -> bool:
    """Has another session (the import) written to ``grants`` in its open transaction?"""
    held = await pool.fetchval(
        """SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
           WHERE c.relname = 'grants' AND l.mode = 'RowExclusiveLock'
             AND l.pid <> pg_backend_pid()"""
    )
    return bool(held)


async def test_a_refused_file_is_a_422_with_the_report_and_lands_nothing(api: Api) -> None:
    records = [grant_record(i) for i in range(100)]
    records[41] = records[41] | {"valid_from": "yesterday"}
    response = await api.client.post(
        "/v1/imports", content=ndjson_lines(records), headers=importer(api) | NDJSON_TYPE
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:entitlements:problem:import-failed"
    assert problem["errors"][0]["line"] == 42 and problem["errors"][0]["field"] == "valid_from"
    assert problem["import"]["status"] == "failed"
    assert await api.state.store.pool.fetchval("SELECT count(*) FROM grants") == 0
    later = await api.client.get(response.headers["location"], headers=importer(api))
    assert later.json()["status"] == "failed"


async def test_hostile_uploads_are_422_never_500(api: Api) -> None:
    for body in (b"", b"\xff\xfe\x00\x00", b"x" * 200_000 + b"\n", b'{"id":"a","id":"b"}\n'):
        response = await api.client.post(
            "/v1/imports", content=body, headers=importer(api) | NDJSON_TYPE
        )
        assert response.status_code == 422, response.text


async def test_unknown_format_is_415_and_bad_options_422(api: Api) -> None:
    response = await api.client.post("/v1/imports", content=b"x", headers=importer(api))
    assert response.status_code == 415
    assert response.json()["type"] == "urn:entitlements:problem:unsupported-media-type"
    response = await api.client.post(
        "/v1/imports?replace_source=bad%20name",
        content=b"x",
        headers=importer(api) | NDJSON_TYPE,
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "replace_source"
    response = await api.client.post(
        "/v1/imports?kind=deal", content=b"x", headers=importer(api) | NDJSON_TYPE
    )
    assert response.status_code == 422


async def test_imports_need_the_import_scope(api: Api) -> None:
    data = ndjson_lines([grant_record(1)])
    response = await api.client.post("/v1/imports", content=data, headers=NDJSON_TYPE)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    for scopes in [(), ("entitlements:admin",)]:
        headers = api.headers(api.token("ops", scopes=scopes))
        response = await api.client.post("/v1/imports", content=data, headers=headers | NDJSON_TYPE)
        assert response.status_code == 403
        response = await api.client.get("/v1/imports/x", headers=headers)
        assert response.status_code == 403
    assert await api.state.store.pool.fetchval("SELECT count(*) FROM imports") == 0


async def test_an_unknown_import_is_404(api: Api) -> None:
    response = await api.client.get("/v1/imports/nope", headers=importer(api))
    assert response.status_code == 404


async def test_a_check_after_an_import_sees_the_new_rights(api: Api) -> None:
    alice = api.token("alice", roles=("plan:premium",))
    ask = {"resource": "track:T0000005", "action": "stream", "territory": "GB"}
    assert (await api.check(alice, **ask))["reason"] == "not_licensed"  # now cached
    assert (await api.check(alice, **ask))["reason"] == "not_licensed"
    record = grant_record(5) | {"subject": "role:plan:premium", "territories": ["GB"]}
    response = await api.client.post(
        "/v1/imports", content=ndjson_lines([record]), headers=importer(api) | NDJSON_TYPE
    )
    revision = response.json()["revision"]
    fresh = await api.check(alice, **ask, min_revision=revision)
    assert fresh["allowed"] is True and fresh["grant"] == "g0000005"

    async def allowed() -> bool:
        return bool((await api.check(alice, **ask))["allowed"])

    assert await eventually(allowed, timeout=api.state.settings.staleness + 5)


async def test_a_big_import_invalidates_every_cached_answer(api: Api) -> None:
    alice = api.token("alice", roles=("plan:free",))
    ask = {"resource": "track:T0011113", "action": "stream", "territory": "US"}
    assert not (await api.check(alice, **ask))["allowed"]
    data = ndjson_lines(grant_record(i) for i in range(12_000))  # > 10,000 keys: one 'all'
    response = await api.client.post(
        "/v1/imports", content=chunked(data), headers=importer(api) | NDJSON_TYPE
    )
    assert response.json()["status"] == "committed"

    async def allowed() -> bool:
        return bool((await api.check(alice, **ask))["allowed"])

    assert await eventually(allowed, timeout=api.state.settings.staleness + 5)


async def test_the_imports_are_in_the_openapi_document(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    post = spec["paths"]["/v1/imports"]["post"]
    assert set(post["requestBody"]["content"]) == {
        "text/csv",
        "application/x-ndjson",
        "application/xml",
    }
    assert {p["name"] for p in post["parameters"]} >= {"format", "dry_run", "replace_source"}
    assert "/v1/imports/{import_id}" in spec["paths"]
