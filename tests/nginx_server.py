"""A real nginx (the OS package) as the gateway: ``auth_request`` to an auth URL, then
proxy to an upstream, passing the decision headers on.

Its configuration, temporary directories and PID file live in a fresh directory;
it listens on a free port on 127.0.0.1, runs in the foreground (``daemon off``)
as a child of the test process (so :class:`processes.ServerProcess` stops it by
PID), logs to stderr (``nginx.log`` beside its configuration). As root it runs
as the servers' unprivileged user (``processes.server_user``); nginx itself does
not need root for a port above 1024.

The ``http { }`` body is :func:`gateway_http_config` unless a test gives its own
(``docs/gateway.md``'s, with its addresses replaced: :func:`docs_nginx_config`).
:func:`nginx_config_test` runs ``nginx -t`` on such a body.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from binaries import require_binary
from gateway_support import DECISION_HEADERS
from processes import (
    ServerProcess,
    free_port,
    make_owned_dir,
    server_user,
    servers_tempdir,
    wait_for,
)

__all__ = [
    "NginxGateway",
    "docs_nginx_config",
    "gateway_http_config",
    "nginx_binary",
    "nginx_config_test",
]

SEARCH = (Path("/usr/sbin"), Path("/usr/local/sbin"), Path("/usr/local/nginx/sbin"))
DOCS = Path(__file__).resolve().parent.parent / "docs" / "gateway.md"


def nginx_binary() -> Path:
    """The nginx binary, or skip (fail under CI) naming the OS package."""
    return require_binary("nginx", "nginx", search=SEARCH)


def _variable(header: str) -> str:
    """``X-Entitlements-Grant`` → ``entitlements_grant`` (an nginx variable name)."""
    return header.lower().removeprefix("x-").replace("-", "_")


def gateway_http_config(
    *,
    listen_port: int,
    auth_url: str,
    upstream_url: str,
    decision_headers: Sequence[str] = DECISION_HEADERS,
    token_as_authorization: bool = True,
) -> str:
    """The ``http { }`` body: ``auth_request`` to ``auth_url`` (the full URL of the check,
    e.g. ``http://127.0.0.1:8000/v1/gateway/check``), then ``proxy_pass`` to
    ``upstream_url``. Each of ``decision_headers`` from a 200 auth answer is set on the
    upstream request (replacing a client's copy; absent → removed). With
    ``token_as_authorization``, a minted ``X-Entitlements-Token`` is sent upstream as
    ``Authorization: Bearer …`` (the client's ``Authorization`` passes otherwise)."""
    auth = urlsplit(auth_url)
    upstream = urlsplit(upstream_url)
    sets = "\n".join(
        f"        auth_request_set ${_variable(h)} $upstream_http_{_variable('x-' + h)};"
        for h in decision_headers
    )
    passes = "\n".join(f"        proxy_set_header {h} ${_variable(h)};" for h in decision_headers)
    token_map = ""
    authorization = ""
    if token_as_authorization and "X-Entitlements-Token" in decision_headers:
        token_map = (
            "    map $entitlements_token $entitlements_authorization {\n"
            '        ""      $http_authorization;\n'
            '        default "Bearer $entitlements_token";\n'
            "    }\n"
        )
        authorization = "        proxy_set_header Authorization $entitlements_authorization;\n"
    return f"""
    upstream entitlements {{
        server {auth.hostname}:{auth.port};
        keepalive 16;
    }}
    upstream app {{
        server {upstream.hostname}:{upstream.port};
    }}
{token_map}
    server {{
        listen 127.0.0.1:{listen_port};

        location / {{
        auth_request /_entitlements_check;
{sets}
{passes}
{authorization}        proxy_pass http://app;
        }}

        location = /_entitlements_check {{
            internal;
            proxy_pass http://entitlements{auth.path or "/v1/gateway/check"};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Uri "";
            proxy_set_header X-Forwarded-Method "";
        }}
    }}
"""


def docs_nginx_config(*, listen_port: int, auth_url: str, upstream_url: str) -> str:
    """The nginx configuration of ``docs/gateway.md`` with its example addresses replaced:
    ``listen 80`` → our port, ``127.0.0.1:8000`` (entitlements) and ``127.0.0.1:8080``
    (the upstream app) → the given URLs' host and port."""
    text = DOCS.read_text(encoding="utf-8")
    found = re.search(r"<!-- nginx-config -->\s*```nginx\n(.*?)```", text, re.S)
    if found is None:
        raise AssertionError("docs/gateway.md has no ```nginx block after <!-- nginx-config -->")
    config = found.group(1)
    auth = urlsplit(auth_url)
    upstream = urlsplit(upstream_url)
    replaced = (
        config.replace("listen 80;", f"listen 127.0.0.1:{listen_port};")
        .replace("127.0.0.1:8000", f"{auth.hostname}:{auth.port}")
        .replace("127.0.0.1:8080", f"{upstream.hostname}:{upstream.port}")
    )
    if replaced.count(f"{auth.hostname}:{auth.port}") != 1 or f":{listen_port};" not in replaced:
        raise AssertionError("docs/gateway.md's nginx block lost its example addresses")
    return replaced


def _main_config(base: Path, http_body: str) -> str:
    temp = "\n".join(
        f"    {kind}_temp_path {base / (kind + '_temp')};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
worker_processes 1;
pid {base / "nginx.pid"};
error_log stderr warn;

events {{
    worker_connections 256;
}}

http {{
    access_log off;
{temp}
{http_body}
}}
"""


def nginx_config_test(http_body: str) -> str:
    """``nginx -t`` on a configuration with this ``http { }`` body; its output, or raise."""
    binary = nginx_binary()
    base = servers_tempdir("entitlements-nginx-t-")
    try:
        config = base / "nginx.conf"
        config.write_text(_main_config(base, http_body))
        done = subprocess.run(
            [str(binary), "-t", "-p", str(base), "-c", str(config), "-e", "stderr"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{output}")
        return output
    finally:
        shutil.rmtree(base, ignore_errors=True)


class NginxGateway:
    """One nginx process in front of ``upstream_url``, asking ``auth_url`` first.

    ``http_config(listen_port) -> str`` replaces the generated ``http { }`` body
    (it must listen on ``127.0.0.1:listen_port``). ``url`` is where clients go.
    """

    def __init__(
        self,
        auth_url: str,
        upstream_url: str,
        *,
        decision_headers: Sequence[str] = DECISION_HEADERS,
        http_config: str | None = None,
    ) -> None:
        self.binary = nginx_binary()
        self.auth_url = auth_url
        self.upstream_url = upstream_url
        self.decision_headers = tuple(decision_headers)
        self.custom_config = http_config
        self.run_as = server_user()
        self.base = servers_tempdir("entitlements-nginx-")
        make_owned_dir(self.base, self.run_as, 0o755)
        self.port = free_port() if http_config is None else _listen_port(http_config)
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

    def config_text(self) -> str:
        body = self.custom_config or gateway_http_config(
            listen_port=self.port,
            auth_url=self.auth_url,
            upstream_url=self.upstream_url,
            decision_headers=self.decision_headers,
        )
        return _main_config(self.base, body)

    def _process(self) -> ServerProcess:
        config = self.base / "nginx.conf"
        config.write_text(self.config_text())
        config.chmod(0o644)
        return ServerProcess(
            "nginx",
            [self.binary, "-p", self.base, "-c", config, "-e", "stderr"],
            self.base,
            run_as=self.run_as,
            stop_signal=signal.SIGQUIT,  # graceful: finish requests in flight, then exit
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

    async def start(self, timeout: float = 15.0) -> float:
        """Start it and wait until it listens; the seconds that took."""
        started = time.monotonic()
        for attempt in range(3):
            self.process.start()
            try:
                await wait_for(
                    self._listening,
                    f"nginx on port {self.port}",
                    timeout=timeout,
                    alive=[self.process],
                )
                break
            except RuntimeError:
                if "in use" not in self.process.log_tail() or attempt == 2:
                    raise
                if self.custom_config is not None:
                    raise
                self.port = free_port()  # taken meanwhile: another port
                self.process = self._process()
        self.startup_seconds = time.monotonic() - started
        return self.startup_seconds

    async def stop(self) -> None:
        """Stop it by PID (SIGQUIT: graceful; SIGKILL after 10 s)."""
        await asyncio.to_thread(self.process.stop)

    async def close(self) -> None:
        await self.stop()
        await asyncio.to_thread(shutil.rmtree, self.base, True)


def _listen_port(http_config: str) -> int:
    found = re.search(r"listen\s+127\.0\.0\.1:(\d+)\s*;", http_config)
    if found is None:
        raise ValueError("a custom nginx http config must 'listen 127.0.0.1:<port>;'")
    return int(found.group(1))
