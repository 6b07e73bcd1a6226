"""The layers of DESIGN.md, enforced: the core imports no framework or driver.

Each import runs in a fresh interpreter, so what this test process (and its
conftest) has already imported cannot hide a leak, and one module cannot mask
another.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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


def test_the_leak_detector_detects() -> None:
    # Guard against a check that can never fail: httpx does import itself.
    assert leaks(imported_by("httpx"), ["httpx"]) != []
    assert leaks({"fastapi.routing", "fastapix", "redis"}, ["fastapi", "redis"]) == [
        "fastapi.routing",
        "redis",
    ]
