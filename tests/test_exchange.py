"""Token exchange (RFC 8693) for long work: narrow, refused as an access token, revocable."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from support import Api, running, settings_for

from entitlements.store.postgres import PostgresStore
from entitlements_client import (
    InvalidTokenError,
    IssuerConfig,
    KeySet,
    TokenVerifier,
)

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
THREE_DAYS = 3 * 86400


async def exchange(api: Api, user_token: str, **form: Any) -> httpx.Response:
    service = api.token("svc-fulfilment", scopes=("entitlements:exchange",))
    data = {
        "grant_type": EXCHANGE,
        "subject_token": user_token,
        "subject_token_type": ACCESS,
        **form,
    }
    return await api.client.post("/v1/token/exchange", data=data, headers=api.headers(service))


def verifier_for(api: Api, audience: str, typ: str) -> TokenVerifier:
    """How another service (here: the order service) would verify our tokens."""
    keys = KeySet(jwks=api.state.tokens.jwks())
    return TokenVerifier(
        [
            IssuerConfig(
                issuer=api.state.settings.issuer,
                audience=audience,
                keys=keys,
                typ=(typ,),
                max_lifetime=7 * 86400,
                subject_prefix="",  # our tokens carry the user id itself (service_issuer)
            )
        ]
    )


async def test_three_day_order_token_is_narrow(api: Api) -> None:
    alice = api.token(
        "alice", roles=("plan:premium",), scopes=("orders:fulfil", "orders:read", "profile")
    )
    r = await exchange(
        api, alice, audience="orders", scope="orders:fulfil", resource="order:123", expires_in="3d"
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expires_in"] == THREE_DAYS and body["scope"] == "orders:fulfil"
    assert r.headers["cache-control"] == "no-store"
    token = body["access_token"]

    claims = verifier_for(api, "orders", "exchange+jwt").verify(token)
    assert claims.subject == "alice" and claims.audience == ("orders",)
    assert claims.has_scope("orders:fulfil") and not claims.has_scope("orders:read")
    assert list(claims.claims["resources"]) == ["order:123"]
    assert claims.actor == {"sub": "svc-fulfilment", "iss": api.state.settings.issuer}
    assert claims.expires_at - claims.issued_at == THREE_DAYS

    # not for another audience, and not where an ordinary access token is expected
    for audience, typ in (("billing", "exchange+jwt"), ("orders", "at+jwt")):
        try:
            verifier_for(api, audience, typ).verify(token)
        except InvalidTokenError:
            pass
        else:
            raise AssertionError(f"accepted for {audience}/{typ}")
    r = await api.client.post(
        "/v1/check",
        json={"resource": "order:123", "action": "fulfil", "territory": "GB"},
        headers=api.headers(token),
    )
    assert r.status_code == 401


async def test_exchange_cannot_widen_or_outlive_the_cap(api: Api) -> None:
    alice = api.token("alice", scopes=("orders:fulfil",))
    wider = await exchange(api, alice, audience="orders", scope="orders:fulfil orders:refund")
    assert wider.status_code == 422 and wider.json()["errors"][0]["field"] == "scope"
    too_long = await exchange(api, alice, audience="orders", scope="orders:fulfil", expires_in="8d")
    assert too_long.status_code == 422
    two_audiences = await api.client.post(
        "/v1/token/exchange",
        data={
            "grant_type": EXCHANGE,
            "subject_token": alice,
            "audience": ["a", "b"],
            "scope": "orders:fulfil",
        },
        headers=api.headers(api.token("svc", scopes=("entitlements:exchange",))),
    )
    assert two_audiences.status_code == 422
    # the caller needs the exchange scope; the subject token must be valid
    r = await api.client.post(
        "/v1/token/exchange",
        data={
            "grant_type": EXCHANGE,
            "subject_token": alice,
            "audience": "orders",
            "scope": "orders:fulfil",
        },
        headers=api.headers(api.token("svc")),
    )
    assert r.status_code == 403
    assert (
        await exchange(api, alice + "x", audience="orders", scope="orders:fulfil")
    ).status_code == 401
    # an exchanged token cannot itself be exchanged again as if it were a user token
    ok = (await exchange(api, alice, audience="entitlements", scope="orders:fulfil")).json()[
        "access_token"
    ]
    assert (await exchange(api, ok, audience="orders", scope="orders:fulfil")).status_code == 401


async def test_revoked_on_every_worker_within_the_bound_and_after_restart(
    clean: PostgresStore, pg_dsn: str
) -> None:
    bound = 5.0
    cfg = settings_for(pg_dsn, staleness=bound)
    body = {"resource": "track:x", "action": "stream", "territory": "GB"}
    async with running(cfg) as (ca, sa), running(cfg) as (cb, sb):
        a, b = Api(ca, sa), Api(cb, sb)
        alice = a.token("alice", scopes=("entitlements:check",))
        r = await exchange(
            a,
            alice,
            audience="entitlements",
            scope="entitlements:check",
            resource="track:x",
            expires_in="3d",
        )
        long_token, jti = r.json()["access_token"], r.json()["jti"]
        for app in (a, b):
            assert (
                await app.client.post("/v1/check", json=body, headers=app.headers(long_token))
            ).status_code == 200
        # limited to its resources
        other = await b.client.post(
            "/v1/check", json={**body, "resource": "track:y"}, headers=b.headers(long_token)
        )
        assert other.status_code == 403
        # alice revokes it at worker A
        r = await a.client.post("/v1/token/revoke", json={"jti": jti}, headers=a.headers(alice))
        assert r.status_code == 200, r.text
        assert (
            await a.client.post("/v1/check", json=body, headers=a.headers(long_token))
        ).status_code == 401
        start = time.monotonic()
        while (
            await b.client.post("/v1/check", json=body, headers=b.headers(long_token))
        ).status_code != 401:
            assert time.monotonic() - start < bound, (
                "worker B accepted a revoked token past the bound"
            )
            await asyncio.sleep(0.02)
    # a restarted worker knows too
    async with running(cfg) as (cc, _):
        assert (
            await cc.post("/v1/check", json=body, headers={"Authorization": f"Bearer {long_token}"})
        ).status_code == 401


async def test_only_the_user_the_holder_or_an_admin_may_revoke(api: Api) -> None:
    alice = api.token("alice", scopes=("orders:fulfil",))
    jti = (await exchange(api, alice, audience="orders", scope="orders:fulfil")).json()["jti"]
    mallory = api.token("mallory")
    r = await api.client.post("/v1/token/revoke", json={"jti": jti}, headers=api.headers(mallory))
    assert r.status_code == 403
    r = await api.client.post("/v1/token/revoke", json={"jti": "nope"}, headers=api.admin)
    assert r.status_code == 404
    r = await api.client.post("/v1/token/revoke", json={"jti": jti}, headers=api.admin)
    assert r.status_code == 200
