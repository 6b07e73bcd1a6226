"""The FastAPI dependency and the ASGI middleware, in small real apps.

The downstream apps (the example player in ``client/examples/player.py`` and
a bare one) are driven in-process through ``httpx.ASGITransport``; the
entitlements service they ask is the real one on a real socket.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from sdk_support import (
    ServiceServer,
    free_port,
    service_fixture,  # noqa: F401  (fixture)
    unique,
)

from entitlements_client import (
    AsyncEntitlements,
    Decision,
    EntitlementsMiddleware,
    VerifiedToken,
)
from entitlements_client.fastapi import require

EXAMPLE = Path(__file__).parents[1] / "client" / "examples" / "player.py"
PREMIUM = "plan:premium"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("player_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["player_example"] = module
    spec.loader.exec_module(module)
    return module


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan and talk to it in process (ASGITransport runs no lifespan)."""
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                scope["state"] = dict(state or {})
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://player") as client:
            yield client


@pytest.fixture
def tracks(service: ServiceServer) -> dict[str, str]:
    """A premium deal on one track; a free user; a premium user."""
    track = unique("T")
    service.put_grant(
        unique("g-"),
        subject=f"role:{PREMIUM}",
        resource=f"track:{track}",
        actions=["stream", "download"],
        territories=["GB"],
        attributes={"quality": "lossless"},
    )
    return {
        "track": track,
        "premium": service.token(unique("alice-"), roles=(PREMIUM,)),
        "free": service.token(unique("bob-"), roles=("plan:free",)),
    }


@pytest.mark.parametrize("with_service_token", [True, False])
async def test_the_example_player_guards_its_routes(
    service: ServiceServer, tracks: dict[str, str], with_service_token: bool
) -> None:
    player = load_example()
    token = service.service_token() if with_service_token else None

    def make_client() -> AsyncEntitlements:
        return AsyncEntitlements(service.url, verifier=service.verifier(), service_token=token)

    app = player.create_app(make_client)
    track, premium, free = tracks["track"], tracks["premium"], tracks["free"]
    path = f"/tracks/{track}/stream"
    async with serve(app) as http:
        ok = await http.get(path, headers={"Authorization": f"Bearer {premium}", "X-Country": "GB"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["quality"] == "lossless"

        abroad = await http.get(
            path, headers={"Authorization": f"Bearer {premium}", "X-Country": "JP"}
        )
        assert abroad.status_code == 403
        assert abroad.json()["detail"] == "not allowed: territory"

        unlicensed = await http.get(
            path, headers={"Authorization": f"Bearer {free}", "X-Country": "GB"}
        )
        assert unlicensed.status_code == 403

        anonymous = await http.get(path, headers={"X-Country": "GB"})
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"

        forged = await http.get(
            path, headers={"Authorization": f"Bearer {premium[:-4]}AAAA", "X-Country": "GB"}
        )
        assert forged.status_code == 401
        assert forged.headers["www-authenticate"].startswith('Bearer error="invalid_token"')

        nowhere = await http.get(path, headers={"Authorization": f"Bearer {premium}"})
        assert nowhere.status_code == 400  # no territory: the question cannot be asked

        # The coarse gate: a free plan may not download at all, the service is not asked.
        gated = await http.get(
            f"/tracks/{track}/download",
            headers={"Authorization": f"Bearer {free}", "X-Country": "GB"},
        )
        assert gated.status_code == 403
        assert "plan:premium" in gated.json()["detail"]

        me = await http.get("/me", headers={"Authorization": f"Bearer {premium}"})
        assert me.status_code == 200
        assert me.json()["roles"] == [PREMIUM]


async def test_no_answer_is_a_503_never_an_allow(
    service: ServiceServer, tracks: dict[str, str]
) -> None:
    player = load_example()

    def make_client() -> AsyncEntitlements:
        return AsyncEntitlements(
            f"http://127.0.0.1:{free_port()}", verifier=service.verifier(), timeout=0.3
        )

    async with serve(player.create_app(make_client)) as http:
        response = await http.get(
            f"/tracks/{tracks['track']}/stream",
            headers={"Authorization": f"Bearer {tracks['premium']}", "X-Country": "GB"},
        )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


async def test_the_asgi_middleware_puts_the_verified_token_in_the_state(
    service: ServiceServer, tracks: dict[str, str]
) -> None:
    async with AsyncEntitlements(service.url, verifier=service.verifier()) as ent:
        inner = FastAPI()

        @inner.get("/whoami")
        async def whoami(request: Request) -> dict[str, Any]:
            token: VerifiedToken = request.state.token
            return {"subject": token.subject}

        @inner.get("/healthz")
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        streamable = require(
            "stream",
            resource=lambda r: f"track:{r.path_params['id']}",
            territory="GB",
            client=ent,
        )

        @inner.get("/tracks/{id}")
        async def play(decision: Decision = Depends(streamable)) -> dict[str, Any]:
            # (a local dependency: string annotations cannot name it, so a default it is)
            return {"grant": decision.grant}

        app = EntitlementsMiddleware(inner, ent, exclude_paths=["/healthz"])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            premium = {"Authorization": f"Bearer {tracks['premium']}"}
            who = await http.get("/whoami", headers=premium)
            assert who.status_code == 200
            assert who.json()["subject"].startswith("alice-")

            played = await http.get(f"/tracks/track:{tracks['track']}", headers=premium)
            assert played.status_code == 403  # resource "track:track:…" is not licensed
            played = await http.get(f"/tracks/{tracks['track']}", headers=premium)
            assert played.status_code == 200 and played.json()["grant"]

            missing = await http.get("/whoami")
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == "Bearer"
            assert missing.headers["content-type"] == "application/problem+json"

            bad = await http.get("/whoami", headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401
            assert 'error="invalid_token"' in bad.headers["www-authenticate"]

            assert (await http.get("/healthz")).status_code == 200

        optional = EntitlementsMiddleware(inner, service.verifier(), optional=True)
        transport = httpx.ASGITransport(app=optional)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            assert (await http.get("/healthz")).status_code == 200
            bad = await http.get("/healthz", headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401
