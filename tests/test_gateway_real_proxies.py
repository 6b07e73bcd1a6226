"""The real thing at the edge: nginx, Envoy and Traefik in front of the example player,
asking the real service's ``/v1/gateway/check``.

The service runs under uvicorn on a loopback socket (``sdk_support.ServiceServer``)
over the real Postgres; the upstream is ``client/examples/player.py``'s gateway app
(``create_gateway_app``) under uvicorn, verifying the per-request token with the
SDK's verifier against the service's JWKS — binding included. The verifier's clock
is the test's: a replay after the token's lifetime plus the leeway is shown by
moving that clock, not by sleeping.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI
from gateway_servers import EnvoyFactory, NginxFactory, TraefikFactory
from sdk_support import ServiceServer, free_port
from support import settings_for

from entitlements.gateway.forwarded import CHECK_PREFIX
from entitlements.store.postgres import PostgresStore
from entitlements_client import (
    AsyncEntitlements,
    IssuerConfig,
    KeySet,
    TokenVerifier,
    VerifiedToken,
)
from entitlements_client.fastapi import authenticated

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = "https://player.internal"
LIFETIME = 5
LEEWAY = 10.0
TERRITORY = "X-Country"
ROUTES = {
    "token": {"audience": UPSTREAM, "lifetime": LIFETIME},
    "routes": [
        {"method": "GET", "path": "/tracks/{isrc}/stream", "resource": "track:{isrc}",
         "action": "stream"},
    ],
}  # fmt: skip


def _player_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "player_example", ROOT / "client" / "examples" / "player.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["player_example"] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Clock:
    """The upstream verifier's wall clock: real time plus ``offset``."""

    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Player:
    url: str
    clock: Clock
    tokens: list[str] = field(default_factory=list)


class _Uvicorn:
    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Uvicorn:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "player did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def service(clean: PostgresStore, pg_dsn: str) -> Iterator[ServiceServer]:
    settings = settings_for(
        pg_dsn,
        gateway_routes=json.dumps(ROUTES),
        gateway_trusted_proxies="127.0.0.1",
        gateway_territory_header=TERRITORY,
    )
    server = ServiceServer(settings)
    server.start()
    try:
        admin = server._admin_headers()
        for rid, parents in [("release:R1", []), ("track:T1", ["release:R1"]),
                             ("track:T2", ["release:R1"]), ("track:GONE", ["release:R1"])]:  # fmt: skip
            r = server._admin.put(f"/v1/resources/{rid}", json={"parents": parents}, headers=admin)
            assert r.status_code in {200, 201}, r.text
        server.put_grant(
            "premium",
            subject="role:plan:premium",
            resource="release:R1",
            actions=["stream"],
            territories=["GB"],
            valid_until="2999-01-01T00:00:00Z",
        )
        server.put_grant(
            "takedown",
            subject="*",
            resource="track:GONE",
            actions=["stream"],
            territories=["*"],
            effect="deny",
        )
        yield server
    finally:
        server.close()


@pytest.fixture
def player(service: ServiceServer) -> Iterator[Player]:
    module = _player_module()
    clock = Clock()
    verifier = TokenVerifier(
        [
            IssuerConfig(
                issuer=service.settings.issuer,
                audience=UPSTREAM,
                keys=KeySet(url=service.url + "/.well-known/jwks.json"),
                max_lifetime=60,
                subject_prefix="",
            )
        ],
        leeway=LEEWAY,
        clock=clock,
    )
    app = module.create_gateway_app(verifier)
    seen: list[str] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"authorization":
                    seen.append(value.decode().removeprefix("Bearer "))
        await app(scope, receive, send)

    with _Uvicorn(recording) as server:
        yield Player(server.url, clock, seen)


@dataclass
class Edge:
    kind: str
    url: str


@pytest.fixture(params=["nginx", "envoy", "traefik"])
async def edge(
    request: pytest.FixtureRequest,
    service: ServiceServer,
    player: Player,
    nginx_gateway: NginxFactory,
    envoy_gateway: EnvoyFactory,
    traefik_gateway: TraefikFactory,
) -> AsyncIterator[Edge]:
    decision = ["X-Entitlements-Subject", "X-Entitlements-Grant", "X-Entitlements-Valid-Until"]
    if request.param == "nginx":
        proxy: Any = await nginx_gateway(service.url + CHECK_PREFIX, player.url)
    elif request.param == "envoy":
        proxy = await envoy_gateway(
            service.url,
            player.url,
            allowed_headers=[TERRITORY],
            decision_headers=[*decision, "X-Entitlements-Token"],
            upstream_headers=["authorization"],
        )
    else:
        # Every protected route mints, so Authorization is among the copied headers.
        proxy = await traefik_gateway(
            service.url + CHECK_PREFIX,
            player.url,
            response_headers=[*decision, "X-Entitlements-Token", "Authorization"],
        )
    yield Edge(request.param, proxy.url)


def alice(service: ServiceServer) -> dict[str, str]:
    token = service.token("alice", roles=("plan:premium",))
    return {"Authorization": f"Bearer {token}", TERRITORY: "GB"}


async def get(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        return await client.get(url, headers=headers)


async def test_premium_stream_through_the_gateway(
    edge: Edge, service: ServiceServer, player: Player
) -> None:
    r = await get(edge.url + "/tracks/T1/stream", alice(service))
    assert r.status_code == 200, (edge.kind, r.status_code, r.text)
    body = r.json()
    assert body["subject"] == "alice"  # from the per-request token, verified by the SDK
    assert body["roles"] == ["plan:premium"]
    assert body["decision"] == {
        "x-entitlements-subject": "user:alice",
        "x-entitlements-grant": "premium",
        "x-entitlements-valid-until": "2999-01-01T00:00:00Z",
    }
    # The player got the minted token, not alice's own.
    assert len(player.tokens) == 1
    assert player.tokens[0] != alice(service)["Authorization"].removeprefix("Bearer ")


async def test_takedown_403_and_missing_token_401_never_reach_the_player(
    edge: Edge, service: ServiceServer, player: Player
) -> None:
    r = await get(edge.url + "/tracks/GONE/stream", alice(service))
    assert r.status_code == 403, (edge.kind, r.text)
    r = await get(edge.url + "/tracks/T1/stream", {TERRITORY: "GB"})
    assert r.status_code == 401, (edge.kind, r.text)
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert player.tokens == []


async def test_the_minted_token_is_bound_and_short_lived(
    edge: Edge, service: ServiceServer, player: Player
) -> None:
    r = await get(edge.url + "/tracks/T1/stream", alice(service))
    assert r.status_code == 200, r.text
    (minted,) = player.tokens
    bearer = {"Authorization": f"Bearer {minted}"}
    # Replayed straight at the player: on another path, refused.
    r = await get(player.url + "/tracks/T2/stream", bearer)
    assert r.status_code == 401
    assert "another request" in r.json()["detail"]
    # On its own request it is good until its lifetime plus the verifier's leeway...
    player.clock.offset = LIFETIME + LEEWAY - 2
    assert (await get(player.url + "/tracks/T1/stream", bearer)).status_code == 200
    # ...and refused after.
    player.clock.offset = LIFETIME + LEEWAY + 1
    r = await get(player.url + "/tracks/T1/stream", bearer)
    assert r.status_code == 401
    assert r.json()["detail"] == "token has expired"


async def test_the_player_refuses_a_token_not_minted_for_it(
    service: ServiceServer, player: Player
) -> None:
    """Alice's own access token (audience: the service) is no per-request token."""
    r = await get(player.url + "/tracks/T1/stream", alice(service))
    assert r.status_code == 401
    await asyncio.sleep(0)


async def test_the_sdk_fastapi_dependency_checks_the_binding_on_request(
    service: ServiceServer,
) -> None:
    """``authenticated(bound_to_request=True)``: the SDK's FastAPI way to the same check."""
    minted = (
        await get(
            service.url + CHECK_PREFIX,
            {**alice(service), "X-Original-URI": "/tracks/T1/stream", "X-Original-Method": "GET"},
        )
    ).headers["x-entitlements-token"]
    trusted = IssuerConfig(
        issuer=service.settings.issuer,
        audience=UPSTREAM,
        keys=KeySet(url=service.url + "/.well-known/jwks.json"),
        max_lifetime=60,
        subject_prefix="",
    )
    async with AsyncEntitlements(service.url, verifier=[trusted]) as ent:
        app = FastAPI()
        bound = authenticated(client=ent, bound_to_request=True)

        @app.get("/tracks/{track}/stream")
        async def stream(token: VerifiedToken = Depends(bound)) -> dict[str, str]:
            # (a local dependency: string annotations cannot name it, so a default it is)
            return {"subject": token.subject}

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://player") as http:
            bearer = {"Authorization": f"Bearer {minted}"}
            r = await http.get("/tracks/T1/stream", headers=bearer)
            assert r.status_code == 200 and r.json() == {"subject": "alice"}
            r = await http.get("/tracks/T2/stream", headers=bearer)
            assert r.status_code == 401
            assert 'error="invalid_token"' in r.headers["www-authenticate"]
