"""Cookie mode (issue 15): the SDK's FastAPI dependency and ASGI middleware read the token
from an HttpOnly cookie, and refuse a state-changing request from an origin not allowed.

A small downstream app in process (``httpx.ASGITransport``, with a cookie jar as a
browser keeps one) asks the real entitlements service on a real socket.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from sdk_support import (
    ServiceServer,
    service_fixture,  # noqa: F401  (fixture)
    unique,
)

from entitlements_client import (
    AsyncEntitlements,
    CookieAuth,
    Decision,
    EntitlementsMiddleware,
    VerifiedToken,
)
from entitlements_client.fastapi import authenticated, require

APP = "https://player.example.com"
PREMIUM = "plan:premium"


@pytest.fixture
def premium_track(service: ServiceServer) -> tuple[str, str]:
    track = unique("T")
    service.put_grant(
        unique("g-"),
        subject=f"role:{PREMIUM}",
        resource=f"track:{track}",
        actions=["stream"],
        territories=["GB"],
    )
    return track, service.token(unique("alice-"), roles=(PREMIUM,))


def player(ent: AsyncEntitlements, cookie: CookieAuth) -> FastAPI:
    app = FastAPI()
    streamable = require(
        "stream",
        resource=lambda r: f"track:{r.path_params['id']}",
        territory="GB",
        client=ent,
        cookie=cookie,
    )
    me = authenticated(client=ent, cookie=cookie)

    @app.get("/tracks/{id}/stream")
    async def stream(decision: Decision = Depends(streamable)) -> dict[str, Any]:
        return {"grant": decision.grant}

    @app.post("/tracks/{id}/plays")
    async def count_play(decision: Decision = Depends(streamable)) -> dict[str, Any]:
        return {"counted": True}

    @app.get("/me")
    async def whoami(token: VerifiedToken = Depends(me)) -> dict[str, Any]:
        return {"subject": token.subject}

    return app


async def test_the_fastapi_dependency_reads_the_token_from_the_cookie(
    service: ServiceServer, premium_track: tuple[str, str]
) -> None:
    track, token = premium_track
    cookie = CookieAuth([APP], name="player_session")
    async with AsyncEntitlements(service.url, verifier=service.verifier()) as ent:
        transport = httpx.ASGITransport(app=player(ent, cookie))
        async with httpx.AsyncClient(transport=transport, base_url="http://player") as browser:
            browser.cookies.set("player_session", token)
            played = await browser.get(f"/tracks/{track}/stream")
            assert played.status_code == 200, played.text
            assert played.json()["grant"]
            assert (await browser.get("/me")).json()["subject"].startswith("alice-")

            # State-changing: only from a page of an allowed origin.
            same_site = await browser.post(f"/tracks/{track}/plays", headers={"Origin": APP})
            assert same_site.status_code == 200, same_site.text
            forged = await browser.post(
                f"/tracks/{track}/plays", headers={"Origin": "https://evil.example"}
            )
            assert forged.status_code == 403
            assert "may not change state" in forged.json()["detail"]
            no_origin = await browser.post(f"/tracks/{track}/plays")
            assert no_origin.status_code == 403

            # A bearer header is no CSRF risk: checked as always, whatever the origin.
            bearer = await browser.post(
                f"/tracks/{track}/plays",
                headers={"Authorization": f"Bearer {token}", "Origin": "https://evil.example"},
            )
            assert bearer.status_code == 200

            browser.cookies.set("player_session", token[:-4] + "AAAA")
            assert (await browser.get(f"/tracks/{track}/stream")).status_code == 401
            browser.cookies.clear()
            anonymous = await browser.get(f"/tracks/{track}/stream")
            assert anonymous.status_code == 401


async def test_the_asgi_middleware_reads_the_cookie_and_refuses_cross_origin_writes(
    service: ServiceServer, premium_track: tuple[str, str]
) -> None:
    _, token = premium_track
    cookie = CookieAuth([APP])
    async with AsyncEntitlements(service.url, verifier=service.verifier()) as ent:
        inner = FastAPI()

        @inner.api_route("/whoami", methods=["GET", "POST"])
        async def whoami(request: Request) -> dict[str, Any]:
            verified: VerifiedToken = request.state.token
            return {"subject": verified.subject}

        app = EntitlementsMiddleware(inner, ent, cookie=cookie)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as browser:
            browser.cookies.set("entitlements_token", token)
            assert (await browser.get("/whoami")).status_code == 200
            assert (await browser.post("/whoami", headers={"Origin": APP})).status_code == 200
            evil = await browser.post("/whoami", headers={"Origin": "https://evil.example"})
            assert evil.status_code == 403
            assert evil.headers["content-type"] == "application/problem+json"
            browser.cookies.clear()
            assert (await browser.get("/whoami")).status_code == 401


def test_cookie_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="not an exact origin"):
        CookieAuth(["*"])
    with pytest.raises(ValueError, match="not an exact origin"):
        CookieAuth(["https://app.example.com/"])
    with pytest.raises(ValueError, match="not a cookie name"):
        CookieAuth([APP], name="a;b")
    auth = CookieAuth([APP], name="s")
    assert auth.token('theme=dark; s="abc.def.ghi"; other=1') == "abc.def.ghi"
    assert auth.token("s=") is None and auth.token(None) is None
