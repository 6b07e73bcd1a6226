"""The gateway's route table, path reading and trusted proxies: pure, no server.

The property tests check the compiled trie against a brute-force oracle
written here (a linear scan over the table with its own path decoding), and
that every placeholder value survives any legal percent-encoding.
"""

from __future__ import annotations

import json
import re
import statistics
import string
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entitlements.domain.model import parse_resource
from entitlements.errors import InvalidInputError
from entitlements.gateway.paths import PathRefusal, split_path
from entitlements.gateway.proxies import parse_trusted_proxies
from entitlements.gateway.route_config import load_routes, routes_from_data
from entitlements.gateway.routes import (
    Matched,
    Public,
    Route,
    RouteTable,
    TokenPolicy,
    Unmatched,
)

PROPS = settings(max_examples=400, deadline=None)

ROUTES: list[dict[str, Any]] = [
    {"method": "GET", "path": "/tracks/{isrc}/stream", "resource": "track:{isrc}",
     "action": "stream", "token": {"audience": "https://player.internal", "lifetime": "30s"}},
    {"method": "GET", "path": "/tracks/top/stream", "public": True},
    {"method": "*", "path": "/tracks/{isrc}", "resource": "track:{isrc}", "action": "view"},
    {"method": ["GET", "head"], "path": "/releases/{upc}/tracks/{isrc}",
     "resource": "track:{isrc}", "action": "view"},
    {"method": "POST", "path": "/releases/{upc}", "resource": "release:{upc}", "action": "edit"},
    {"method": "GET", "path": "/a/{x}/c", "resource": "thing:a-{x}", "action": "read"},
    {"method": "GET", "path": "/{y}/b/d", "resource": "thing:b-{y}", "action": "read"},
    {"method": "GET", "path": "/", "public": True},
    {"method": "GET", "path": "/files/", "public": True},
    {"method": "DELETE", "path": "/tracks/{isrc}", "resource": "track:{isrc}", "action": "delete"},
]  # fmt: skip


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return routes_from_data(ROUTES)


def matched(result: object) -> Matched:
    assert isinstance(result, Matched), result
    return result


# --- matching ------------------------------------------------------------------------


def test_a_route_names_its_resource_and_action(table: RouteTable) -> None:
    m = matched(table.match("GET", "/tracks/USRC17607839/stream"))
    assert (m.resource, m.action, dict(m.params)) == (
        "track:USRC17607839",
        "stream",
        {"isrc": "USRC17607839"},
    )
    assert m.token == TokenPolicy("https://player.internal", 30)
    assert m.route.index == 0


def test_a_literal_segment_beats_a_placeholder(table: RouteTable) -> None:
    assert isinstance(table.match("GET", "/tracks/top/stream"), Public)
    # ... but only for the method it lists: POST falls to nothing, not to the wider route
    assert table.match("POST", "/tracks/top/stream").kind == "no_route"  # type: ignore[union-attr]


def test_the_first_differing_segment_decides_and_matching_backtracks(table: RouteTable) -> None:
    # /a/{x}/c is tried first (literal 'a'), fails at 'd', then /{y}/b/d fits.
    m = matched(table.match("GET", "/a/b/d"))
    assert (m.route.path, m.resource) == ("/{y}/b/d", "thing:b-a")
    m = matched(table.match("GET", "/a/b/c"))
    assert (m.route.path, m.resource) == ("/a/{x}/c", "thing:a-b")


def test_a_listed_method_beats_any_method(table: RouteTable) -> None:
    assert matched(table.match("DELETE", "/tracks/T1")).action == "delete"
    assert matched(table.match("PATCH", "/tracks/T1")).action == "view"


def test_methods_are_stored_upper_case_and_compared_exactly(table: RouteTable) -> None:
    assert matched(table.match("HEAD", "/releases/R1/tracks/T1")).resource == "track:T1"
    assert isinstance(table.match("get", "/tracks/T1/stream"), Unmatched)
    # HEAD is not implied by GET
    assert isinstance(table.match("HEAD", "/tracks/T1/stream"), Unmatched)


def test_a_trailing_slash_is_significant(table: RouteTable) -> None:
    assert isinstance(table.match("GET", "/files/"), Public)
    assert isinstance(table.match("GET", "/files"), Unmatched)
    assert isinstance(table.match("GET", "/tracks/T1/stream/"), Unmatched)
    assert isinstance(table.match("GET", "/"), Public)


def test_the_query_is_ignored(table: RouteTable) -> None:
    m = matched(table.match("GET", "/tracks/T1/stream?quality=hi&x=/../y"))
    assert m.resource == "track:T1"


def test_segments_are_percent_decoded_once(table: RouteTable) -> None:
    assert matched(table.match("GET", "/tr%61cks/%55SRC1/stream")).resource == "track:USRC1"
    assert matched(table.match("GET", "/tracks/a%2Bb/stream")).resource == "track:a+b"
    # a + is a plus, not a space
    assert matched(table.match("GET", "/tracks/a+b/stream")).resource == "track:a+b"
    # %25 is a literal %, never decoded again (and % is no resource character)
    result = table.match("GET", "/tracks/%252F/stream")
    assert isinstance(result, Unmatched) and result.kind == "bad_resource"


def test_a_value_that_makes_no_valid_resource_is_refused_not_passed_on(table: RouteTable) -> None:
    for value in ("~x", "%C3%A9", "a%3Bb", "x" * 300):
        result = table.match("GET", f"/tracks/{value}/stream")
        assert isinstance(result, Unmatched) and result.kind == "bad_resource", value
        assert result.route is not None and result.route.index == 0


def test_no_route_says_which_path(table: RouteTable) -> None:
    result = table.match("GET", "/nowhere")
    assert isinstance(result, Unmatched) and result.kind == "no_route"
    assert "GET /nowhere" in result.message


HOSTILE = [
    "/tracks/../tracks/top/stream",
    "/tracks/T1/../top/stream",
    "/tracks/%2e%2e/stream",
    "/tracks/%2E./stream",
    "/tracks/./T1/stream",
    "/tracks/%2e/stream",
    "/tracks/a%2Fb/stream",
    "/tracks/a%2fb/stream",
    "/tracks/a%5Cb/stream",
    "/tracks\\T1\\stream",
    "/tracks/T1%00/stream",
    "/tracks/T1%0a/stream",
    "/tracks//T1/stream",
    "//tracks/T1/stream",
    "/tracks/T1/stream#x",
    "/tracks/T 1/stream",
    '/tracks/"T1"/stream',
    "/tracks/T1%/stream",
    "/tracks/T1%4/stream",
    "/tracks/T1%zz/stream",
    "/tracks/%C3/stream",
    "/tracks/%FF/stream",
    "/tracks/\u00e9/stream",
    "tracks/T1/stream",
    "http://evil/tracks/T1/stream",
    "*",
    "",
    "/" + "a/" * 70,
    "/" + "a" * 5000,
]


@pytest.mark.parametrize("path", HOSTILE)
def test_hostile_paths_are_refused_before_matching(table: RouteTable, path: str) -> None:
    result = table.match("GET", path)
    assert isinstance(result, Unmatched) and result.kind == "bad_path", result
    assert isinstance(split_path(path), PathRefusal)


def test_split_path_shapes() -> None:
    assert split_path("/") == ("",)
    assert split_path("/a/b") == ("a", "b")
    assert split_path("/a/") == ("a", "")
    assert split_path("/a%20b/c?d") == ("a b", "c")
    assert split_path("/a;jsessionid=1") == ("a;jsessionid=1",)


# --- loading and validation ---------------------------------------------------------


BAD_CONFIGS: list[tuple[object, str, str]] = [
    ({"route": []}, "route", "did you mean 'routes'"),
    ({"token": {"audience": "a"}}, "routes", "is required"),
    ("nope", "routes", "must be a list"),
    ([1], "routes.0", "must be an object"),
    ([{"path": "/a", "public": True}], "routes.0.method", "is required"),
    ([{"method": ["GET", "*"], "path": "/a", "public": True}], "routes.0.method", "stands alone"),
    ([{"method": [], "path": "/a", "public": True}], "routes.0.method", "at least one"),
    ([{"method": "GE T", "path": "/a", "public": True}], "routes.0.method", "not an HTTP method"),
    ([{"method": "GET", "path": "a", "public": True}], "routes.0.path", "starting with '/'"),
    ([{"method": "GET", "path": "/a//b", "public": True}], "routes.0.path", "empty segment"),
    ([{"method": "GET", "path": "/a/../b", "public": True}], "routes.0.path", "dot-segment"),
    ([{"method": "GET", "path": "/a/{x}.mp3", "public": True}], "routes.0.path", "whole segment"),
    ([{"method": "GET", "path": "/a/{1x}", "public": True}], "routes.0.path", "whole segment"),
    ([{"method": "GET", "path": "/{x}/{x}", "public": True}], "routes.0.path", "appears twice"),
    ([{"method": "GET", "path": "/a%20b", "public": True}], "routes.0.path", "decoded"),
    ([{"method": "GET", "path": "/a?b", "public": True}], "routes.0.path", "decoded"),
    ([{"method": "GET", "path": "/caf\u00e9", "public": True}], "routes.0.path", "decoded"),
    ([{"method": "GET", "path": "/a", "public": "yes"}], "routes.0.public", "true or false"),
    ([{"method": "GET", "path": "/a", "public": True, "action": "x"}], "routes.0.action",
     "public route"),
    ([{"method": "GET", "path": "/a/{x}", "action": "read"}], "routes.0.resource", "is required"),
    ([{"method": "GET", "path": "/a/{x}", "resource": "{x}", "action": "read"}],
     "routes.0.resource", "literal type"),
    ([{"method": "GET", "path": "/a/{t}/{x}", "resource": "{t}:{x}", "action": "read"}],
     "routes.0.resource", "literal type"),
    ([{"method": "GET", "path": "/a/{x}", "resource": "track:{y}", "action": "read"}],
     "routes.0.resource", "{y} is not a placeholder"),
    ([{"method": "GET", "path": "/a/{x}", "resource": "track:{x", "action": "read"}],
     "routes.0.resource", "braces"),
    ([{"method": "GET", "path": "/a/{x}", "resource": "track:-{x}", "action": "read"}],
     "routes.0.resource", "set to 'x'"),
    ([{"method": "GET", "path": "/a/{x}", "resource": "track:{x} y", "action": "read"}],
     "routes.0.resource", "set to 'x'"),
    ([{"method": "GET", "path": "/a/{x}", "resource": "track:{x}"}], "routes.0.action",
     "is required"),
    ([{"method": "GET", "path": "/a/{x}", "resource": "track:{x}", "action": "Read"}],
     "routes.0.action", "lowercase"),
    ([{"method": "GET", "path": "/a/{x}", "resource": "track:{x}", "action": "read",
       "token": {"lifetime": 30}}], "routes.0.token.audience", "is required"),
    ([{"method": "GET", "path": "/a/{x}", "resource": "track:{x}", "action": "read",
       "token": {"audience": "up", "lifetime": 61}}], "routes.0.token.lifetime", "1 to 60"),
    ([{"method": "GET", "path": "/a/{x}", "resource": "track:{x}", "action": "read",
       "token": {"audience": "up", "lifetime": "2m"}}], "routes.0.token.lifetime", "1 to 60"),
    ([{"method": "GET", "path": "/a/{x}", "resource": "track:{x}", "action": "read",
       "token": {"audience": "up", "lifetime": 0}}], "routes.0.token.lifetime", "1 to 60"),
    ([{"method": "GET", "path": "/a/{x}", "resource": "track:{x}", "action": "read",
       "token": {"audience": "up", "ttl": 5}}], "routes.0.token.ttl", "unknown key"),
    ([{"method": "GET", "path": "/a/{x}", "resource": "track:{x}", "action": "read",
       "token": {"audience": "u p"}}], "routes.0.token.audience", "spaces"),
    ([{"method": "GET", "path": "/a/{x}", "resource": "track:{x}", "action": "read",
       "token": True}], "routes.0.token", "audience"),
    ({"routes": [], "token": False}, "token", "audience"),
    ([{"method": "GET", "path": "/a", "public": True, "methods": "GET"}], "routes.0.methods",
     "did you mean 'method'"),
    ([{"method": "GET", "path": "/a/{x}", "public": True},
      {"method": ["POST", "GET"], "path": "/a/{y}", "public": True}], "routes.1.path",
     "same path and method (GET) as routes.0"),
    ([{"method": "*", "path": "/a", "public": True},
      {"method": "*", "path": "/a", "public": True}], "routes.1.path", "any method"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "field", "message"), BAD_CONFIGS)
def test_a_bad_table_is_refused_naming_the_key(data: object, field: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        routes_from_data(data)
    problems = [(e.field, e.message) for e in caught.value.errors]
    assert any(f == field and message in m for f, m in problems), problems


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidInputError) as caught:
        routes_from_data(
            [
                {"method": "GET", "path": "/a//b", "public": True},
                {"method": "GET", "path": "/b/{x}", "resource": "track:{y}", "action": "X"},
            ]
        )
    fields = sorted(e.field for e in caught.value.errors)
    assert fields == ["routes.0.path", "routes.1.action", "routes.1.resource"]


def test_a_table_wide_token_applies_unless_a_route_says_false() -> None:
    table = routes_from_data(
        {
            "token": {"audience": "https://up", "lifetime": 20},
            "routes": [
                {"method": "GET", "path": "/a/{x}", "resource": "track:{x}", "action": "read"},
                {"method": "GET", "path": "/b/{x}", "resource": "track:{x}", "action": "read",
                 "token": False},
                {"method": "GET", "path": "/c/{x}", "resource": "track:{x}", "action": "read",
                 "token": {"audience": "https://other", "lifetime": "1m"}},
                {"method": "GET", "path": "/d", "public": True},
            ],
        }
    )  # fmt: skip
    assert table.default_token == TokenPolicy("https://up", 20)
    assert matched(table.match("GET", "/a/1")).token == TokenPolicy("https://up", 20)
    assert matched(table.match("GET", "/b/1")).token is None
    assert matched(table.match("GET", "/c/1")).token == TokenPolicy("https://other", 60)
    public = table.match("GET", "/d")
    assert isinstance(public, Public) and public.route.token is None


def test_the_same_shape_with_other_methods_is_not_a_duplicate() -> None:
    table = routes_from_data(
        [
            {"method": "GET", "path": "/a/{x}", "resource": "track:{x}", "action": "read"},
            {"method": "PUT", "path": "/a/{y}", "resource": "track:{y}", "action": "write"},
            {"method": "*", "path": "/a/{z}", "resource": "track:{z}", "action": "other"},
        ]
    )
    assert [matched(table.match(m, "/a/1")).action for m in ("GET", "PUT", "POST")] == [
        "read",
        "write",
        "other",
    ]


def test_routes_load_from_json_text_json_file_and_toml_file(tmp_path: Path) -> None:
    text = json.dumps(ROUTES)
    from_text = load_routes(text)
    json_file = tmp_path / "routes.json"
    json_file.write_text(json.dumps({"routes": ROUTES}))
    toml_file = tmp_path / "routes.toml"
    toml_file.write_text(
        '[token]\naudience = "https://up"\nlifetime = "15s"\n\n'
        '[[routes]]\nmethod = "GET"\npath = "/tracks/{isrc}/stream"\n'
        'resource = "track:{isrc}"\naction = "stream"\n\n'
        '[[routes]]\nmethod = ["GET", "HEAD"]\npath = "/healthz"\npublic = true\n'
    )
    for table in (from_text, load_routes(f"  {json_file}  ")):
        assert len(table) == len(ROUTES)
        assert matched(table.match("GET", "/tracks/T1/stream")).resource == "track:T1"
    toml = load_routes(str(toml_file))
    m = matched(toml.match("GET", "/tracks/T1/stream"))
    assert (m.resource, m.token) == ("track:T1", TokenPolicy("https://up", 15))
    assert isinstance(toml.match("HEAD", "/healthz"), Public)


@pytest.mark.parametrize(
    ("content", "name", "field", "message"),
    [
        ("[", "r.json", "r.json", "not valid JSON"),
        ('{"routes": [], "routes": []}', "r.json", "r.json", "duplicate key"),
        ('[{"method": "GET", "path": "/a", "public": NaN}]', "r.json", "r.json", "JSON number"),
        ("routes = [", "r.toml", "r.toml", "not valid TOML"),
        ('[[routes]]\nmethod = "GET"\npath = "a"\npublic = true\n', "r.toml",
         "r.toml:routes.0.path", "starting with '/'"),
        ("[]", "r.yaml", "ENTITLEMENTS_GATEWAY_ROUTES", ".json or .toml"),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_naming_the_file(
    tmp_path: Path, content: str, name: str, field: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InvalidInputError) as caught:
        load_routes(str(path))
    first = caught.value.errors[0]
    assert first.field == field and message in first.message, first


def test_a_missing_file_and_bad_text_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot be read"):
        load_routes(str(tmp_path / "absent.json"))
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        load_routes("[{]")
    with pytest.raises(InvalidInputError, match=r"routes\.0\.path"):
        load_routes('[{"method": "GET", "path": "x", "public": true}]')


def test_a_thousand_routes_match_in_microseconds() -> None:
    # A guard against a linear scan creeping in, not a benchmark: the bound is loose.
    routes = [
        {"method": "GET", "path": f"/svc{i}/items/{{id}}/part/{{p}}",
         "resource": f"item{i % 50}:{{id}}", "action": "read"}
        for i in range(1000)
    ]  # fmt: skip
    table = routes_from_data(routes)
    samples = []
    for i in range(2000):
        path = f"/svc{(i * 7919) % 1000}/items/ID{i}/part/{i}"
        start = time.perf_counter()
        result = table.match("GET", path)
        samples.append(time.perf_counter() - start)
        assert isinstance(result, Matched)
    assert statistics.median(samples) < 100e-6, statistics.median(samples)


# --- properties -----------------------------------------------------------------------

PCHAR_RAW = set(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@")


def _encode(value: str, choices: list[bool], upper: list[bool]) -> str:
    """``value`` as a path segment: each safe character raw or escaped, as ``choices`` say."""
    out = []
    for i, char in enumerate(value):
        if char in PCHAR_RAW and choices[i % len(choices)]:
            out.append(char)
            continue
        for byte in char.encode("utf-8"):
            hexed = f"{byte:02X}" if upper[i % len(upper)] else f"{byte:02x}"
            out.append("%" + hexed)
    return "".join(out)


segment_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\\x7f"),
    min_size=1,
    max_size=20,
).filter(lambda v: v not in {".", ".."})


@PROPS
@given(
    upc=segment_values,
    isrc=segment_values,
    choices=st.lists(st.booleans(), min_size=1, max_size=8),
    upper=st.lists(st.booleans(), min_size=1, max_size=8),
)
def test_placeholder_values_round_trip_through_any_encoding(
    upc: str, isrc: str, choices: list[bool], upper: list[bool]
) -> None:
    table = routes_from_data(ROUTES)
    path = f"/releases/{_encode(upc, choices, upper)}/tracks/{_encode(isrc, choices, upper)}"
    result = table.match("GET", path)
    try:
        parse_resource("track:" + isrc)
    except InvalidInputError:
        assert isinstance(result, Unmatched) and result.kind == "bad_resource", result
        return
    m = matched(result)
    assert dict(m.params) == {"upc": upc, "isrc": isrc}
    assert m.resource == "track:" + isrc and m.route.path == "/releases/{upc}/tracks/{isrc}"


# Hostile paths: built from the table's literals, ordinary values, and pieces that
# mean something else to some server on the way.
PIECES = [
    "tracks", "top", "stream", "releases", "a", "b", "c", "d", "files", "T1", "R1",
    "..", ".", "%2e%2E", "%2E", "%2F", "a%2fb", "%5c", "%00", "", "a;b", "%", "%zz", "%4",
    "\\", " ", "\u00e9", "%C3%A9", "%FF", "%25", "%252F", "?", "#", "%3F", "T%31", "tr%61cks",
]  # fmt: skip
_OK_CHARS = PCHAR_RAW | {"%", "/"}


def oracle_segments(target: str) -> list[str] | None:
    """An independent reading of the path rules: decoded segments, or None (refused)."""
    path = target.partition("?")[0]
    if len(target) > 4096 or not path.startswith("/") or any(c not in _OK_CHARS for c in path):
        return None
    if re.search(r"%(?![0-9A-Fa-f]{2})", path):
        return None
    raw = path[1:].split("/")
    if len(raw) > 64 or "" in raw[:-1]:
        return None
    out = []
    for segment in raw:
        try:
            decoded = unquote(segment, errors="strict")
        except UnicodeDecodeError:
            return None
        if decoded in {".", ".."} or any(c in "/\\" or ord(c) < 32 or c == "\x7f" for c in decoded):
            return None
        out.append(decoded)
    return out


def oracle_route(
    table: RouteTable, method: str, segments: list[str]
) -> tuple[Route, dict[str, str]] | None:
    """Brute force: every route that fits, the most specific first (literal before
    placeholder at the first differing segment, then a listed method before '*')."""
    fits = []
    for route in table.routes:
        template = route.path[1:].split("/")
        if len(template) != len(segments):
            continue
        params: dict[str, str] = {}
        shape = []
        for t, s in zip(template, segments, strict=True):
            if t.startswith("{"):
                if not s:
                    break
                params[t[1:-1]] = s
                shape.append(1)
            elif t != s:
                break
            else:
                shape.append(0)
        else:
            if route.methods is None:
                fits.append(((tuple(shape), 1), route, params))
            elif method in route.methods:
                fits.append(((tuple(shape), 0), route, params))
    if not fits:
        return None
    fits.sort(key=lambda f: f[0])
    return fits[0][1], fits[0][2]


@PROPS
@given(
    pieces=st.lists(st.sampled_from(PIECES), min_size=1, max_size=6),
    method=st.sampled_from(["GET", "POST", "DELETE", "HEAD", "PATCH"]),
    query=st.sampled_from(["", "?x=1", "?/../a", "?#"]),
)
def test_hostile_paths_never_match_a_wrong_route(
    pieces: list[str], method: str, query: str
) -> None:
    table = routes_from_data(ROUTES)
    target = "/" + "/".join(pieces) + query
    result = table.match(method, target)
    segments = oracle_segments(target)
    if segments is None:
        assert isinstance(result, Unmatched) and result.kind == "bad_path", (target, result)
        return
    expected = oracle_route(table, method, segments)
    if expected is None:
        assert isinstance(result, Unmatched) and result.kind == "no_route", (target, result)
        return
    route, params = expected
    assert not isinstance(result, Unmatched) or result.kind == "bad_resource", (target, result)
    got_route = result.route
    assert got_route is route, (target, got_route, route)
    if isinstance(result, Matched | Public):
        assert dict(result.params) == params
    if isinstance(result, Matched):
        assert result.resource == route.resource_for(params)
        parse_resource(result.resource)


# --- trusted proxies ------------------------------------------------------------------


def test_trusted_proxies_match_addresses_and_networks() -> None:
    proxies = parse_trusted_proxies("10.0.0.0/8, 192.0.2.7 2001:db8::/32,::1")
    assert proxies.trusts("10.200.1.1")
    assert proxies.trusts("192.0.2.7")
    assert not proxies.trusts("192.0.2.8")
    assert proxies.trusts("2001:db8:1::5")
    assert proxies.trusts("::1")
    assert not proxies.trusts("127.0.0.1")
    assert not proxies.trusts("2001:db9::1")
    # an IPv4-mapped IPv6 peer is its IPv4 address; a zone is ignored
    assert proxies.trusts("::ffff:10.1.2.3")
    assert not proxies.trusts("::ffff:11.1.2.3")
    assert parse_trusted_proxies(["fe80::/10"]).trusts("fe80::1%eth0")
    # not an address at all, or a Unix socket without 'unix' configured: not trusted
    assert not proxies.trusts("localhost")
    assert not proxies.trusts("")
    assert not proxies.trusts(None)


def test_unix_sockets_are_trusted_only_when_listed() -> None:
    assert parse_trusted_proxies('["unix"]').trusts(None)
    assert not parse_trusted_proxies('["unix"]').trusts("127.0.0.1")


def test_nothing_configured_trusts_nobody() -> None:
    values: list[str | list[str] | None] = [None, "", "  ", "[]", []]
    for value in values:
        proxies = parse_trusted_proxies(value)
        assert not proxies
        assert not proxies.trusts("127.0.0.1") and not proxies.trusts(None)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10.0.0.1/8", "did you mean 10.0.0.0/8?"),
        ("2001:db8::1/32", "did you mean 2001:db8::/32?"),
        ("10.0.0.0/33", "not an IP address or a CIDR"),
        ("example.com", "not an IP address or a CIDR"),
        ("*", "not an IP address or a CIDR"),
        ("fe80::1%eth0", "zone"),
        ('["10.0.0.0/8", 7]', "must be a string"),
        ('{"a": 1}', "not an IP address"),
        ("[1,", "not a valid JSON list"),
    ],
)
def test_bad_proxy_entries_are_refused(value: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_trusted_proxies(value)
    assert any(message in e.message for e in caught.value.errors), caught.value.errors
    assert all(
        e.field.startswith("ENTITLEMENTS_GATEWAY_TRUSTED_PROXIES") for e in caught.value.errors
    )


def test_remembered_answers_stay_right_past_the_cache_bound() -> None:
    proxies = parse_trusted_proxies("10.0.0.0/8")
    for _ in range(2):  # the second round is answered from memory, then past its bound
        for i in range(1500):
            assert proxies.trusts(f"10.0.{i // 256}.{i % 256}")
            assert not proxies.trusts(f"11.0.{i // 256}.{i % 256}")
