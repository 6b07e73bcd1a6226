"""Two trusted issuers at the API: each has its own users and only the scopes it is allowed.

``sub`` is unique only within its issuer: ``sub=bob`` from two IdPs is two users
(``<issuer>|bob``), and neither is the service's own ``bob``, unless an issuer is
configured to share (``"subject_prefix": ""``). An IdP's ``entitlements:*`` scopes
count only when its ``allowed_scopes`` lists them.
"""

from __future__ import annotations

import json
import logging
from base64 import urlsafe_b64decode
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hostile_tokens import KeyBundle, mint
from pydantic import ValidationError
from support import Api, running, settings_for

from entitlements.settings import Settings
from entitlements.store.postgres import PostgresStore

IDP_A = "https://idp-a.example.test"
IDP_B = "https://idp-b.example.test/realms/music"
BOB_A = f"{IDP_A}|bob"
BOB_B = f"{IDP_B}|bob"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
EVERY_SCOPE = (
    "entitlements:check entitlements:check:any entitlements:admin"
    " entitlements:import entitlements:exchange"
)
STREAM_GB = {"action": "stream", "territory": "GB"}


@pytest.fixture(scope="module")
def keys_a() -> KeyBundle:
    return KeyBundle.generate()


@pytest.fixture(scope="module")
def keys_b() -> KeyBundle:
    return KeyBundle.generate()


class Idps:
    """Two IdPs the service trusts, each with its own key set in a JWKS file."""

    def __init__(self, tmp_path: Path, a: KeyBundle, b: KeyBundle) -> None:
        self.keys = {IDP_A: a, IDP_B: b}
        self.files = {}
        for name, (issuer, bundle) in zip("ab", self.keys.items(), strict=True):
            path = tmp_path / f"jwks-{name}.json"
            path.write_text(json.dumps(bundle.jwks))
            self.files[issuer] = str(path)

    def item(self, issuer: str, **policy: Any) -> dict[str, Any]:
        """One ``ENTITLEMENTS_TRUSTED_ISSUERS`` entry, plus ``policy``."""
        return {
            "issuer": issuer,
            "jwks_file": self.files[issuer],
            "audience": "entitlements",
            **policy,
        }

    def token(self, issuer: str, sub: str = "bob", scope: str = "entitlements:check") -> str:
        return mint(self.keys[issuer], issuer, "entitlements", claims={"sub": sub, "scope": scope})


@pytest.fixture
def idps(tmp_path: Path, keys_a: KeyBundle, keys_b: KeyBundle) -> Idps:
    return Idps(tmp_path, keys_a, keys_b)


@asynccontextmanager
async def service(pg_dsn: str, *issuers: dict[str, Any], **options: Any) -> AsyncIterator[Api]:
    async with running(settings_for(pg_dsn, trusted_issuers=list(issuers), **options)) as (
        client,
        state,
    ):
        yield Api(client, state)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def allowed(api: Api, token: str, resource: str) -> bool:
    r = await api.client.post(
        "/v1/check", json={"resource": resource, **STREAM_GB}, headers=auth(token)
    )
    assert r.status_code == 200, r.text
    return bool(r.json()["allowed"])


async def listed(api: Api, token: str) -> list[str]:
    r = await api.client.get("/v1/entitlements", params=STREAM_GB, headers=auth(token))
    assert r.status_code == 200, r.text
    return [item["resource"] for item in r.json()["items"]]


async def purchases(api: Api) -> None:
    """One purchase per user id: A's bob, B's bob and the service's own (bare) bob."""
    for gid, user, track in (
        ("buy-a", BOB_A, "track:a"),
        ("buy-b", BOB_B, "track:b"),
        ("buy-bare", "bob", "track:bare"),
    ):
        await api.put_grant(
            gid, subject=f"user:{user}", resource=track, actions=["stream"], territories=["*"]
        )


def payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    claims: dict[str, Any] = json.loads(urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return claims


async def test_the_same_sub_from_two_issuers_is_two_users(
    clean: PostgresStore, pg_dsn: str, redis_url: str, redis_prefix: str, idps: Idps
) -> None:
    cfg = {"redis_url": redis_url, "redis_prefix": redis_prefix}
    issuers = (idps.item(IDP_A), idps.item(IDP_B))
    async with service(pg_dsn, *issuers, **cfg) as api:
        await purchases(api)
        bob_a, bob_b, bob_bare = idps.token(IDP_A), idps.token(IDP_B), api.token("bob")
        # Asked in turns, so every answer after the first meets the others' cached grants.
        for _ in range(2):
            assert [await allowed(api, bob_a, t) for t in ("track:a", "track:b", "track:bare")] == [
                True,
                False,
                False,
            ]
            assert [await allowed(api, bob_b, t) for t in ("track:a", "track:b", "track:bare")] == [
                False,
                True,
                False,
            ]
            assert [
                await allowed(api, bob_bare, t) for t in ("track:a", "track:b", "track:bare")
            ] == [False, False, True]
        assert await listed(api, bob_a) == ["track:a"]
        assert await listed(api, bob_b) == ["track:b"]
        assert await listed(api, bob_bare) == ["track:bare"]
        # A trusted service names an IdP's user by that user id (it passes validation).
        svc = api.token("svc-player", scopes=("entitlements:check:any",))
        r = await api.client.post(
            "/v1/check",
            json={"resource": "track:b", "subject": BOB_B, **STREAM_GB},
            headers=auth(svc),
        )
        assert r.status_code == 200 and r.json()["allowed"] is True, r.text
    # Another worker, cold L1, the same Redis: the answers it reads from L2 keep them apart.
    async with service(pg_dsn, *issuers, **cfg) as other:
        assert not await allowed(other, idps.token(IDP_B), "track:a")
        assert await allowed(other, idps.token(IDP_A), "track:a")


async def test_an_issuer_configured_to_share_uses_the_bare_namespace(
    clean: PostgresStore, pg_dsn: str, idps: Idps
) -> None:
    issuers = (idps.item(IDP_A), idps.item(IDP_B, subject_prefix=""))
    async with service(pg_dsn, *issuers) as api:
        await purchases(api)
        bob_b = idps.token(IDP_B)
        assert await allowed(api, bob_b, "track:bare")
        assert not await allowed(api, bob_b, "track:b")
        assert await listed(api, bob_b) == ["track:bare"]
        assert not await allowed(api, idps.token(IDP_A), "track:bare")


async def exchange(api: Api, user_token: str, actor: str, **form: str) -> httpx.Response:
    data = {"grant_type": EXCHANGE, "subject_token": user_token, **form}
    return await api.client.post("/v1/token/exchange", data=data, headers=auth(actor))


async def test_exchange_and_revoke_keep_the_issuers_users_apart(
    clean: PostgresStore, pg_dsn: str, idps: Idps
) -> None:
    async with service(pg_dsn, idps.item(IDP_A), idps.item(IDP_B)) as api:
        await purchases(api)
        svc = api.token("svc-orders", scopes=("entitlements:exchange",))
        r = await exchange(
            api, idps.token(IDP_A), svc, audience="entitlements", scope="entitlements:check"
        )
        assert r.status_code == 200, r.text
        exchanged, jti = r.json()["access_token"], r.json()["jti"]

        async def revoke(token: str) -> int:
            r = await api.client.post("/v1/token/revoke", json={"jti": jti}, headers=auth(token))
            return r.status_code

        # Not B's bob, not our own bob: only A's bob (or the holder, or an admin).
        assert await revoke(idps.token(IDP_B)) == 403
        assert await revoke(api.token("bob")) == 403
        claims = payload(exchanged)
        assert claims["sub"] == BOB_A, "the exchanged token names the namespaced user"
        assert claims["act"] == {"sub": "svc-orders", "iss": api.state.settings.issuer}
        # ...and is that user wherever it is used.
        assert await allowed(api, exchanged, "track:a")
        assert not await allowed(api, exchanged, "track:bare")
        assert await revoke(idps.token(IDP_A)) == 200
        r = await api.client.post(
            "/v1/check", json={"resource": "track:a", **STREAM_GB}, headers=auth(exchanged)
        )
        assert r.status_code == 401


GRANT = {"subject": "*", "resource": "track:x", "actions": ["stream"], "territories": ["*"]}
IMPORT_LINE = json.dumps({"id": "g-import", **GRANT}).encode() + b"\n"
NDJSON = {"Content-Type": "application/x-ndjson"}
ASK_FOR_OTHERS = {"resource": "track:x", "subject": "someone-else", **STREAM_GB}


async def test_an_idps_entitlements_scopes_are_ignored_by_default(
    clean: PostgresStore, pg_dsn: str, idps: Idps
) -> None:
    async with service(pg_dsn, idps.item(IDP_A)) as api:
        c = api.client
        user = api.token("alice", scopes=("orders:fulfil",))
        svc = api.token("svc", scopes=("entitlements:exchange",))
        own_jti = (await exchange(api, user, svc, audience="orders", scope="orders:fulfil")).json()[
            "jti"
        ]
        ops = idps.token(IDP_A, "ops", scope=EVERY_SCOPE + " orders:read")
        a = auth(ops)
        assert (await c.put("/v1/grants/g1", json=GRANT, headers=a)).status_code == 403
        r = await c.post("/v1/imports", content=IMPORT_LINE, headers=a | NDJSON)
        assert r.status_code == 403
        assert (await c.post("/v1/check", json=ASK_FOR_OTHERS, headers=a)).status_code == 403
        assert (await c.get("/v1/changes", params={"since": 0}, headers=a)).status_code == 403
        r = await exchange(api, user, ops, audience="orders", scope="orders:fulfil")
        assert r.status_code == 403
        r = await c.post("/v1/token/revoke", json={"jti": own_jti}, headers=a)
        assert r.status_code == 403, "its admin scope does not reach others' tokens"
        # Asking about itself needs no scope; scopes of other services are not ours to drop.
        r = await c.post("/v1/check", json={"resource": "track:x", **STREAM_GB}, headers=a)
        assert r.status_code == 200
        r = await exchange(api, ops, svc, audience="orders", scope="orders:read")
        assert r.status_code == 200, r.text
        # An unhonoured scope cannot be passed on through an exchange either.
        r = await exchange(api, ops, svc, audience="entitlements", scope="entitlements:admin")
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "scope"


async def test_an_idps_listed_scopes_count_and_only_those(
    clean: PostgresStore, pg_dsn: str, idps: Idps
) -> None:
    listed = idps.item(IDP_B, allowed_scopes=["entitlements:admin", "entitlements:import"])
    async with service(pg_dsn, listed) as api:
        c = api.client
        user = api.token("alice", scopes=("orders:fulfil",))
        ops = idps.token(IDP_B, "ops", scope=EVERY_SCOPE)
        b = auth(ops)
        assert (await c.put("/v1/grants/g1", json=GRANT, headers=b)).status_code == 201
        r = await c.post("/v1/imports?dry_run=true", content=IMPORT_LINE, headers=b | NDJSON)
        assert r.status_code == 200, r.text
        assert r.json()["created_by"] == f"{IDP_B}|ops"
        assert (await c.post("/v1/check", json=ASK_FOR_OTHERS, headers=b)).status_code == 403
        r = await exchange(api, user, ops, audience="orders", scope="orders:fulfil")
        assert r.status_code == 403


async def test_a_user_id_too_long_with_its_prefix_is_refused_whole(
    clean: PostgresStore, pg_dsn: str, idps: Idps
) -> None:
    async with service(pg_dsn, idps.item(IDP_A)) as api:
        fits = "b" * (256 - len(IDP_A) - 1)
        r = await api.client.post(
            "/v1/check",
            json={"resource": "track:x", **STREAM_GB},
            headers=auth(idps.token(IDP_A, fits)),
        )
        assert r.status_code == 200, r.text
        # One more character: refused, never cut back to 256 (which would be another user).
        r = await api.client.post(
            "/v1/check",
            json={"resource": "track:x", **STREAM_GB},
            headers=auth(idps.token(IDP_A, fits + "b")),
        )
        assert r.status_code == 401, r.text
        assert r.json()["token_error"] == "bad_claim"
        svc = api.token("svc", scopes=("entitlements:check:any",))
        r = await api.client.post(
            "/v1/check",
            json={"resource": "track:x", "subject": f"{IDP_A}|{'b' * 240}", **STREAM_GB},
            headers=auth(svc),
        )
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "subject"


async def test_an_issuer_on_the_default_prefix_is_named_at_start(
    clean: PostgresStore, pg_dsn: str, idps: Idps, caplog: pytest.LogCaptureFixture
) -> None:
    issuers = (idps.item(IDP_A), idps.item(IDP_B, subject_prefix=""))
    with caplog.at_level(logging.WARNING, logger="entitlements"):
        async with service(pg_dsn, *issuers):
            pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    about_a = [m for m in warnings if IDP_A in m]
    assert len(about_a) == 1, warnings
    assert f"'{IDP_A}|<sub>'" in about_a[0]
    assert '"subject_prefix": ""' in about_a[0] and "allowed_scopes" in about_a[0]
    assert not [m for m in warnings if IDP_B in m], "B chose its prefix: nothing to say"


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"subject_prefix": None}, "must be a string"),
        ({"subject_prefix": "idp one|"}, "characters of a user id"),
        ({"subject_prefix": "x" * 129}, "at most 128"),
        ({"allowed_scopes": ["entitlements:root"]}, "Input should be 'entitlements:check'"),
        ({"allowed_scopes": ["orders:write"]}, "Input should be 'entitlements:check'"),
        ({"allowed_scopes": "entitlements:admin"}, "Input should be a valid tuple"),
    ],
    ids=["null-prefix", "space", "too-long", "unknown-scope", "not-ours", "not-a-list"],
)
def test_bad_issuer_policies_are_refused_at_start(
    idps: Idps, policy: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        configured(idps.item(IDP_A, **policy))


def configured(*items: dict[str, Any]) -> Settings:
    """Settings as ENTITLEMENTS_TRUSTED_ISSUERS would give them (validated the same way)."""
    values: dict[str, Any] = {"trusted_issuers": list(items)}
    return Settings(**values)


def test_overlapping_namespaces_are_refused_at_start(idps: Idps) -> None:
    with pytest.raises(ValidationError, match="overlap"):
        configured(
            idps.item(IDP_A, subject_prefix="idp|"), idps.item(IDP_B, subject_prefix="idp|eu|")
        )
    # The same prefix twice is a namespace shared on purpose.
    shared = configured(
        idps.item(IDP_A, subject_prefix="idp|"), idps.item(IDP_B, subject_prefix="idp|")
    )
    assert [t.effective_prefix for t in shared.trusted_issuers] == ["idp|", "idp|"]
    issuer_default = configured(idps.item(IDP_A)).trusted_issuers[0]
    assert issuer_default.effective_prefix == f"{IDP_A}|"
    assert issuer_default.allowed_scopes == ("entitlements:check",)
