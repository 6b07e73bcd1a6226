"""The audit of changes (issue 15): who changed what, before and after, through
``GET /v1/audit`` — changes made through the API, and through the CLI (a real process)."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from support import Api

ENTITLEMENTS = str(Path(sys.executable).with_name("entitlements"))
GRANT: dict[str, Any] = {
    "subject": "role:plan:premium",
    "resource": "label:acme",
    "actions": ["stream"],
    "territories": ["GB"],
}


def cli(dsn: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTITLEMENTS_")}
    env["ENTITLEMENTS_DATABASE_URL"] = dsn
    return subprocess.run(
        [ENTITLEMENTS, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def audit(api: Api, **params: Any) -> dict[str, Any]:
    response = await api.client.get("/v1/audit", params=params, headers=api.admin)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    page: dict[str, Any] = response.json()
    return page


async def test_a_grant_changed_through_the_api_is_audited_with_before_and_after(
    api: Api,
) -> None:
    await api.put_grant("g1", **GRANT)
    await api.put_grant("g1", **GRANT)  # unchanged: nothing to audit
    await api.put_grant("g1", **{**GRANT, "territories": ["GB", "FR"]})
    await api.put_resource("track:t1", ["label:acme"])
    await api.put_resource("track:t1", ["label:acme", "release:r1"])
    deleted = await api.client.delete("/v1/grants/g1", headers=api.admin)
    assert deleted.status_code == 200

    page = await audit(api, grant="g1")
    assert [e["action"] for e in page["items"]] == ["grant.delete", "grant.put", "grant.put"]
    gone, changed, created = page["items"]
    assert {e["actor"] for e in page["items"]} == {"ops"}  # the admin token's subject
    assert created["before"] is None and created["after"]["territories"] == ["GB"]
    assert changed["before"]["territories"] == ["GB"]
    assert changed["after"]["territories"] == ["FR", "GB"]
    assert changed["resource"] == "label:acme" and changed["grant"] == "g1"
    assert gone["before"]["territories"] == ["FR", "GB"] and gone["after"] is None
    assert gone["id"] > changed["id"] > created["id"]

    resource = await audit(api, resource="track:t1")
    assert [(e["before"], e["after"]) for e in resource["items"]] == [
        ({"parents": ["label:acme"]}, {"parents": ["label:acme", "release:r1"]}),
        (None, {"parents": ["label:acme"]}),
    ]
    assert (await audit(api, actor="someone-else"))["items"] == []

    # Keyset pagination: newest first, a page at a time, every entry once.
    seen: list[int] = []
    cursor: str | None = None
    while True:
        page = await audit(api, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and seen == sorted(seen, reverse=True)


async def test_a_grant_changed_by_a_cli_import_is_one_entry_with_its_report(
    api: Api, pg_dsn: str, tmp_path: Path
) -> None:
    await api.put_grant("g1", **GRANT)
    path = tmp_path / "deals.ndjson"
    path.write_bytes(
        b"".join(
            orjson.dumps(r) + b"\n"
            for r in (
                {"id": "g1", **GRANT, "territories": ["GB", "DE"]},
                {"id": "g2", **GRANT, "resource": "label:indigo"},
            )
        )
    )
    done = cli(pg_dsn, "import", path)
    assert done.returncode == 0, done.stderr

    actor = f"cli:{getpass.getuser()}"
    page = await audit(api, actor=actor)
    [entry] = page["items"]  # one entry for the whole import
    assert entry["action"] == "import"
    assert entry["detail"]["counts"]["inserted"] == 1
    assert entry["detail"]["counts"]["updated"] == 1
    assert entry["detail"]["created_by"] == actor
    assert entry["before"]["g1"]["territories"] == ["GB"]
    assert entry["after"]["g1"]["territories"] == ["DE", "GB"]
    # The grant's own history shows the API write and the import, newest first.
    history = await audit(api, grant="g1")
    assert [(e["action"], e["actor"]) for e in history["items"]] == [
        ("import", actor),
        ("grant.put", "ops"),
    ]


async def test_a_key_rotation_from_the_cli_is_audited(api: Api, pg_dsn: str) -> None:
    done = cli(pg_dsn, "keys", "rotate")
    assert done.returncode == 0, done.stderr
    [entry] = (await audit(api, actor=f"cli:{getpass.getuser()}"))["items"]
    assert entry["action"] == "key.rotate" and entry["detail"]["kid"] in done.stdout


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"cursor": "not a cursor"},
        {"cursor": "bm90LWFuLWlk"},  # base64 of text that is not an entry id
        {"resource": "no type"},
        {"grant": "bad id with spaces"},
        {"actor": ""},
        {"actor": "x" * 601},
    ],
)
async def test_bad_parameters_are_422(api: Api, params: dict[str, str]) -> None:
    response = await api.client.get("/v1/audit", params=params, headers=api.admin)
    assert response.status_code == 422, response.text


async def test_only_admins_read_the_audit(api: Api) -> None:
    assert (await api.client.get("/v1/audit")).status_code == 401
    user = api.headers(api.token("alice", scopes=("entitlements:import",)))
    assert (await api.client.get("/v1/audit", headers=user)).status_code == 403


async def test_a_revocation_is_audited_with_who_revoked(api: Api) -> None:
    from test_exchange import exchange

    alice = api.token("alice", scopes=("orders:fulfil",))
    jti = (await exchange(api, alice, audience="orders", scope="orders:fulfil")).json()["jti"]
    revoked = await api.client.post(
        "/v1/token/revoke", json={"jti": jti}, headers=api.headers(alice)
    )
    assert revoked.status_code == 200
    [entry] = (await audit(api, actor="alice"))["items"]
    assert entry["action"] == "token.revoke"
    assert entry["detail"] == {"jti": jti, "subject": "alice"}
