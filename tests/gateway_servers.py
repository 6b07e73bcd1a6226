"""Fixtures that start real proxies (nginx, Envoy, Traefik) in front of a check and an app.

A pytest plugin.

Loaded by ``tests/conftest.py`` (``pytest_plugins``). Every proxy is a real
process on a free port in a temporary directory, stopped by PID at teardown;
a machine without the binary skips naming what to install (fails under
``CI=true``).

- ``stand_in(respond) -> StandInServer``: a plain Python HTTP server in a thread,
  recording requests and answering ``respond(seen) -> Reply`` (a stand-in check or
  app); closed at teardown.
- ``await nginx_gateway(auth_url, upstream_url, **kw) -> NginxGateway``: nginx with
  ``auth_request`` to ``auth_url`` (the check's full URL) in front of
  ``upstream_url`` (see ``nginx_server``).
- ``await envoy_gateway(auth_url, upstream_url, **kw) -> EnvoyGateway``: Envoy with
  HTTP ``ext_authz`` to ``auth_url`` (base URL; ``path_prefix`` is the check's
  path) in front of ``upstream_url`` (see ``envoy_server``).
- ``await traefik_gateway(auth_url, upstream_url, **kw) -> TraefikGateway``: Traefik
  with ``forwardAuth`` to ``auth_url`` (the check's full URL) in front of
  ``upstream_url`` (see ``traefik_server``).

Phase 2 points ``auth_url`` at a real uvicorn serving the app; the time each proxy
takes to start is in pytest's terminal summary (``servers.py`` prints it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from envoy_server import EnvoyGateway
from gateway_support import Responder, StandInServer
from nginx_server import NginxGateway
from servers import _record
from traefik_server import TraefikGateway

StandInFactory = Callable[[Responder], StandInServer]
NginxFactory = Callable[..., Awaitable[NginxGateway]]
EnvoyFactory = Callable[..., Awaitable[EnvoyGateway]]
TraefikFactory = Callable[..., Awaitable[TraefikGateway]]


@pytest.fixture
def stand_in() -> Iterator[StandInFactory]:
    started: list[StandInServer] = []

    def start(respond: Responder) -> StandInServer:
        server = StandInServer(respond)
        server.__enter__()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in reversed(started):
            server.close()


@pytest.fixture
async def nginx_gateway() -> AsyncIterator[NginxFactory]:
    started: list[NginxGateway] = []

    async def start(auth_url: str, upstream_url: str, **options: Any) -> NginxGateway:
        gateway = NginxGateway(auth_url, upstream_url, **options)
        started.append(gateway)
        await gateway.start()
        _record("nginx gateway", {"start": gateway.startup_seconds})
        return gateway

    try:
        yield start
    finally:
        for gateway in reversed(started):
            await gateway.close()


@pytest.fixture
async def envoy_gateway() -> AsyncIterator[EnvoyFactory]:
    started: list[EnvoyGateway] = []

    async def start(auth_url: str, upstream_url: str, **options: Any) -> EnvoyGateway:
        gateway = EnvoyGateway(auth_url, upstream_url, **options)
        started.append(gateway)
        await gateway.start()
        _record(f"envoy {gateway.version} gateway", {"start": gateway.startup_seconds})
        return gateway

    try:
        yield start
    finally:
        for gateway in reversed(started):
            await gateway.close()


@pytest.fixture
async def traefik_gateway() -> AsyncIterator[TraefikFactory]:
    started: list[TraefikGateway] = []

    async def start(auth_url: str, upstream_url: str, **options: Any) -> TraefikGateway:
        gateway = TraefikGateway(auth_url, upstream_url, **options)
        started.append(gateway)
        await gateway.start()
        _record("traefik gateway", {"start": gateway.startup_seconds})
        return gateway

    try:
        yield start
    finally:
        for gateway in reversed(started):
            await gateway.close()
