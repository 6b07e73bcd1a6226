"""Browsers (issue 15): CORS for the configured origins only, security headers on every
response of every route, and a real ``entitlements serve`` that does not name its server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from processes import free_port, stop_process, wait_ready
from starlette.routing import Route
from support import Api, running, settings_for

from entitlements.api.app import create_app
from entitlements.api.lean import LeanRoute
from entitlements.settings import Settings
from entitlements.store.postgres import PostgresStore

APP = "https://app.example.com"
EVIL = "https://evil.example.net"
ENTITLEMENTS = str(Path(sys.executable).with_name("entitlements"))


@pytest.fixture
async def browser_api(clean: PostgresStore, pg_dsn: str) -> AsyncIterator[Api]:
    settings = settings_for(pg_dsn, cors_origins=(APP,), cors_credentials=True)
    async with running(settings) as (client, state):
        yield Api(client, state)


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


@pytest.mark.parametrize("path", ["/v1/check", "/v1/check/batch", "/v1/grants/g1"])
async def test_a_preflight_from_an_allowed_origin_is_answered(browser_api: Api, path: str) -> None:
    method = "PUT" if path.startswith("/v1/grants") else "POST"
    response = await browser_api.client.options(path, headers=preflight(APP, method))
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-credentials"] == "true"
    assert method in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_preflight_from_another_origin_is_refused(browser_api: Api) -> None:
    response = await browser_api.client.options("/v1/check", headers=preflight(EVIL))
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


async def test_actual_requests_carry_cors_headers_only_for_the_allowed_origin(
    browser_api: Api,
) -> None:
    api = browser_api
    alice = api.headers(api.token("alice"))
    body = {"resource": "track:t1", "action": "stream", "territory": "GB"}
    allowed = await api.client.post("/v1/check", json=body, headers={**alice, "Origin": APP})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == APP
    assert allowed.headers["access-control-allow-credentials"] == "true"
    refused = await api.client.post("/v1/check", json=body, headers={**alice, "Origin": EVIL})
    # The server answers; the browser, seeing no Access-Control-Allow-Origin, hides it.
    assert refused.status_code == 200
    assert "access-control-allow-origin" not in refused.headers


async def test_without_origins_configured_there_is_no_cors(api: Api) -> None:
    response = await api.client.options("/v1/check", headers=preflight(APP))
    assert response.status_code == 405
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x:1", path)


async def test_every_route_answers_with_the_security_headers(api: Api, pg_dsn: str) -> None:
    """Every method of every route the app serves (each is in its OpenAPI document, and
    the document's own routes), called without a token and with an admin's: each answer,
    whatever its status, carries the headers."""
    app = create_app(settings_for(pg_dsn))
    calls = [
        (method.upper(), _concrete(path))
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    ]
    calls += [
        ("GET", route.path)
        for route in app.routes
        if isinstance(route, Route) and not isinstance(route, LeanRoute)
    ]
    assert ("POST", "/v1/check") in calls and ("GET", "/v1/audit") in calls
    for headers in ({}, api.admin):
        for method, path in calls:
            response = await api.client.request(method, path, headers=headers)
            assert response.status_code < 500, (method, path, response.text)
            assert response.headers.get("x-content-type-options") == "nosniff", (method, path)
            assert response.headers.get("referrer-policy") == "no-referrer", (method, path)
            assert "server" not in response.headers
            cache = response.headers.get("cache-control")
            if path.endswith("jwks.json"):
                assert cache is not None and cache.startswith("public")
            else:
                assert cache == "no-store", (method, path, response.status_code)
    missing = await api.client.get("/no/such/route")
    assert missing.status_code == 404 and missing.headers["cache-control"] == "no-store"


async def test_decisions_and_tokens_are_not_stored(api: Api) -> None:
    alice = api.headers(api.token("alice"))
    body = {"resource": "track:t1", "action": "stream", "territory": "GB"}
    decision = await api.client.post("/v1/check", json=body, headers=alice)
    assert decision.status_code == 200 and decision.headers["cache-control"] == "no-store"


def test_settings_refuse_a_wildcard_with_credentials_and_non_origins() -> None:
    with pytest.raises(ValueError, match='may not be "\\*" when cors_credentials is on'):
        Settings(cors_origins=("*",), cors_credentials=True)
    assert Settings(cors_origins=("*",)).cors_origins == ("*",)  # no credentials: allowed
    for bad in ("https://app.example.com/", "app.example.com", "https://a.com/path", ""):
        with pytest.raises(ValueError, match="is not an origin"):
            Settings(cors_origins=(bad,))
    os.environ["ENTITLEMENTS_CORS_ORIGINS"] = f'["{APP}", "http://localhost:5173"]'
    try:
        assert Settings().cors_origins == (APP, "http://localhost:5173")
    finally:
        del os.environ["ENTITLEMENTS_CORS_ORIGINS"]


def test_the_served_app_does_not_name_its_server(clean: PostgresStore, pg_dsn: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTITLEMENTS_")}
    env["ENTITLEMENTS_DATABASE_URL"] = pg_dsn
    port = free_port()
    proc = subprocess.Popen(
        [ENTITLEMENTS, "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        response = wait_ready(f"http://127.0.0.1:{port}", proc, lambda: "")
        assert "server" not in response.headers
        assert response.headers["x-content-type-options"] == "nosniff"
    finally:
        stop_process(proc)
