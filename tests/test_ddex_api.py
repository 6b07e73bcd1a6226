"""DDEX ERN messages through ``POST /v1/imports`` and ``GET /v1/imports/{id}``: the report,
hostile XML as a 4xx problem with nothing imported, and the caches."""

from __future__ import annotations

from pathlib import Path

import pytest
from ddex_support import SENDER, Deal, Recording, Release, ern
from support import Api, eventually, running, settings_for
from test_ddex_hostile import ROOT, with_doctype

from entitlements.store.postgres import PostgresStore

HERE = Path(__file__).parent / "ddex"
XML = {"Content-Type": "application/xml"}
IMPORTER = ("entitlements:import",)
ASK = {
    "resource": "track:USRC17607839",
    "action": "stream",
    "territory": "GB",
    "at": "2026-06-01T00:00:00Z",
}


def importer(api: Api) -> dict[str, str]:
    return api.headers(api.token("ops", scopes=IMPORTER))


async def grants(api: Api) -> int:
    return int(await api.state.store.pool.fetchval("SELECT count(*) FROM grants"))


async def test_an_ern_message_is_imported_and_its_report_kept(api: Api) -> None:
    body = (HERE / "ern43_album.xml").read_bytes()
    response = await api.client.post("/v1/imports", content=body, headers=importer(api) | XML)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["status"], report["format"], report["kind"]) == ("committed", "ddex", "grant")
    assert report["counts"] == {
        "rows": 4,
        "inserted": 4,
        "updated": 0,
        "unchanged": 0,
        "deleted": 0,
        "rejected": 0,
    }
    ddex = report["ddex"]
    assert (ddex["messages"], ddex["releases"], ddex["deals"], ddex["grants"]) == (1, 3, 6, 4)
    assert ddex["skipped_deals"] == {"channel": 1, "video": 1}
    (line,) = ddex["lines"]
    assert (line["message"], line["message_id"], line["status"]) == (
        "message.xml",
        "ACME-2026-0001",
        "applied",
    )
    later = await api.client.get(response.headers["location"], headers=importer(api))
    assert later.status_code == 200 and later.json() == report
    alice = api.token("alice", roles=("ddex:SubscriptionModel",))
    decision = await api.check(alice, **ASK, min_revision=report["revision"])
    assert decision["allowed"] is True


@pytest.mark.parametrize(
    ("query", "content_type"), [("?format=ddex", "application/octet-stream"), ("", "text/xml")]
)
async def test_by_query_or_text_xml(api: Api, query: str, content_type: str) -> None:
    response = await api.client.post(
        f"/v1/imports{query}",
        content=(HERE / "ern382_album.xml").read_bytes(),
        headers=importer(api) | {"Content-Type": content_type},
    )
    assert response.status_code == 200, response.text
    assert response.json()["ddex"]["lines"][0]["version"] == "3.8.2"


def hostile(tmp: Path) -> dict[str, tuple[bytes, str]]:
    """Hostile or broken messages, and what the problem says about each."""
    secret = tmp / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    doctype = "has a DOCTYPE declaration; DTDs and entities are not allowed"
    laughs = "".join(
        ['<!ENTITY lol0 "lol">']
        + [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    )
    good = ern()
    return {
        "xxe_file": (
            with_doctype(f'<!DOCTYPE x [<!ENTITY xxe SYSTEM "file://{secret}">]>'),
            doctype,
        ),
        "xxe_url": (
            with_doctype('<!DOCTYPE x [<!ENTITY xxe SYSTEM "http://127.0.0.1:9/steal">]>'),
            doctype,
        ),
        "billion_laughs": (with_doctype(f"<!DOCTYPE lolz [{laughs}]>"), doctype),
        "external_dtd": (
            with_doctype('<!DOCTYPE x SYSTEM "http://127.0.0.1:9/ern.dtd">', "<MessageHeader/>"),
            doctype,
        ),
        "wrong_namespace": (
            ern(namespace="http://ddex.net/xml/ern/99"),
            "not an ERN 3.4.1-3.8.2 or 4.1-4.3 namespace",
        ),
        "not_ern": (b'<?xml version="1.0"?><catalog><item/></catalog>', "no namespace"),
        "truncated": (good[: len(good) // 2], "is not well-formed XML"),
        "unknown_release": (
            ern(deals=((("R7",), (Deal(),)),)),
            "which is not in the message's ReleaseList",
        ),
        "invalid_date": (
            ern(deals=((("R0",), (Deal(periods=(("2026-02-30", None),)),)),)),
            "2026-02-30",
        ),
        "bad_territory": (
            ern(deals=((("R0",), (Deal(territories=("UK",)),)),)),
            "'UK' is not an ISO 3166-1 alpha-2 code",
        ),
        "empty": (b"", "is empty"),
        "root_only": (f"{ROOT}</ern:NewReleaseMessage>".encode(), "has no MessageHeader"),
    }


async def test_hostile_xml_is_a_4xx_problem_naming_it_and_imports_nothing(
    api: Api, tmp_path: Path
) -> None:
    for name, (body, says) in hostile(tmp_path).items():
        response = await api.client.post("/v1/imports", content=body, headers=importer(api) | XML)
        assert response.status_code == 422, (name, response.text)
        assert response.headers["content-type"] == "application/problem+json", name
        problem = response.json()
        assert problem["type"] == "urn:entitlements:problem:import-failed", name
        assert says in problem["detail"], (name, problem["detail"])
        assert "TOP-SECRET" not in response.text
        assert problem["import"]["status"] == "failed", name
    assert await grants(api) == 0
    count = await api.state.store.pool.fetchval("SELECT count(*) FROM ddex_releases")
    assert count == 0


async def test_options_that_do_not_apply_to_ddex_are_refused(api: Api) -> None:
    for query, field in [
        ("replace_source=acme", "replace_source"),
        ("skip_invalid=true", "skip_invalid"),
        ("kind=resource", "kind"),
    ]:
        response = await api.client.post(
            f"/v1/imports?{query}", content=ern(), headers=importer(api) | XML
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == field
    assert await grants(api) == 0


async def test_a_cached_allow_turns_not_licensed_after_a_purge(
    clean: PostgresStore, pg_dsn: str
) -> None:
    # Cached answers would live a minute: only the import's change record can drop them.
    async with running(settings_for(pg_dsn, staleness=60)) as (client, state):
        api = Api(client, state)
        album = ern(
            created="2026-03-01T00:00:00Z",
            recordings=(Recording("A1", "USRC17607839"),),
            releases=(
                Release("R0", ("A1",), icpn="0602527894567"),
                Release("R1", ("A1",), proprietary=(SENDER, "TR-1"), track=True),
            ),
            deals=((("R0",), (Deal(),)), (("R1",), (Deal(models=("PayAsYouGoModel",)),))),
        )
        response = await api.client.post("/v1/imports", content=album, headers=importer(api) | XML)
        revision = response.json()["revision"]
        for role in ("ddex:SubscriptionModel", "ddex:PayAsYouGoModel"):
            token = api.token("alice", roles=(role,))
            fresh = await api.check(token, **ASK, min_revision=revision)
            assert fresh["allowed"] is True
            assert (await api.check(token, **ASK))["allowed"] is True  # served from the cache
        purge = ern(
            root="PurgeReleaseMessage",
            created="2026-05-01T00:00:00Z",
            purged={"ICPN": "0602527894567"},
        )
        response = await api.client.post("/v1/imports", content=purge, headers=importer(api) | XML)
        assert response.status_code == 200, response.text
        assert response.json()["counts"]["deleted"] == 2
        for role in ("ddex:SubscriptionModel", "ddex:PayAsYouGoModel"):
            token = api.token("alice", roles=(role,))

            async def gone(token: str = token) -> bool:
                decision = await api.check(token, **ASK)
                return bool(decision["reason"] == "not_licensed")

            assert await eventually(gone, timeout=10)


async def test_the_openapi_document_shows_xml_and_the_ddex_report(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    post = spec["paths"]["/v1/imports"]["post"]
    assert "application/xml" in post["requestBody"]["content"]
    formats = next(p for p in post["parameters"] if p["name"] == "format")
    assert "ddex" in str(formats["schema"])
    report = post["responses"]["200"]["content"]["application/json"]["schema"]
    assert "ddex" in report["properties"]["format"]["enum"]
    assert {"messages", "stale", "lines", "skipped_deals"} <= set(
        report["properties"]["ddex"]["properties"]
    )
    get = spec["paths"]["/v1/imports/{import_id}"]["get"]
    assert "ddex" in get["responses"]["200"]["content"]["application/json"]["schema"]["properties"]


async def test_the_server_reads_uploads_with_its_mapping(
    clean: PostgresStore, pg_dsn: str, tmp_path: Path
) -> None:
    mapping = tmp_path / "mapping.json"
    mapping.write_text('{"subjects": {"SubscriptionModel": "role:plan:premium"}}')
    async with running(settings_for(pg_dsn, ddex_mapping=mapping)) as (client, state):
        api = Api(client, state)
        response = await api.client.post("/v1/imports", content=ern(), headers=importer(api) | XML)
        assert response.status_code == 200, response.text
        revision = response.json()["revision"]
        premium = api.token("alice", roles=("plan:premium",))
        assert (await api.check(premium, **ASK, min_revision=revision))["allowed"] is True
        ddex = api.token("bob", roles=("ddex:SubscriptionModel",))
        assert (await api.check(ddex, **ASK, min_revision=revision))["allowed"] is False
