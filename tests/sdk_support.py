"""The real thing for SDK tests: the service under uvicorn on a loopback socket, a TCP
proxy that can be made slow, and one adapter that runs a test over both clients.

Nothing is mocked. ``ServiceServer`` runs ``create_app(settings)`` under uvicorn
in a thread of the test process (its own event loop), so tokens are minted with
the running app's own keys and the server can be stopped and started again on
the same port. ``SlowProxy`` forwards bytes to it, optionally holding every
answer back for ``delay`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import uvicorn
from support import settings_for

from entitlements.api.app import AppState, create_app
from entitlements.settings import Settings
from entitlements_client import (
    AsyncEntitlements,
    Decision,
    Entitlements,
    TokenVerifier,
    service_issuer,
)

ISSUER = "https://entitlements.test"
AUDIENCE = "entitlements"
CHECK_ANY = "entitlements:check:any"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique(prefix: str) -> str:
    """Ids no other test uses: the session's server keeps its caches across tests."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class ServiceServer:
    """The entitlements service under uvicorn on ``127.0.0.1:<port>``, in a thread."""

    def __init__(self, settings: Settings, port: int | None = None) -> None:
        self.settings = settings
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._state: AppState | None = None
        self._admin = httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)

    @property
    def state(self) -> AppState:
        assert self._state is not None, "server not started"
        return self._state

    def start(self, timeout: float = 20.0) -> None:
        app = create_app(self.settings)
        captured: dict[str, Any] = {}

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                # uvicorn hands the lifespan a state dict that the app fills at startup
                # (and copies into every request): keep a reference to read it.
                captured["state"] = scope["state"]
            await app(scope, receive, send)

        config = uvicorn.Config(
            with_state,
            host="127.0.0.1",
            port=self.port,
            lifespan="on",
            log_level="warning",
            access_log=False,
            ws="none",
            timeout_graceful_shutdown=3,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"uvicorn-{self.port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the entitlements service did not start")
            time.sleep(0.01)
        self._server, self._thread = server, thread
        self._state = captured["state"]["ent"]

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=15)
        assert not self._thread.is_alive(), "uvicorn did not stop"
        self._server = self._thread = None

    def close(self) -> None:
        self.stop()
        self._admin.close()

    # -- helpers that talk to the real API -------------------------------------------

    def token(self, sub: str, *, roles: tuple[str, ...] = (), scopes: tuple[str, ...] = ()) -> str:
        return self.state.tokens.mint_access(sub, roles=roles, scopes=scopes, ttl=900)

    def service_token(self) -> str:
        return self.token("svc-player", scopes=(CHECK_ANY,))

    def _admin_headers(self) -> dict[str, str]:
        token = self.token("ops", scopes=("entitlements:admin",))
        return {"Authorization": f"Bearer {token}"}

    def put_grant(self, grant_id: str, **body: Any) -> int:
        response = self._admin.put(
            f"/v1/grants/{grant_id}", json=body, headers=self._admin_headers()
        )
        assert response.status_code in {200, 201}, response.text
        return int(response.json()["revision"])

    def delete_grant(self, grant_id: str) -> int:
        response = self._admin.delete(f"/v1/grants/{grant_id}", headers=self._admin_headers())
        assert response.status_code == 200, response.text
        return int(response.json()["revision"])

    def put_resource(self, rid: str, parents: list[str]) -> int:
        response = self._admin.put(
            f"/v1/resources/{rid}", json={"parents": parents}, headers=self._admin_headers()
        )
        assert response.status_code in {200, 201}, response.text
        return int(response.json()["revision"])

    def exchange(self, user_token: str, scope: str, resources: list[str]) -> tuple[str, str]:
        """RFC 8693: trade a user token for a long-lived exchanged one; (token, jti)."""
        actor = self.token("svc-orders", scopes=("entitlements:exchange",))
        response = self._admin.post(
            "/v1/token/exchange",
            json={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": user_token,
                "audience": AUDIENCE,
                "scope": scope,
                "resource": resources,
                "expires_in": "1h",
            },
            headers={"Authorization": f"Bearer {actor}"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        return str(body["access_token"]), str(body["jti"])

    def revoke(self, jti: str) -> int:
        response = self._admin.post(
            "/v1/token/revoke", json={"jti": jti}, headers=self._admin_headers()
        )
        assert response.status_code == 200, response.text
        return int(response.json()["revision"])

    def check(self, token: str, **body: Any) -> dict[str, Any]:
        """The service's own answer, asked directly with the user's token."""
        response = self._admin.post(
            "/v1/check", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def verifier(self) -> TokenVerifier:
        """What an SDK user builds: trust the service's JWKS over the socket."""
        return TokenVerifier([service_issuer(self.url, issuer=ISSUER, audience=AUDIENCE)])


class SlowProxy:
    """A TCP proxy on loopback in front of ``target``; ``delay`` holds every answer back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay = 0.0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="slow-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, answers: bool) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if answers and self.delay:
                    time.sleep(self.delay)
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # close() alone does not wake a thread blocked in accept() or recv() on Linux.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
        self._thread.join(timeout=5)


class RequestLog:
    """Counts the HTTP requests an injected httpx client really sends, by path."""

    def __init__(self) -> None:
        self.paths: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record(self, request: httpx.Request) -> None:
        with self._lock:
            self.paths[request.url.path] += 1

    async def arecord(self, request: httpx.Request) -> None:
        self.record(request)

    @property
    def checks(self) -> int:
        """Requests to ``/v1/check`` and ``/v1/check/batch``."""
        return self.paths["/v1/check"] + self.paths["/v1/check/batch"]

    def reset(self) -> None:
        with self._lock:
            self.paths.clear()


class Sdk:
    """One SDK client behind one interface: sync calls run directly, async ones awaited.

    Tests are written once against this and run for ``Entitlements`` and
    ``AsyncEntitlements`` (the authzed-py pattern).
    """

    def __init__(
        self, kind: str, client: Entitlements | AsyncEntitlements, log: RequestLog
    ) -> None:
        self.kind = kind
        self.client = client
        self.log = log

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.client, name)(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def authorize(self, *args: Any, **kwargs: Any) -> Decision:
        decision: Decision = await self._call("authorize", *args, **kwargs)
        return decision

    async def authorize_many(self, *args: Any, **kwargs: Any) -> list[Decision]:
        decisions: list[Decision] = await self._call("authorize_many", *args, **kwargs)
        return decisions

    async def ensure(self, *args: Any, **kwargs: Any) -> Decision:
        decision: Decision = await self._call("ensure", *args, **kwargs)
        return decision

    async def concurrently(self, calls: list[tuple[Any, ...]]) -> list[Decision | BaseException]:
        """Every ``authorize(*call)`` at once: tasks for async, one thread each for sync."""
        if isinstance(self.client, AsyncEntitlements):
            client = self.client
            return list(
                await asyncio.gather(*(client.authorize(*c) for c in calls), return_exceptions=True)
            )
        sync = self.client
        barrier = threading.Barrier(len(calls))

        def one(call: tuple[Any, ...]) -> Decision | BaseException:
            barrier.wait()
            try:
                return sync.authorize(*call)
            except Exception as exc:
                return exc

        with ThreadPoolExecutor(max_workers=len(calls)) as pool:
            return list(pool.map(one, calls))

    async def close(self) -> None:
        if isinstance(self.client, AsyncEntitlements):
            await self.client.aclose()
        else:
            self.client.close()


def make_sdk(
    kind: str,
    base_url: str,
    verifier: TokenVerifier,
    **options: Any,
) -> Sdk:
    """A client of ``kind`` ("sync"/"async") whose HTTP requests are counted."""
    log = RequestLog()
    client: Entitlements | AsyncEntitlements
    if kind == "sync":
        http = httpx.Client(event_hooks={"request": [log.record]}, trust_env=False)
        client = Entitlements(base_url, verifier=verifier, http=http, **options)
    else:
        ahttp = httpx.AsyncClient(event_hooks={"request": [log.arecord]}, trust_env=False)
        client = AsyncEntitlements(base_url, verifier=verifier, http=ahttp, **options)
    return Sdk(kind, client, log)


async def close_sdk(sdk: Sdk) -> None:
    await sdk.close()
    http = sdk.client._http
    if isinstance(http, httpx.AsyncClient):
        await http.aclose()
    else:
        http.close()


async def eventually(
    probe: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02
) -> float:
    """Await ``probe()`` until truthy; returns the seconds it took (raises on timeout)."""
    start = time.monotonic()
    while True:
        result = probe()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true within {timeout} s")
        await asyncio.sleep(interval)


# -- fixtures: test modules import ``service_fixture`` and ``sdks_fixture`` ---------------

# Every module importing ``service`` gets its own session-scoped fixture; they share one
# server, closed by the last of them at the end of the session.
_shared: dict[str, tuple[ServiceServer, int]] = {}


@pytest.fixture(scope="session", name="service")
def service_fixture(pg_dsn: str) -> Iterator[ServiceServer]:
    """The service on a real socket for the whole session (real Postgres, caches on)."""
    server, users = _shared.get(pg_dsn, (None, 0))
    if server is None:
        server = ServiceServer(settings_for(pg_dsn, staleness=2.0))
        server.start()
    _shared[pg_dsn] = (server, users + 1)
    try:
        yield server
    finally:
        server, users = _shared.pop(pg_dsn)
        if users > 1:
            _shared[pg_dsn] = (server, users - 1)
        else:
            server.close()


SdkFactory = Callable[..., Sdk]


@pytest.fixture(params=["sync", "async"], name="sdks")
async def sdks_fixture(
    request: pytest.FixtureRequest, service: ServiceServer
) -> AsyncIterator[SdkFactory]:
    """Make SDK clients of one kind (the test runs once per kind); all closed afterwards.

    ``sdks(base_url=None, verifier=None, **options)``: defaults to the session's service.
    """
    made: list[Sdk] = []

    def make(
        base_url: str | None = None, verifier: TokenVerifier | None = None, **options: Any
    ) -> Sdk:
        sdk = make_sdk(
            request.param, base_url or service.url, verifier or service.verifier(), **options
        )
        made.append(sdk)
        return sdk

    yield make
    for sdk in made:
        await close_sdk(sdk)
