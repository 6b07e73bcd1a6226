"""Reading the original request from what a proxy sent: Envoy, nginx, Traefik. Pure.

The request shapes come from ``gateway_support`` (checked against the real
nginx and Envoy in ``test_gateway_proxies.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from gateway_support import (
    CheckRequest,
    envoy_check_request,
    nginx_check_request,
    traefik_check_request,
)

from entitlements.gateway.forwarded import (
    Convention,
    ForwardedRefusal,
    ForwardedRequest,
    read_forwarded,
)
from entitlements.gateway.route_config import routes_from_data
from entitlements.gateway.routes import Matched

Builder = Callable[..., CheckRequest]
CLIENT = [("Authorization", "Bearer abc"), ("CF-IPCountry", "GB"), ("Accept", "*/*")]


def read(
    r: CheckRequest,
    *,
    conventions: tuple[Convention, ...] = ("envoy", "nginx", "traefik"),
    territory_header: str | None = "CF-IPCountry",
) -> ForwardedRequest | ForwardedRefusal:
    return read_forwarded(
        r.method,
        r.path,
        r.query,
        r.headers,
        conventions=conventions,
        territory_header=territory_header,
    )


def ok(result: ForwardedRequest | ForwardedRefusal) -> ForwardedRequest:
    assert isinstance(result, ForwardedRequest), result
    return result


def refused(result: ForwardedRequest | ForwardedRefusal) -> ForwardedRefusal:
    assert isinstance(result, ForwardedRefusal), result
    return result


# --- each convention ------------------------------------------------------------------


def test_envoy_keeps_the_method_and_appends_the_original_path() -> None:
    r = envoy_check_request(
        "DELETE", "/tracks/T%31/stream?q=1&r=/x", CLIENT, allowed_headers=["CF-IPCountry"]
    )
    assert r.target == "/v1/gateway/check/tracks/T%31/stream?q=1&r=/x"
    got = ok(read(r))
    assert (got.convention, got.method, got.uri, got.path, got.query) == (
        "envoy",
        "DELETE",
        "/tracks/T%31/stream?q=1&r=/x",
        "/tracks/T%31/stream",
        "q=1&r=/x",
    )
    assert (got.authorization, got.territory, got.host) == ("Bearer abc", "GB", "gateway.test")


def test_envoy_sends_the_root_as_the_prefix_and_a_slash() -> None:
    got = ok(read(envoy_check_request("GET", "/")))
    assert (got.uri, got.path, got.query) == ("/", "/", None)


def test_nginx_reads_x_original_uri_and_method_not_the_subrequests_get() -> None:
    r = nginx_check_request("POST", "/tracks/T1/stream?x=1", CLIENT)
    assert (r.method, r.target) == ("GET", "/v1/gateway/check")
    got = ok(read(r))
    assert (got.convention, got.method, got.uri, got.path, got.query) == (
        "nginx",
        "POST",
        "/tracks/T1/stream?x=1",
        "/tracks/T1/stream",
        "x=1",
    )
    assert (got.authorization, got.territory, got.host, got.proto) == (
        "Bearer abc",
        "GB",
        "gateway.test",
        "http",
    )


def test_nginx_without_x_original_method_is_refused_not_taken_for_get() -> None:
    r = nginx_check_request("DELETE", "/tracks/T1", CLIENT)
    headers = [(k, v) for k, v in r.headers if k != "x-original-method"]
    got = refused(read_forwarded("GET", r.path, "", headers))
    assert got.header == "X-Original-Method"
    assert "X-Original-Method is missing" in got.message and "$request_method" in got.message


def test_nginx_without_x_original_uri_is_refused() -> None:
    got = refused(read_forwarded("GET", "/v1/gateway/check", "", [("X-Original-Method", "GET")]))
    assert got.header == "X-Original-URI"


def test_traefik_reads_its_x_forwarded_headers() -> None:
    r = traefik_check_request("PUT", "/releases/R1?force=1", CLIENT, proto="https")
    got = ok(read(r))
    assert (got.convention, got.method, got.uri, got.path, got.query) == (
        "traefik",
        "PUT",
        "/releases/R1?force=1",
        "/releases/R1",
        "force=1",
    )
    assert (got.authorization, got.territory, got.host, got.proto) == (
        "Bearer abc",
        "GB",
        "gateway.test",
        "https",
    )


def test_traefik_without_its_method_header_is_refused() -> None:
    got = refused(read_forwarded("GET", "/v1/gateway/check", "", [("X-Forwarded-Uri", "/a")]))
    assert got.header == "X-Forwarded-Method"


@pytest.mark.parametrize("build", [envoy_check_request, nginx_check_request, traefik_check_request])
def test_each_shape_leads_to_the_route_the_client_asked_for(build: Builder) -> None:
    table = routes_from_data(
        [{"method": "GET", "path": "/tracks/{isrc}/stream", "resource": "track:{isrc}",
          "action": "stream"}]
    )  # fmt: skip
    r = build("GET", "/tracks/US%52C1/stream?quality=hi", CLIENT)
    got = ok(read(r))
    m = table.match(got.method, got.uri)
    assert isinstance(m, Matched) and m.resource == "track:USRC1"


def test_missing_authorization_and_territory_are_none_not_refused() -> None:
    got = ok(read(nginx_check_request("GET", "/a")))
    assert got.authorization is None and got.territory is None
    assert (
        ok(read(nginx_check_request("GET", "/a", CLIENT), territory_header=None)).territory is None
    )


# --- refusals -------------------------------------------------------------------------


def test_nothing_forwarded_is_refused_saying_what_to_send() -> None:
    got = refused(read_forwarded("GET", "/v1/gateway/check", "", [("Authorization", "x")]))
    assert "no forwarded request" in got.message
    for hint in ("below /v1/gateway/check/", "X-Original-URI", "X-Forwarded-Uri"):
        assert hint in got.message


def test_a_client_header_of_another_convention_makes_it_ambiguous() -> None:
    # In nginx, a client's own X-Forwarded-Uri reaches the check next to nginx's header
    # (unless the configuration clears it, as docs/gateway.md's does).
    client = [("X-Forwarded-Uri", "/public"), *CLIENT]
    r = nginx_check_request("GET", "/private", client, clear_other_conventions=False)
    got = refused(read(r))
    assert "more than one proxy convention (nginx and traefik)" in got.message
    # In Traefik, a client's X-Original-URI likewise.
    r = traefik_check_request("GET", "/private", [("X-Original-URI", "/public")])
    assert "nginx and traefik" in refused(read(r)).message
    # Envoy's path plus anyone's X-Original-URI.
    r = envoy_check_request("GET", "/private", [("X-Original-URI", "/public")],
                            allowed_headers=["X-Original-URI"])  # fmt: skip
    assert "envoy and nginx" in refused(read(r)).message


def test_accepting_one_convention_ignores_the_others_headers() -> None:
    client = [("X-Forwarded-Uri", "/public"), *CLIENT]
    r = nginx_check_request("GET", "/private", client, clear_other_conventions=False)
    got = ok(read(r, conventions=("nginx",)))
    assert got.uri == "/private"
    # ... and a Traefik-shaped request is then no forwarded request at all.
    got_refusal = refused(read(traefik_check_request("GET", "/a"), conventions=("nginx",)))
    assert "X-Forwarded-Uri" not in got_refusal.message and "X-Original-URI" in got_refusal.message
    # Envoy only: the path counts, headers do not.
    r = envoy_check_request("GET", "/private", [("X-Original-URI", "/public")],
                            allowed_headers=["X-Original-URI"])  # fmt: skip
    assert ok(read(r, conventions=("envoy",))).uri == "/private"


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (nginx_check_request, "X-Original-URI"),
        (nginx_check_request, "x-original-method"),
        (nginx_check_request, "Authorization"),
        (envoy_check_request, "Authorization"),
        (nginx_check_request, "CF-IPCountry"),
        (traefik_check_request, "X-Forwarded-Uri"),
        (traefik_check_request, "X-Forwarded-Method"),
    ],
)
def test_a_header_the_reader_uses_twice_is_refused(build: Builder, name: str) -> None:
    r = build("GET", "/a", CLIENT)
    value = r.header(name)[0]
    got = refused(read(CheckRequest(r.method, r.path, r.query, [*r.headers, (name, value)])))
    assert "more than once" in got.message
    assert got.header is not None and got.header.lower() == name.lower()


@pytest.mark.parametrize(
    ("method", "uri", "message"),
    [
        ("GET", "http://evil/a", "origin-form"),
        ("GET", "a/b", "origin-form"),
        ("GET", "*", "origin-form"),
        ("GE T", "/a", "not an HTTP method"),
        ("GET,POST", "/a", "not an HTTP method"),
        ("", "/a", "is missing"),
        ("GET", "   ", "is missing"),
        ("GET", "/" + "a" * 9000, "over 8192"),
    ],
)
def test_a_bad_original_method_or_uri_is_refused(method: str, uri: str, message: str) -> None:
    for build in (nginx_check_request, traefik_check_request):
        got = refused(read(build(method, uri)))
        assert message in got.message, (build, got)


def test_envoy_with_a_bad_method_is_refused() -> None:
    got = refused(read_forwarded("G\tET", "/v1/gateway/check/a", "", []))
    assert "not an HTTP method" in got.message


def test_a_request_outside_the_prefix_is_refused() -> None:
    # Starlette routes on the decoded path: an encoded prefix must not pass as Envoy's.
    got = refused(read_forwarded("GET", "/v1/gateway/%63heck/a", "", []))
    assert "served at /v1/gateway/check" in got.message
    got = refused(read_forwarded("GET", "/v1/gateway/checkx", "", [("X-Original-URI", "/a")]))
    assert "served at" in got.message


def test_a_mounted_prefix_is_honoured() -> None:
    got = ok(read_forwarded("PATCH", "/api/v1/gateway/check/a/b", "", [],
                            prefix="/api/v1/gateway/check"))  # fmt: skip
    assert (got.method, got.uri) == ("PATCH", "/a/b")


def test_an_oversized_header_is_refused() -> None:
    got = refused(read_forwarded("GET", "/v1/gateway/check/a", "", [("Authorization", "x" * 9000)]))
    assert got.header == "Authorization" and "over 8192" in got.message


def test_asgi_byte_headers_are_read_as_latin_1() -> None:
    headers = [(b"x-original-uri", b"/caf\xe9"), (b"x-original-method", b"GET")]
    got = ok(read_forwarded("GET", "/v1/gateway/check", "", headers))
    assert got.uri == "/caf\u00e9"  # the route table then refuses it (not RFC 3986)


def test_forwarded_host_and_proto_take_the_nearest_proxys_entry() -> None:
    r = traefik_check_request("GET", "/a")
    headers = [
        (k, "evil.test, gateway.test" if k == "x-forwarded-host" else v) for k, v in r.headers
    ]
    got = ok(read_forwarded(r.method, r.path, "", headers))
    assert got.host == "gateway.test"
