"""The layers of docs/design.md, enforced: the core imports no framework or driver.

Each import runs in a fresh interpreter, so what this test process (and its
conftest) has already imported cannot hide a leak, and one module cannot mask
another.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import entitlements

DOMAIN_MODULES = [
    "entitlements.domain",
    "entitlements.domain.model",
    "entitlements.domain.policy",
    "entitlements.domain.territories",
    "entitlements.domain.fields",
    "entitlements.domain.grant",
    "entitlements.domain.decision",
    "entitlements.domain.validation",
    "entitlements.errors",
]
SERVICE_MODULES = [
    "entitlements.service.checks",
    "entitlements.service.access",
    "entitlements.service.admin",
    "entitlements.service.changes",
]
# The domain is plain Python: no web framework, no driver, no HTTP client, and
# nothing from the layers above it.
DOMAIN_FORBIDDEN = [
    "fastapi",
    "starlette",
    "asyncpg",
    "redis",
    "httpx",
    "uvicorn",
    "entitlements.api",
    "entitlements.cli",
    "entitlements.service",
    "entitlements.store",
]
# The service layer may reach the store (and so its driver), never the web
# framework or the cache client directly.
SERVICE_FORBIDDEN = [
    "fastapi",
    "starlette",
    "redis",
    "uvicorn",
    "entitlements.api",
    "entitlements.cli",
]


def imported_by(module: str) -> set[str]:
    """The modules a fresh interpreter holds after ``import module``."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def leaks(modules: set[str], forbidden: list[str]) -> list[str]:
    return sorted(
        name for name in modules if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


@pytest.mark.parametrize("module", DOMAIN_MODULES)
def test_the_domain_imports_no_framework_driver_or_upper_layer(module: str) -> None:
    assert leaks(imported_by(module), DOMAIN_FORBIDDEN) == []


@pytest.mark.parametrize("module", SERVICE_MODULES)
def test_the_check_service_imports_no_web_framework_or_redis(module: str) -> None:
    assert leaks(imported_by(module), SERVICE_FORBIDDEN) == []


# The use cases and the key material reach storage through the ports of
# entitlements.service.ports only: importing them loads no driver at all.
PORT_USERS = [
    "entitlements.service.checks",
    "entitlements.service.access",
    "entitlements.service.admin",
    "entitlements.service.changes",
    "entitlements.service.imports",
    "entitlements.service.ports",
    "entitlements.service.tokens",
    "entitlements.keys.signing",
]


@pytest.mark.parametrize("module", PORT_USERS)
def test_the_service_and_the_keys_load_no_driver(module: str) -> None:
    assert leaks(imported_by(module), ["asyncpg", *SERVICE_FORBIDDEN]) == []


SQL = re.compile(r"\b(SELECT|INSERT INTO|DELETE FROM|CREATE TEMP|pg_advisory)\b|\bUPDATE \w+ SET\b")


def test_every_postgres_statement_lives_in_the_store() -> None:
    package = Path(entitlements.__file__).parent
    outside = [
        str(path.relative_to(package))
        for path in sorted(package.rglob("*.py"))
        if path.relative_to(package).parts[0] != "store"
        and SQL.search(path.read_text(encoding="utf-8"))
    ]
    assert outside == []
    assert SQL.search((package / "store" / "grants.py").read_text(encoding="utf-8"))


def test_the_leak_detector_detects() -> None:
    # Guard against a check that can never fail: httpx does import itself.
    assert leaks(imported_by("httpx"), ["httpx"]) != []
    assert leaks({"fastapi.routing", "fastapix", "redis"}, ["fastapi", "redis"]) == [
        "fastapi.routing",
        "redis",
    ]


GATEWAY_MODULES = [
    "entitlements.gateway.paths",
    "entitlements.gateway.routes",
    "entitlements.gateway.route_config",
    "entitlements.gateway.proxies",
    "entitlements.gateway.forwarded",
]


@pytest.mark.parametrize("module", GATEWAY_MODULES)
def test_the_gateway_parts_import_no_framework_driver_or_upper_layer(module: str) -> None:
    # The route table and the forwarded-request reader are plain Python, like the domain.
    assert leaks(imported_by(module), DOMAIN_FORBIDDEN) == []
