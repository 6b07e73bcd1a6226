"""Real nginx, Envoy and Traefik in front of a stand-in check and a stand-in app.

The stand-in check is a few lines over the real pure parts (``read_forwarded``
and the route table): it proves the proxies' side of the contract — what they
send the check, what they do with its answer — before the endpoint exists
(phase 2 points the same fixtures at the real service). Each test runs against
each proxy.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from envoy_server import EnvoyGateway
from gateway_servers import EnvoyFactory, NginxFactory, StandInFactory, TraefikFactory
from gateway_support import (
    DECISION,
    DECISION_HEADERS,
    TERRITORY,
    CheckRequest,
    StandInServer,
    echo,
    envoy_check_request,
    nginx_check_request,
    stand_in_check,
    traefik_check_request,
)
from nginx_server import NginxGateway
from processes import free_port
from traefik_server import TraefikGateway

from entitlements.gateway.forwarded import CHECK_PREFIX, ForwardedRequest, read_forwarded
from entitlements.gateway.paths import PathRefusal, split_path

Proxy = NginxGateway | EnvoyGateway | TraefikGateway

pytestmark = pytest.mark.servers


@dataclass
class Gateway:
    kind: str
    url: str
    check: StandInServer
    app: StandInServer
    proxy: Proxy

    def forwarded(self) -> ForwardedRequest:
        """What the check read from the last request it was sent."""
        seen = self.check.last
        path, _, query = seen.target.partition("?")
        got = read_forwarded(seen.method, path, query, seen.headers, territory_header=TERRITORY)
        assert isinstance(got, ForwardedRequest), got
        return got

    def app_headers(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, value in self.app.last.headers:
            out.setdefault(name.lower(), []).append(value)
        return out


@pytest.fixture(params=["nginx", "envoy", "traefik"])
async def gateway(
    request: pytest.FixtureRequest,
    stand_in: StandInFactory,
    nginx_gateway: NginxFactory,
    envoy_gateway: EnvoyFactory,
    traefik_gateway: TraefikFactory,
) -> Gateway:
    check = stand_in(stand_in_check())
    app = stand_in(echo)
    proxy: Proxy
    if request.param == "nginx":
        proxy = await nginx_gateway(check.url + CHECK_PREFIX, app.url)
    elif request.param == "envoy":
        proxy = await envoy_gateway(
            check.url, app.url, allowed_headers=[TERRITORY], upstream_headers=["authorization"]
        )
    else:
        # No Authorization among the copied headers: see the Traefik test at the end.
        proxy = await traefik_gateway(check.url + CHECK_PREFIX, app.url)
    return Gateway(request.param, proxy.url, check, app, proxy)


USER = {"Authorization": "Bearer user-token", TERRITORY: "GB"}


async def send(gateway: Gateway, method: str, target: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.request(method, gateway.url + target, **kwargs)


async def test_an_allowed_request_reaches_the_app_with_the_decision(gateway: Gateway) -> None:
    response = await send(gateway, "GET", "/tracks/US%52C1/stream?quality=hi", headers=USER)
    assert response.status_code == 200, response.text
    seen = response.json()
    # The check read the very path the app was sent. nginx and Envoy pass it as the
    # client wrote it; Traefik decodes %-escaped unreserved characters first, for both.
    sent = "/tracks/USRC1/stream" if gateway.kind == "traefik" else "/tracks/US%52C1/stream"
    assert (seen["method"], seen["target"]) == ("GET", sent + "?quality=hi")
    assert (gateway.forwarded().method, gateway.forwarded().uri) == ("GET", seen["target"])
    headers = gateway.app_headers()
    for name, value in DECISION.items():
        assert headers[name.lower()] == [value]
    # no token minted: the client's own Authorization goes on, and no token header
    assert headers["authorization"] == ["Bearer user-token"]
    assert "x-entitlements-token" not in headers
    assert len(gateway.check.requests) == 1


async def test_a_minted_token_reaches_the_app(gateway: Gateway) -> None:
    response = await send(gateway, "GET", "/tracks/T1/stream?mint=1", headers=USER)
    assert response.status_code == 200, response.text
    headers = gateway.app_headers()
    assert headers["x-entitlements-token"] == ["minted.jwt"]
    # nginx maps it onto Authorization, Envoy copies the check's Authorization; this
    # Traefik copies no Authorization (see test_traefik_copying_authorization_...).
    expected = "Bearer user-token" if gateway.kind == "traefik" else "Bearer minted.jwt"
    assert headers["authorization"] == [expected]


async def test_the_method_and_body_go_to_the_app_not_to_the_check(gateway: Gateway) -> None:
    response = await send(gateway, "POST", "/tracks/T1", headers=USER, content=b"new title")
    assert response.status_code == 200, response.text
    seen = response.json()
    assert (seen["method"], seen["body"]) == ("POST", "new title")
    assert gateway.check.last.body == b""


async def test_a_missing_token_is_401_and_the_app_is_not_reached(gateway: Gateway) -> None:
    response = await send(gateway, "GET", "/tracks/T1/stream", headers={TERRITORY: "GB"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert gateway.app.requests == []


async def test_a_refusal_is_403_and_the_app_is_not_reached(gateway: Gateway) -> None:
    for target in ("/tracks/TAKEDOWN/stream", "/nowhere", "/tracks/T1/stream/"):
        response = await send(gateway, "GET", target, headers=USER)
        assert response.status_code == 403, (target, response.text)
    response = await send(gateway, "GET", "/tracks/T1/stream", headers={**USER, TERRITORY: "DE"})
    assert response.status_code == 403
    if gateway.kind != "nginx":  # Envoy and Traefik pass the problem on; nginx has its own page
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"] == "territory"
    assert gateway.app.requests == []


async def send_raw(gateway: Gateway, target: str, headers: dict[str, str]) -> int:
    """Send ``GET target`` exactly as written (httpx would resolve dot-segments first)."""
    port = int(gateway.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        return int(status_line.split()[1])
    finally:
        writer.close()


# Each would fit a route (the public /public/{page}, or a track's) if the check took it
# as it comes, while the app may read it otherwise.
TWO_WAY_PATHS = [
    "/public/..",
    "/public/%2e%2e",
    "/public/.",
    "/public/..%2Ftracks%2FT1%2Fstream",
    "/public/..%5Ctracks%5CT1%5Cstream",
    "/public/../tracks/T1/stream",
    "/public/%2e%2e/tracks/T1/stream",
    "/public/x%2F..%2F..%2Ftracks/T1/stream",
    "/tracks/T1/./stream",
    "/public//tracks/T1/stream",
    "/public/a%5C..%5Ctracks",
]


async def test_a_path_two_servers_could_read_two_ways_never_reaches_the_app(
    gateway: Gateway,
) -> None:
    # nginx resolves '..' to choose its location but sends the check (and the app) the
    # raw $request_uri; Envoy passes the path on as sent. The check refuses both.
    # Traefik resolves dot-segments itself (sanitizePath) and sends the check and the
    # app the same clean path: that may pass, and then the two agree.
    for target in TWO_WAY_PATHS:
        gateway.app.clear()
        status = await send_raw(gateway, target, USER)
        if status == 200 and gateway.kind == "traefik":
            received = gateway.app.last.target
            assert received == gateway.forwarded().uri, target
            assert not isinstance(split_path(received), PathRefusal), (target, received)
            continue
        assert status in {400, 403, 404}, (target, status)
        assert gateway.app.requests == [], target


async def test_a_clients_own_decision_headers_never_reach_the_app(gateway: Gateway) -> None:
    spoofed = {h: "user:admin" for h in DECISION_HEADERS}
    # A public route: the check answers 200 without any decision header.
    response = await send(gateway, "GET", "/public/home", headers={**USER, **spoofed})
    assert response.status_code == 200, response.text
    headers = gateway.app_headers()
    assert not {h.lower() for h in DECISION_HEADERS} & set(headers), headers
    assert headers["authorization"] == ["Bearer user-token"]
    # A checked route: only the check's values arrive.
    await send(gateway, "GET", "/tracks/T1/stream", headers={**USER, **spoofed})
    headers = gateway.app_headers()
    assert headers["x-entitlements-subject"] == [DECISION["X-Entitlements-Subject"]]
    assert "x-entitlements-token" not in headers


async def test_a_header_aliasing_a_decision_header_never_reaches_the_app(
    gateway: Gateway,
) -> None:
    # CGI, WSGI and PHP read X_Entitlements_Subject as X-Entitlements-Subject. nginx drops
    # such headers (underscores_in_headers off); Envoy and Traefik are told to reject them.
    for name in ("X-Entitlements_Subject", "X_Entitlements_Grant"):
        gateway.app.clear()
        response = await send(gateway, "GET", "/public/home", headers={**USER, name: "user:x"})
        assert response.status_code in {200, 400}, (name, response.status_code)
        if response.status_code == 200:
            received = {k.lower().replace("_", "-") for k, _ in gateway.app.last.headers}
            assert not received & {h.lower() for h in DECISION_HEADERS}, (name, received)
        else:
            assert gateway.app.requests == []


async def test_the_check_request_has_the_shape_the_helpers_build(gateway: Gateway) -> None:
    """The helpers phase 2 uses without a proxy send what the real proxy sends."""
    client = [("Authorization", "Bearer user-token"), (TERRITORY, "GB")]
    response = await send(gateway, "DELETE", "/tracks/T%31?x=1&y=%2F", headers=dict(client))
    assert response.status_code == 200, response.text
    real = gateway.check.last.as_check_request()
    host = gateway.url.removeprefix("http://")
    expected: CheckRequest
    if gateway.kind == "nginx":
        expected = nginx_check_request("DELETE", "/tracks/T%31?x=1&y=%2F", client, host="127.0.0.1")
    elif gateway.kind == "envoy":
        expected = envoy_check_request(
            "DELETE", "/tracks/T%31?x=1&y=%2F", client, host=host, allowed_headers=[TERRITORY]
        )
    else:  # Traefik decodes the unreserved %31 (and sends the app the same path)
        expected = traefik_check_request(
            "DELETE", "/tracks/T1?x=1&y=%2F", client, host=host, client_ip="127.0.0.1"
        )
    assert (real.method, real.path, real.query) == (expected.method, expected.path, expected.query)
    read = {*expected.headers}
    names = {k for k, _ in expected.headers}
    assert {(k, v) for k, v in real.headers if k in names} == read
    if gateway.kind == "envoy":  # Envoy sends nothing else; nginx adds the client's defaults
        assert {k for k, _ in real.headers} == names


async def test_an_unreachable_check_fails_closed(
    stand_in: StandInFactory,
    nginx_gateway: NginxFactory,
    envoy_gateway: EnvoyFactory,
    traefik_gateway: TraefikFactory,
) -> None:
    app = stand_in(echo)
    nowhere = f"http://127.0.0.1:{free_port()}"
    proxies: list[Proxy] = [
        await nginx_gateway(nowhere + CHECK_PREFIX, app.url),
        await envoy_gateway(nowhere, app.url),
        await traefik_gateway(nowhere + CHECK_PREFIX, app.url),
    ]
    # nginx: 500 (an auth subrequest error); Envoy: 403 (failure_mode_allow: false);
    # Traefik: 500.
    expected = {NginxGateway: 500, EnvoyGateway: 403, TraefikGateway: 500}
    for proxy in proxies:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(proxy.url + "/public/home", headers=USER)
        assert response.status_code == expected[type(proxy)], type(proxy).__name__
    assert app.requests == []


async def test_traefik_copying_authorization_removes_the_clients_where_none_is_minted(
    stand_in: StandInFactory, traefik_gateway: TraefikFactory
) -> None:
    """Why docs/gateway.md lists Authorization for Traefik only when every route mints."""
    check = stand_in(stand_in_check())
    app = stand_in(echo)
    proxy = await traefik_gateway(
        check.url + CHECK_PREFIX,
        app.url,
        response_headers=[*DECISION_HEADERS, "Authorization"],
    )
    async with httpx.AsyncClient(timeout=10) as client:
        minted = await client.get(proxy.url + "/tracks/T1/stream?mint=1", headers=USER)
        plain = await client.get(proxy.url + "/tracks/T1/stream", headers=USER)
    minted_headers = {k.lower(): v for k, v in minted.json()["headers"]}
    plain_headers = {k.lower(): v for k, v in plain.json()["headers"]}
    assert minted_headers["authorization"] == "Bearer minted.jwt"
    assert "authorization" not in plain_headers
