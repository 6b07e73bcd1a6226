"""Test helpers for the gateway check: what each proxy sends, and stand-in servers.

- :func:`envoy_check_request`, :func:`nginx_check_request`,
  :func:`traefik_check_request` build the request a proxy sends to
  ``/v1/gateway/check`` for a client's request, in that proxy's convention
  (the shapes are checked against the real nginx and the real Envoy in
  ``tests/test_gateway_proxies.py``). Phase-2 endpoint tests can send them
  in-process (``httpx.ASGITransport``) without starting a proxy:
  ``client.request(r.method, r.target, headers=r.headers)``.
- :class:`StandInServer`: a plain Python HTTP server in a thread that records
  every request and answers with a function of it — a stand-in auth endpoint or
  upstream for proxy tests; :func:`stand_in_check` and :func:`echo` are the two
  used so far.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from entitlements.gateway.forwarded import CHECK_PREFIX, ForwardedRefusal, read_forwarded
from entitlements.gateway.route_config import routes_from_data
from entitlements.gateway.routes import Public, Unmatched

__all__ = [
    "DECISION",
    "DECISION_HEADERS",
    "STAND_IN_ROUTES",
    "TERRITORY",
    "CheckRequest",
    "Reply",
    "Responder",
    "Seen",
    "StandInServer",
    "echo",
    "envoy_check_request",
    "nginx_check_request",
    "problem",
    "stand_in_check",
    "traefik_check_request",
]

DECISION_HEADERS = (
    "X-Entitlements-Subject",
    "X-Entitlements-Grant",
    "X-Entitlements-Valid-Until",
    "X-Entitlements-Token",
)

# Headers a proxy adds or rewrites on every hop, which say nothing about the convention.
HOP_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "x-request-id",
        "x-envoy-expected-rq-timeout-ms",
        "x-envoy-internal",  # Envoy's "the client is on an internal address": loopback here
    }
)


@dataclass(frozen=True)
class CheckRequest:
    """A request to the check service: ``target`` is the raw path plus ``?query``."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]

    @property
    def target(self) -> str:
        return self.path + (f"?{self.query}" if self.query else "")

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def _split(uri: str) -> tuple[str, str]:
    path, _, query = uri.partition("?")
    return path, query


def envoy_check_request(
    method: str,
    uri: str,
    headers: Iterable[tuple[str, str]] = (),
    *,
    host: str = "gateway.test",
    allowed_headers: Sequence[str] = (),
    prefix: str = CHECK_PREFIX,
) -> CheckRequest:
    """Envoy HTTP ext_authz: the method kept, ``prefix + uri`` (query included), and of
    the client's headers only ``Host`` (the original authority), ``Authorization`` and
    those named in ``allowed_headers``; no body."""
    keep = {"authorization", *(h.lower() for h in allowed_headers)}
    path, query = _split(prefix + uri)
    out = [("host", host)]
    out += [(k.lower(), v) for k, v in headers if k.lower() in keep]
    return CheckRequest(method, path, query, out)


def nginx_check_request(
    method: str,
    uri: str,
    headers: Iterable[tuple[str, str]] = (),
    *,
    host: str = "gateway.test",
    proto: str = "http",
    check_path: str = CHECK_PREFIX,
    clear_other_conventions: bool = True,
) -> CheckRequest:
    """nginx auth_request with the configuration of ``docs/gateway.md``: a ``GET`` to the
    check path without the body, every client header, and ``X-Original-URI``,
    ``X-Original-Method``, ``X-Forwarded-Host``, ``X-Forwarded-Proto`` set by nginx
    (replacing any the client sent). The client's ``X-Forwarded-Uri`` and
    ``X-Forwarded-Method`` are removed (``proxy_set_header … ""``) unless
    ``clear_other_conventions`` is false (a configuration without those lines)."""
    set_by_nginx = {
        "x-original-uri": uri,
        "x-original-method": method,
        "x-forwarded-host": host,
        "x-forwarded-proto": proto,
    }
    dropped = set(set_by_nginx)
    if clear_other_conventions:
        dropped |= {"x-forwarded-uri", "x-forwarded-method"}
    out = [(k, v) for k, v in set_by_nginx.items()]
    out += [(k.lower(), v) for k, v in headers if k.lower() not in dropped]
    return CheckRequest("GET", check_path, "", out)


def traefik_check_request(
    method: str,
    uri: str,
    headers: Iterable[tuple[str, str]] = (),
    *,
    host: str = "gateway.test",
    proto: str = "http",
    client_ip: str = "198.51.100.7",
    check_path: str = CHECK_PREFIX,
) -> CheckRequest:
    """Traefik forwardAuth (``trustForwardHeader: false``): a ``GET`` to the address, the
    client's headers, and the ``X-Forwarded-*`` headers set by Traefik (a client's own
    ``X-Forwarded-*`` replaced)."""
    set_by_traefik = {
        "x-forwarded-method": method,
        "x-forwarded-proto": proto,
        "x-forwarded-host": host,
        "x-forwarded-uri": uri,
        "x-forwarded-for": client_ip,
    }
    out = [(k.lower(), v) for k, v in headers if k.lower() not in set_by_traefik]
    out += list(set_by_traefik.items())
    return CheckRequest("GET", check_path, "", out)


# --- stand-in servers -----------------------------------------------------------------


@dataclass
class Seen:
    """One request a stand-in server received."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def as_check_request(self) -> CheckRequest:
        path, query = _split(self.target)
        kept = [(k.lower(), v) for k, v in self.headers if k.lower() not in HOP_HEADERS]
        return CheckRequest(self.method, path, query, kept)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


Responder = Callable[[Seen], Reply]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A proxy closing a kept-alive connection (at its stop) is no error of the test's.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class StandInServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 that records requests and answers with
    ``respond(seen)``. Use as a context manager (``with StandInServer(f) as s: s.url``)."""

    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(self.command, self.path, list(self.headers.items()), body)
                with server._lock:
                    server.requests.append(seen)
                reply = server.respond(seen)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> StandInServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    @property
    def last(self) -> Seen:
        with self._lock:
            return self.requests[-1]


# --- a stand-in check and app ---------------------------------------------------------

TERRITORY = "X-Country"
STAND_IN_ROUTES = routes_from_data(
    [
        {"method": "GET", "path": "/tracks/{isrc}/stream", "resource": "track:{isrc}",
         "action": "stream"},
        {"method": ["POST", "DELETE"], "path": "/tracks/{isrc}", "resource": "track:{isrc}",
         "action": "edit"},
        {"method": "*", "path": "/public/{page}", "public": True},
    ]
)  # fmt: skip
DECISION = {
    "X-Entitlements-Subject": "user:auth.test|alice",
    "X-Entitlements-Grant": "deal-42",
    "X-Entitlements-Valid-Until": "2027-01-01T00:00:00Z",
}


def problem(status: int, detail: str, **headers: str) -> Reply:
    body = json.dumps({"status": status, "title": "refused", "detail": detail}).encode()
    return Reply(status, {"Content-Type": "application/problem+json", **headers}, body)


def stand_in_check(territory_header: str = TERRITORY) -> Responder:
    """A stand-in for phase 2's endpoint over the real pure parts (the forwarded-request
    reader, :data:`STAND_IN_ROUTES`), without the token verifier and the check service:
    no ``Authorization`` or ``Bearer bad`` → 401; a territory other than GB → 403;
    ``track:TAKEDOWN`` → 403; else 200 with :data:`DECISION`, and a token when the
    query holds ``mint``."""
    return lambda seen: _check(seen, territory_header)


def _check(seen: Seen, territory_header: str) -> Reply:
    path, _, query = seen.target.partition("?")
    forwarded = read_forwarded(
        seen.method, path, query, seen.headers, territory_header=territory_header
    )
    if isinstance(forwarded, ForwardedRefusal):
        return problem(403, forwarded.message)
    matched = STAND_IN_ROUTES.match(forwarded.method, forwarded.uri)
    if isinstance(matched, Public):
        return Reply(200)
    if isinstance(matched, Unmatched):
        return problem(403, matched.message)
    if forwarded.authorization in {None, "Bearer bad"}:
        return problem(
            401, "no valid token", **{"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
    if forwarded.territory != "GB":
        return problem(403, "territory")
    if matched.resource == "track:TAKEDOWN":
        return problem(403, "denied")
    headers = dict(DECISION)
    if forwarded.query and "mint" in forwarded.query:
        headers["X-Entitlements-Token"] = "minted.jwt"
        headers["Authorization"] = "Bearer minted.jwt"
    return Reply(200, headers)


def echo(seen: Seen) -> Reply:
    """A stand-in app: answers with what it received, as JSON."""
    body = json.dumps(
        {"method": seen.method, "target": seen.target, "headers": seen.headers,
         "body": seen.body.decode()}
    )  # fmt: skip
    return Reply(200, {"Content-Type": "application/json"}, body.encode())
