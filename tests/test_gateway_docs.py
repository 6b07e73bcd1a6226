"""docs/gateway.md's proxy configurations are real: the proxies accept them, and they work.

The nginx block passes ``nginx -t`` as written and the Envoy bootstrap passes
``envoy --mode validate``; then each of the three (with Traefik's dynamic
configuration), its example addresses replaced by a stand-in check and app,
serves requests: allowed with the decision headers, 401 and 403 refused before
the app, a client's own decision headers removed.
"""

from __future__ import annotations

import re

import httpx
import pytest
from envoy_server import EnvoyGateway, docs_envoy_config, envoy_validate
from gateway_servers import EnvoyFactory, NginxFactory, StandInFactory, TraefikFactory
from gateway_support import DECISION, DECISION_HEADERS, StandInServer, echo, stand_in_check
from nginx_server import DOCS, NginxGateway, docs_nginx_config, nginx_config_test
from processes import free_port
from traefik_server import TraefikGateway, docs_traefik_config

from entitlements.gateway.forwarded import CHECK_PREFIX

pytestmark = pytest.mark.servers

TERRITORY = "CF-IPCountry"  # the header the docs' Envoy bootstrap passes to the check


def block(marker: str, language: str) -> str:
    found = re.search(rf"<!-- {marker} -->\s*```{language}\n(.*?)```", DOCS.read_text(), re.S)
    assert found is not None, f"no ```{language} block after <!-- {marker} --> in {DOCS}"
    return found.group(1)


def test_the_docs_nginx_config_passes_nginx_t() -> None:
    output = nginx_config_test(block("nginx-config", "nginx"))
    assert "syntax is ok" in output and "test is successful" in output


def test_the_docs_envoy_config_passes_envoy_validate() -> None:
    output = envoy_validate(block("envoy-config", "yaml"))
    assert "OK" in output


def test_a_broken_config_is_caught() -> None:
    # The two checks above can fail.
    with pytest.raises(RuntimeError, match="nginx -t failed"):
        nginx_config_test("server { listen 80; location / { auth_request; } }")
    with pytest.raises(RuntimeError, match="validate failed"):
        envoy_validate(block("envoy-config", "yaml").replace("path_prefix", "path_prefx"))


def test_the_docs_name_every_decision_header_in_each_config() -> None:
    for marker, language in (
        ("nginx-config", "nginx"),
        ("envoy-config", "yaml"),
        ("traefik-config", "yaml"),
    ):
        text = block(marker, language).lower()
        for header in DECISION_HEADERS:
            assert header.lower() in text or header.lower().replace("-", "_") in text, (
                marker,
                header,
            )


@pytest.fixture(params=["nginx", "envoy", "traefik"])
async def docs_gateway(
    request: pytest.FixtureRequest,
    stand_in: StandInFactory,
    nginx_gateway: NginxFactory,
    envoy_gateway: EnvoyFactory,
    traefik_gateway: TraefikFactory,
) -> tuple[str, str, StandInServer]:
    check = stand_in(stand_in_check(TERRITORY))
    app = stand_in(echo)
    port = free_port()
    if request.param == "nginx":
        config = docs_nginx_config(
            listen_port=port, auth_url=check.url + CHECK_PREFIX, upstream_url=app.url
        )
        proxy: NginxGateway | EnvoyGateway | TraefikGateway = await nginx_gateway(
            check.url + CHECK_PREFIX, app.url, http_config=config
        )
    elif request.param == "traefik":
        config = docs_traefik_config(auth_url=check.url + CHECK_PREFIX, upstream_url=app.url)
        proxy = await traefik_gateway(check.url + CHECK_PREFIX, app.url, config_text=config)
    else:
        config = docs_envoy_config(listen_port=port, auth_url=check.url, upstream_url=app.url)
        proxy = await envoy_gateway(check.url, app.url, config_text=config, listen_port=port)
    return request.param, proxy.url, app


async def test_the_docs_configs_serve_allow_refuse_and_strip(
    docs_gateway: tuple[str, str, StandInServer],
) -> None:
    kind, url, app = docs_gateway
    user = {"Authorization": "Bearer user-token", TERRITORY: "GB"}
    spoofed = {h: "user:admin" for h in DECISION_HEADERS}
    async with httpx.AsyncClient(timeout=10) as client:
        allowed = await client.get(url + "/tracks/T1/stream", headers={**user, **spoofed})
        assert allowed.status_code == 200, allowed.text
        headers = {k.lower(): v for k, v in allowed.json()["headers"]}
        assert headers["x-entitlements-subject"] == DECISION["X-Entitlements-Subject"]
        assert headers["x-entitlements-valid-until"] == DECISION["X-Entitlements-Valid-Until"]
        assert headers["authorization"] == "Bearer user-token"
        assert "x-entitlements-token" not in headers

        minted = await client.get(url + "/tracks/T1/stream?mint=1", headers=user)
        headers = {k.lower(): v for k, v in minted.json()["headers"]}
        assert headers["x-entitlements-token"] == "minted.jwt"
        # The docs' Traefik copies no Authorization (only safe when every route mints).
        expected = "Bearer user-token" if kind == "traefik" else "Bearer minted.jwt"
        assert headers["authorization"] == expected

        public = await client.get(url + "/public/home", headers={**user, **spoofed})
        headers = {k.lower(): v for k, v in public.json()["headers"]}
        assert not {h.lower() for h in DECISION_HEADERS} & set(headers)

        reached = len(app.requests)
        no_token = await client.get(url + "/tracks/T1/stream", headers={TERRITORY: "GB"})
        assert no_token.status_code == 401
        assert no_token.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        takedown = await client.get(url + "/tracks/TAKEDOWN/stream", headers=user)
        assert takedown.status_code == 403
        elsewhere = await client.get(url + "/tracks/T1/stream", headers={**user, TERRITORY: "DE"})
        assert elsewhere.status_code == 403
        assert len(app.requests) == reached
