"""The OpenAPI document says what the routes answer, and what serves a route documents it.

The real thing: ``entitlements serve`` on a socket, and the Schemathesis CLI run
against its ``/openapi.json`` with every check (the project's ``schemathesis.toml``:
all checks on, the few exceptions there each say why) — bounded to a few examples per
operation, with a fixed seed. A longer run is the same command without
``--max-examples`` (see ``schemathesis.toml``).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from processes import stop_process, wait_ready
from sdk_support import free_port
from support import Api, settings_for
from test_import_cli import ENTITLEMENTS, env_for

from entitlements.api.app import create_app
from entitlements.api.lean import LeanRoute
from entitlements.keys.signing import mint
from entitlements.store.keys import PostgresKeyStore
from entitlements.store.postgres import PostgresStore

ROOT = Path(__file__).resolve().parents[1]
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
ISSUER = "https://openapi.test"
AUDIENCE = "entitlements"
ALL_SCOPES = (
    "entitlements:check",
    "entitlements:check:any",
    "entitlements:admin",
    "entitlements:import",
    "entitlements:exchange",
)
# The bounded run only: the change feed's long poll answers at once (a boundary value
# of `wait` is 30 s, a costly example; the full run keeps it).
BOUNDED = """

[[operations]]
include-name = "GET /v1/changes"
parameters = { "query.wait" = 0 }
"""


def document() -> dict[str, Any]:
    app = create_app(settings_for("postgresql://unused@127.0.0.1/unused"))
    doc: dict[str, Any] = app.openapi()
    return doc


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, items in doc["paths"].items():
        for method, operation in items.items():
            yield method.upper(), path, operation


# --- the document, read in-process ---------------------------------------------


async def test_every_documented_operation_is_served_by_the_route_that_documents_it(
    clean: PostgresStore, pg_dsn: str
) -> None:
    """No twin: a request for each documented operation is handled by the route whose
    declaration produced that operation (a lean route's own, or a FastAPI route's).
    Sent without a token, so an authenticated route refuses it before doing anything."""
    app = create_app(settings_for(pg_dsn))
    doc = app.openapi()
    served: list[tuple[str, str, Any]] = []
    async with app.router.lifespan_context(app) as state:
        assert state is not None

        async def recording(scope: Any, receive: Any, send: Any) -> None:
            scope["state"] = dict(state)
            await app(scope, receive, send)
            served.append((scope["method"], scope["path"], scope.get("route")))

        transport = httpx.ASGITransport(app=recording)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for method, path, operation in operations(doc):
                concrete = re.sub(r"\{[^}]+\}", "x:1", path)
                r = await client.request(method, concrete)
                # The gateway check refuses a caller that is not a trusted proxy first (403).
                expected = 403 if path == "/v1/gateway/check" else 401
                assert r.status_code == (expected if operation["security"] else 200), (
                    method,
                    path,
                )
                route = served[-1][2]
                if isinstance(route, LeanRoute):
                    assert route.path == path
                    assert route.operation["operationId"] == operation["operationId"]
                else:
                    assert isinstance(route, APIRoute), (method, path, route)
                    assert route.unique_id == operation["operationId"], (method, path)
    assert len(served) == len(list(operations(doc))) >= 18


def test_every_error_is_documented_as_problem_json_and_auth_as_bearer() -> None:
    doc = document()
    for method, path, operation in operations(doc):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert list(response["content"]) == ["application/problem+json"], (
                    method,
                    path,
                    status,
                )
        needs_token = "401" in operation["responses"]
        assert operation["security"] == ([{"bearer": []}] if needs_token else []), (method, path)
    public = {(m, p) for m, p, o in operations(doc) if not o["security"]}
    assert public == {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/.well-known/jwks.json"),
        ("GET", "/.well-known/authzen-configuration"),
    }
    assert list(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    check = doc["paths"]["/v1/check"]["post"]
    assert set(check["responses"]) == {"200", "401", "403", "408", "413", "422", "503"}


async def test_a_method_a_path_does_not_serve_is_answered_with_every_method_it_does(
    api: Api,
) -> None:
    for method in ("OPTIONS", "PATCH", "POST"):
        r = await api.client.request(method, "/v1/grants/some-grant", headers=api.admin)
        assert r.status_code == 405
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["allow"] == "DELETE, GET, PUT"
    r = await api.client.get("/v1/check", headers=api.admin)
    assert r.status_code == 405 and r.headers["allow"] == "POST"


# --- Schemathesis against the served document ----------------------------------


@pytest.fixture(scope="module")
def served(
    store: PostgresStore, pg_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Callable[[], str]]]:
    """``entitlements serve`` on a free port, and a token carrying every scope."""
    env = env_for(pg_dsn) | {"ENTITLEMENTS_ISSUER": ISSUER, "ENTITLEMENTS_AUDIENCE": AUDIENCE}
    port = free_port()
    log = tmp_path_factory.mktemp("openapi") / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [ENTITLEMENTS, "serve", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log.read_text)
        yield url, log.read_text
    finally:
        stop_process(proc)


async def test_schemathesis_with_every_check_finds_nothing(
    clean: PostgresStore, served: tuple[str, Callable[[], str]], tmp_path: Path
) -> None:
    url, server_log = served
    key = await PostgresKeyStore(clean.pool, "EdDSA").ensure_active()
    token, _ = mint(
        key, issuer=ISSUER, audience=AUDIENCE, subject="ops", ttl=600, scopes=ALL_SCOPES
    )
    config = tmp_path / "schemathesis.toml"
    config.write_text((ROOT / "schemathesis.toml").read_text() + BOUNDED)
    run = await asyncio.create_subprocess_exec(
        SCHEMATHESIS,
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        "3",
        "--seed",
        "1",
        "--generation-database",
        "none",
        "--workers",
        "1",
        cwd=tmp_path,  # its cache and reports stay out of the repository
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(170):
        stdout, _ = await run.communicate()
    output = stdout.decode(errors="replace")
    assert run.returncode == 0, output[-6000:]
    operations_count = len(list(operations(document())))
    assert f"Tested: {operations_count}" in output, output[-3000:]
    assert re.search(r"\b\d+ passed\b", output), output[-3000:]
    assert "Authentication failed" not in output, output[-3000:]
    text = server_log()
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-3000:]
