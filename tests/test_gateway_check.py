"""``/v1/gateway/check`` in-process: each proxy's request shape → the check service → headers.

The app runs with its lifespan over the real Postgres (no socket; the ASGI peer is
127.0.0.1, listed as a trusted proxy). The real proxies are in
``test_gateway_real_proxies.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from gateway_support import (
    CheckRequest,
    envoy_check_request,
    nginx_check_request,
    traefik_check_request,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import Api, running, settings_for

from entitlements.api.app import create_app
from entitlements.errors import InvalidInputError
from entitlements.keys.signing import SigningKey, generate, mint
from entitlements.settings import Settings
from entitlements.store.postgres import PostgresStore
from entitlements_client import (
    InvalidTokenError,
    IssuerConfig,
    KeySet,
    TokenVerifier,
    check_binding,
)

ISSUER = "https://entitlements.test"
UPSTREAM = "https://player.internal"
ROUTES = {
    "routes": [
        {"method": "GET", "path": "/tracks/{isrc}/stream", "resource": "track:{isrc}",
         "action": "stream", "token": {"audience": UPSTREAM, "lifetime": "20s"}},
        {"method": "GET", "path": "/tracks/{isrc}/download", "resource": "track:{isrc}",
         "action": "download"},
        {"method": "*", "path": "/healthz", "public": True},
    ]
}  # fmt: skip


def gateway_settings(dsn: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "gateway_routes": json.dumps(ROUTES),
        "gateway_trusted_proxies": "127.0.0.1, ::1",
        "gateway_territory_header": "X-Country",
    }
    values.update(overrides)
    return settings_for(dsn, **values)


@pytest.fixture
async def gw(clean: PostgresStore, pg_dsn: str) -> AsyncIterator[Api]:
    async with running(gateway_settings(pg_dsn)) as (client, state):
        api = Api(client, state)
        await api.put_resource("release:r1", ["label:acme"])
        await api.put_resource("track:T1", ["release:r1"])
        await api.put_resource("track:GONE", ["release:r1"])
        await api.put_grant(
            "premium",
            subject="role:plan:premium",
            resource="label:acme",
            actions=["stream"],
            territories=["GB", "US"],
            valid_until="2999-01-01T00:00:00Z",
        )
        await api.put_grant(
            "takedown",
            subject="*",
            resource="track:GONE",
            actions=["stream"],
            territories=["*"],
            effect="deny",
        )
        yield api


async def send(api: Api, r: CheckRequest) -> httpx.Response:
    return await api.client.request(r.method, r.target, headers=r.headers)


def client_headers(
    api: Api, token: str | None, country: str | None = "GB"
) -> list[tuple[str, str]]:
    out = []
    if token is not None:
        out.append(("Authorization", f"Bearer {token}"))
    if country is not None:
        out.append(("X-Country", country))
    return out


SHAPES = {
    "nginx": nginx_check_request,
    "envoy": lambda m, u, h: envoy_check_request(m, u, h, allowed_headers=["x-country"]),
    "traefik": traefik_check_request,
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_premium_stream_allowed_with_decision_headers(gw: Api, shape: str) -> None:
    alice = gw.token("alice", roles=("plan:premium",))
    r = await send(gw, SHAPES[shape]("GET", "/tracks/T1/stream?q=1", client_headers(gw, alice)))
    assert r.status_code == 200, r.text
    assert r.headers["x-entitlements-subject"] == "user:alice"
    assert r.headers["x-entitlements-grant"] == "premium"
    assert r.headers["x-entitlements-valid-until"] == "2999-01-01T00:00:00Z"
    minted = r.headers["x-entitlements-token"]
    assert r.headers["authorization"] == f"Bearer {minted}"


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_takedown_403_missing_token_401(gw: Api, shape: str) -> None:
    alice = gw.token("alice", roles=("plan:premium",))
    r = await send(gw, SHAPES[shape]("GET", "/tracks/GONE/stream", client_headers(gw, alice)))
    assert r.status_code == 403
    body = r.json()
    assert body["type"] == "urn:entitlements:problem:not-allowed"
    assert body["reason"] == "denied"
    assert "x-entitlements-subject" not in r.headers
    r = await send(gw, SHAPES[shape]("GET", "/tracks/T1/stream", client_headers(gw, None)))
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = await send(gw, SHAPES[shape]("GET", "/tracks/T1/stream", client_headers(gw, "not.a.jwt")))
    assert r.status_code == 401
    assert r.json()["token_error"] == "malformed"


async def test_valid_until_absent_when_no_change_ahead(gw: Api) -> None:
    await gw.put_grant(
        "forever",
        subject="user:carol",
        resource="track:T1",
        actions=["download"],
        territories=["*"],
    )
    carol = gw.token("carol")
    r = await send(gw, nginx_check_request("GET", "/tracks/T1/download", client_headers(gw, carol)))
    assert r.status_code == 200, r.text
    assert r.headers["x-entitlements-grant"] == "forever"
    assert "x-entitlements-valid-until" not in r.headers
    assert "x-entitlements-token" not in r.headers  # this route mints none
    assert "authorization" not in r.headers


async def test_same_answer_as_v1_check(gw: Api) -> None:
    bob = gw.token("bob", roles=("plan:free",))
    r = await send(gw, nginx_check_request("GET", "/tracks/T1/stream", client_headers(gw, bob)))
    assert r.status_code == 403
    decision = await gw.check(bob, resource="track:T1", action="stream", territory="GB")
    assert r.json()["reason"] == decision["reason"] == "not_licensed"
    alice = gw.token("alice", roles=("plan:premium",))
    r = await send(
        gw, nginx_check_request("GET", "/tracks/T1/stream", client_headers(gw, alice, "JP"))
    )
    assert r.status_code == 403
    assert r.json()["reason"] == "territory"


async def test_public_route_needs_no_token(gw: Api) -> None:
    r = await send(gw, nginx_check_request("DELETE", "/healthz", []))
    assert r.status_code == 200
    assert "x-entitlements-subject" not in r.headers


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        ("/tracks/T1/stream/extra", "no-route"),
        ("/tracks/a%2Fb/stream", "bad-path"),
        ("/tracks/../stream", "bad-path"),
        ("/tracks/%20/stream", "bad-resource"),
    ],
)
async def test_unmatched_is_403_saying_which(gw: Api, uri: str, kind: str) -> None:
    alice = gw.token("alice", roles=("plan:premium",))
    r = await send(gw, nginx_check_request("GET", uri, client_headers(gw, alice)))
    assert r.status_code == 403
    assert r.json()["type"] == f"urn:entitlements:problem:gateway-{kind}"


async def test_envoy_encoded_path_read_raw(gw: Api) -> None:
    """Envoy appends the raw path: an encoded slash is refused, not decoded into a route."""
    alice = gw.token("alice", roles=("plan:premium",))
    r = await gw.client.get(
        "/v1/gateway/check/tracks/T1%2Fx/stream",
        headers=client_headers(gw, alice),
    )
    assert r.status_code == 403
    assert r.json()["type"] == "urn:entitlements:problem:gateway-bad-path"
    # and an escaped ordinary character names the same track
    r = await gw.client.get(
        "/v1/gateway/check/tracks/%54%31/stream", headers=client_headers(gw, alice)
    )
    assert r.status_code == 200, r.text


async def test_missing_or_bad_territory_is_403(gw: Api) -> None:
    alice = gw.token("alice", roles=("plan:premium",))
    r = await send(
        gw, nginx_check_request("GET", "/tracks/T1/stream", client_headers(gw, alice, None))
    )
    assert r.status_code == 403
    assert r.json()["type"] == "urn:entitlements:problem:gateway-no-territory"
    assert "X-Country" in r.json()["detail"]
    r = await send(
        gw, nginx_check_request("GET", "/tracks/T1/stream", client_headers(gw, alice, "gb"))
    )
    assert r.status_code == 403
    assert r.json()["type"] == "urn:entitlements:problem:gateway-bad-request"


async def test_no_forwarded_request_or_two_conventions_is_403(gw: Api) -> None:
    alice = gw.token("alice", roles=("plan:premium",))
    r = await gw.client.get("/v1/gateway/check", headers=client_headers(gw, alice))
    assert r.status_code == 403
    assert r.json()["type"] == "urn:entitlements:problem:gateway-bad-request"
    both = nginx_check_request(
        "GET",
        "/tracks/T1/stream",
        [*client_headers(gw, alice), ("X-Forwarded-Uri", "/healthz")],
        clear_other_conventions=False,
    )
    r = await send(gw, both)
    assert r.status_code == 403
    assert "more than one" in r.json()["detail"]


async def test_only_trusted_proxies(clean: PostgresStore, pg_dsn: str) -> None:
    settings = gateway_settings(pg_dsn, gateway_trusted_proxies="10.0.0.0/8")
    async with running(settings) as (client, state):
        api = Api(client, state)
        alice = api.token("alice", roles=("plan:premium",))
        r = await send(api, nginx_check_request("GET", "/healthz", client_headers(api, alice)))
        assert r.status_code == 403
        assert r.json()["type"] == "urn:entitlements:problem:gateway-untrusted-proxy"
    # nothing configured trusts nobody
    async with running(settings_for(pg_dsn)) as (client, state):
        r = await client.get("/v1/gateway/check/healthz")
        assert r.status_code == 403


async def test_conventions_setting_ignores_other_markers(clean: PostgresStore, pg_dsn: str) -> None:
    settings = gateway_settings(pg_dsn, gateway_conventions="nginx")
    async with running(settings) as (client, state):
        api = Api(client, state)
        both = nginx_check_request(
            "DELETE", "/healthz", [("X-Forwarded-Uri", "/tracks/T1/stream")],
            clear_other_conventions=False,
        )  # fmt: skip
        r = await send(api, both)
        assert r.status_code == 200
        # an Envoy-style path is not read when only nginx is accepted
        r = await client.get("/v1/gateway/check/healthz")
        assert r.status_code == 403


def test_bad_gateway_settings_stop_the_start(pg_dsn: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        create_app(
            gateway_settings(
                pg_dsn,
                gateway_routes='[{"method": "GET", "path": "/x/{id}", "resource": "bad"}]',
                gateway_trusted_proxies="10.0.0.1/8",
                gateway_conventions="haproxy",
            )
        )
    fields = {e.field for e in caught.value.errors}
    assert any(f.startswith("ENTITLEMENTS_GATEWAY_TRUSTED_PROXIES") for f in fields)
    assert "ENTITLEMENTS_GATEWAY_CONVENTIONS" in fields
    assert any(f.startswith("routes.0") for f in fields), fields


async def test_minted_token_is_bound_short_and_coarse(gw: Api) -> None:
    alice = gw.token("alice", roles=("plan:premium",))
    r = await send(gw, nginx_check_request("GET", "/tracks/T1/stream", client_headers(gw, alice)))
    minted = r.headers["x-entitlements-token"]
    jwks = (await gw.client.get("/.well-known/jwks.json")).json()
    verifier = TokenVerifier(
        [
            IssuerConfig(
                issuer=ISSUER,
                audience=UPSTREAM,
                keys=KeySet(jwks=jwks),
                max_lifetime=60,
                subject_prefix="",
            )
        ]
    )
    token = verifier.verify(minted, method="GET", path="/tracks/T1/stream")
    assert token.subject == "alice"
    assert token.roles == ("plan:premium",)
    assert token.scopes == frozenset()
    assert token.expires_at - token.issued_at == 20
    assert set(token.claims) == {
        "iss",
        "aud",
        "sub",
        "iat",
        "exp",
        "jti",
        "roles",
        "method",
        "path",
    }
    for method, path in [("POST", "/tracks/T1/stream"), ("GET", "/tracks/T2/stream")]:
        with pytest.raises(InvalidTokenError) as caught:
            verifier.verify(minted, method=method, path=path)
        assert caught.value.code == "wrong_request"
    # A token that names no request is refused when the upstream asks for the binding.
    with pytest.raises(InvalidTokenError) as caught:
        verifier.verify(gw.state.tokens.mint_access("alice", ttl=30), path="/x")
    assert caught.value.code in {"unbound", "bad_audience"}


def test_binding_is_checked_only_when_asked_and_names_the_request() -> None:
    priv, jwk = generate("EdDSA")
    key = SigningKey(
        jwk["kid"], "EdDSA", "active", jwk, datetime(2026, 1, 1, tzinfo=UTC), None, priv
    )
    verifier = TokenVerifier(
        [
            IssuerConfig(
                issuer=ISSUER,
                audience=UPSTREAM,
                keys=KeySet(jwks={"keys": [jwk]}),
                subject_prefix="",
                max_lifetime=60,
            )
        ]
    )
    plain, _ = mint(key, issuer=ISSUER, audience=UPSTREAM, subject="alice", ttl=30)
    assert verifier.verify(plain).subject == "alice"  # not asked: no binding needed
    with pytest.raises(InvalidTokenError) as caught:
        verifier.verify(plain, method="GET")
    assert caught.value.code == "unbound"
    bound, _ = mint(
        key, issuer=ISSUER, audience=UPSTREAM, subject="alice", ttl=30,
        extra={"method": "GET", "path": "/tracks/A%2Fb/stream"},
    )  # fmt: skip
    verified = verifier.verify(bound, method="GET", path="/tracks/A%2Fb/stream?x=1")
    assert check_binding(verified, None, "/tracks/A%2Fb/stream") is verified
    for method, path in [("GET", "/tracks/A/b/stream"), ("HEAD", "/tracks/A%2Fb/stream")]:
        with pytest.raises(InvalidTokenError) as caught:
            verifier.verify(bound, method=method, path=path)
        assert caught.value.code == "wrong_request"


_APPS: list[Any] = []  # one app (its routes and middleware) for every example; state: gw's
_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=40)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "get", "", "G E T", "PROPFIND"]),
    path=st.one_of(
        st.sampled_from(["/v1/gateway/check", "/v1/gateway/check/tracks/T1/stream"]),
        _TEXT.map(lambda t: "/v1/gateway/check/" + t),
    ),
    uri=st.one_of(st.none(), _TEXT, st.sampled_from(["/tracks/T1/stream", "/healthz"])),
    original_method=st.one_of(st.none(), _TEXT, st.just("GET")),
    country=st.one_of(st.none(), _TEXT, st.just("GB")),
    authorization=st.one_of(st.none(), _TEXT, st.just("Bearer x.y.z")),
    twice=st.booleans(),
)
async def test_any_forwarded_request_is_answered_200_401_or_403(
    gw: Api,
    method: str,
    path: str,
    uri: str | None,
    original_method: str | None,
    country: str | None,
    authorization: str | None,
    twice: bool,
) -> None:
    """What nginx can pass on: never a 500, never another status (straight ASGI, so no
    client library cleans the request first)."""
    headers: list[tuple[bytes, bytes]] = []
    for name, value in (
        (b"x-original-uri", uri),
        (b"x-original-method", original_method),
        (b"x-country", country),
        (b"authorization", authorization),
    ):
        if value is not None:
            headers.append((name, value.encode("latin-1")))
            if twice:
                headers.append((name, value.encode("latin-1")))
    raw = path.encode("latin-1")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw,
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "state": {"ent": gw.state},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    if not _APPS:
        _APPS.append(create_app(gateway_settings("postgresql://unused@127.0.0.1/unused")))
    await _APPS[0](scope, receive, send)
    assert sent[0]["status"] in {200, 401, 403}, (sent, scope)
