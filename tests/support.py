"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from entitlements.api.app import AppState, create_app
from entitlements.settings import Settings


def settings_for(dsn: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": dsn,
        "issuer": "https://entitlements.test",
        "audience": "entitlements",
        "data_dir": Path("/nonexistent"),
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    """The app in-process, its lifespan run, behind an httpx client (no socket)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        assert state is not None

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] in {"http", "websocket"}:
                scope["state"] = dict(state)
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, state["ent"]


class Api:
    """A test client bundled with the app state and helpers to mint tokens."""

    def __init__(self, client: httpx.AsyncClient, state: AppState) -> None:
        self.client = client
        self.state = state

    def token(
        self,
        sub: str = "alice",
        *,
        roles: tuple[str, ...] = (),
        scopes: tuple[str, ...] = (),
        ttl: float = 900,
    ) -> str:
        return self.state.tokens.mint_access(sub, roles=roles, scopes=scopes, ttl=ttl)

    def headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.headers(self.token("ops", scopes=("entitlements:admin",)))

    async def put_grant(self, grant_id: str, **body: Any) -> httpx.Response:
        response = await self.client.put(f"/v1/grants/{grant_id}", json=body, headers=self.admin)
        assert response.status_code in {200, 201}, response.text
        return response

    async def put_resource(self, rid: str, parents: list[str]) -> httpx.Response:
        response = await self.client.put(
            f"/v1/resources/{rid}", json={"parents": parents}, headers=self.admin
        )
        assert response.status_code in {200, 201}, response.text
        return response

    async def check(self, token: str, **body: Any) -> dict[str, Any]:
        response = await self.client.post("/v1/check", json=body, headers=self.headers(token))
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


async def eventually(
    probe: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, interval: float = 0.05
) -> bool:
    """Poll ``probe`` until it is true or ``timeout`` passes; returns the last result."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await probe():
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(interval)
