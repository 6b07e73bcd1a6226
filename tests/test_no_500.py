"""Never a 500: input Postgres cannot hold, or nested or sized beyond any limit, is a
422 naming the field, the keep-alive connection stays usable, the CLI exits 2 with
the message, and a client that goes away mid-body costs one line of log.

The real thing: ``entitlements serve`` in a process of its own, spoken to over one
HTTP/1.1 connection (``http.client``: a dropped connection is seen, not hidden by a
reconnecting pool), its log read from its stderr; the CLI run as a user runs it.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from processes import stop_process, wait_ready
from sdk_support import free_port
from test_import_cli import ENTITLEMENTS, env_for

from entitlements.keys.signing import SigningKey, mint
from entitlements.store.keys import PostgresKeyStore
from entitlements.store.postgres import PostgresStore

pytestmark = pytest.mark.slow

ISSUER = "https://no-500.test"
AUDIENCE = "entitlements"
PROBLEM = "application/problem+json"
GRANT: dict[str, Any] = {
    "subject": "user:alice",
    "resource": "track:no500",
    "actions": ["stream"],
    "territories": ["*"],
}
BIG = b"123456789012345678901234567890"  # a parser makes it 1.2345678901234568e+29


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def nested(levels: int) -> bytes:
    """A JSON value ``levels`` deep: [[[...]]]."""
    return b"[" * levels + b"]" * levels


def grant_line(attributes: bytes, gid: str = "no500-1") -> bytes:
    """One NDJSON grant whose ``attributes`` are the raw JSON text given."""
    body = orjson.dumps({"id": gid, **GRANT})
    return body[:-1] + b',"attributes":' + attributes + b"}\n"


def grant_body(attributes: bytes) -> bytes:
    return orjson.dumps(GRANT)[:-1] + b',"attributes":' + attributes + b"}"


@dataclass
class Server:
    url: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes]
    tokens: dict[str, str] = field(default_factory=dict)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def connect(self) -> Connection:
        return Connection(self)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type") == PROBLEM, (self.status, self.body[:300])
        data: dict[str, Any] = json.loads(self.body)
        return data

    def fields(self) -> list[str]:
        return [e["field"] for e in self.problem()["errors"]]


class Connection:
    """One keep-alive HTTP/1.1 connection; ``send`` fails if the server dropped it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.http = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        self.http.connect()
        self.socket = self.http.sock

    def send(
        self, method: str, path: str, token: str, body: bytes | None = None, **headers: str
    ) -> Reply:
        all_headers = {"Authorization": f"Bearer {self.server.tokens[token]}"}
        all_headers.update((k.replace("_", "-"), v) for k, v in headers.items())
        self.http.request(method, path, body=body, headers=all_headers)
        response = self.http.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)

    def still_usable(self) -> None:
        """The same socket answers the next request (no Connection: close, no reset)."""
        assert self.http.sock is self.socket, "the server closed the keep-alive connection"
        try:
            reply = self.send("GET", "/v1/grants?limit=1", "admin")
        except (http.client.HTTPException, ConnectionError) as exc:
            raise AssertionError(f"the keep-alive connection was dropped: {exc!r}") from exc
        assert reply.status == 200, reply.body[:300]
        assert self.http.sock is self.socket

    def close(self) -> None:
        self.http.close()


@pytest.fixture(scope="module")
async def signing_key(store: PostgresStore) -> SigningKey:
    """The service's active key (the server loads it at start): tokens minted here, even
    ones no CLI would mint, verify there."""
    return await PostgresKeyStore(store.pool, "EdDSA").ensure_active()


@pytest.fixture(scope="module")
def server(
    signing_key: SigningKey, pg_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    def token(sub: str, *scopes: str) -> str:
        minted, _ = mint(
            signing_key, issuer=ISSUER, audience=AUDIENCE, subject=sub, ttl=3600, scopes=scopes
        )
        return minted

    env = env_for(pg_dsn) | {"ENTITLEMENTS_ISSUER": ISSUER, "ENTITLEMENTS_AUDIENCE": AUDIENCE}
    port = free_port()
    log = tmp_path_factory.mktemp("no500") / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [ENTITLEMENTS, "serve", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Server(f"http://127.0.0.1:{port}", port, log, proc)
    server.tokens = {
        "alice": token("alice", "entitlements:check"),
        "admin": token("ops", "entitlements:admin"),
        "import": token("ops", "entitlements:import"),
        "exchange": token("svc", "entitlements:exchange"),
        "nul-sub": token("ali\x00ce"),
    }
    try:
        wait_ready(server.url, proc, server.log_text)
        yield server
    finally:
        stop_process(proc)


@pytest.fixture
def conn(server: Server) -> Iterator[Connection]:
    connection = server.connect()
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def quiet_log(server: Server) -> Iterator[Callable[[], str]]:
    """The server's log from this test on, checked for tracebacks at the end."""
    start = len(server.log_text())

    def since() -> str:
        return server.log_text()[start:]

    yield since
    text = since()
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text


# --- NUL (U+0000): Postgres text and jsonb cannot hold it --------------------------------


def test_a_cursor_decoding_to_nul_on_entitlements(
    conn: Connection, quiet_log: Callable[[], str]
) -> None:
    query = urlencode({"action": "stream", "territory": "GB", "cursor": b64(b"track:a\x00b")})
    reply = conn.send("GET", f"/v1/entitlements?{query}", "alice")
    assert reply.status == 422 and reply.fields() == ["cursor"]
    conn.still_usable()


def test_a_cursor_decoding_to_nul_on_grants(conn: Connection, quiet_log: Callable[[], str]) -> None:
    cursor = b64(b"g\x00")
    reply = conn.send("GET", f"/v1/grants?cursor={cursor}", "admin")
    assert reply.status == 422 and reply.fields() == ["cursor"]
    conn.still_usable()


def test_nul_in_a_revoke_jti(conn: Connection, quiet_log: Callable[[], str]) -> None:
    body = orjson.dumps({"jti": "a\x00b"})
    reply = conn.send("POST", "/v1/token/revoke", "alice", body, Content_Type="application/json")
    assert reply.status == 422 and reply.fields() == ["jti"]
    assert "U+0000" in reply.problem()["errors"][0]["message"]
    conn.still_usable()


def test_nul_in_an_import_id(conn: Connection, quiet_log: Callable[[], str]) -> None:
    reply = conn.send("GET", "/v1/imports/a%00b", "import")
    assert reply.status == 422 and reply.fields() == ["import_id"]
    conn.still_usable()


def test_nul_in_an_exchange_audience(conn: Connection, quiet_log: Callable[[], str]) -> None:
    form = urlencode(
        {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": conn.server.tokens["alice"],
            "audience": "orders\x00",
            "scope": "entitlements:check",
        }
    )
    reply = conn.send(
        "POST",
        "/v1/token/exchange",
        "exchange",
        form.encode(),
        Content_Type="application/x-www-form-urlencoded",
    )
    assert reply.status == 422 and reply.fields() == ["audience"]
    conn.still_usable()


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ({"q\x00": "hifi"}, "attributes.q\\x00"),
        ({"q": ["hifi", "lossless\x00"]}, "attributes.q.1"),
    ],
    ids=["key", "value"],
)
def test_nul_in_attributes_of_a_put_grant(
    conn: Connection, quiet_log: Callable[[], str], attributes: dict[str, Any], field: str
) -> None:
    body = orjson.dumps({**GRANT, "attributes": attributes})
    reply = conn.send("PUT", "/v1/grants/no500-put", "admin", body, Content_Type="application/json")
    assert reply.status == 422 and reply.fields() == [field]
    conn.still_usable()
    assert conn.send("GET", "/v1/grants/no500-put", "admin").status == 404


def test_a_token_whose_subject_holds_nul_is_refused_not_a_500(
    conn: Connection, quiet_log: Callable[[], str]
) -> None:
    """A signed token is still the caller's text: its ``sub`` would reach Postgres."""
    body = orjson.dumps({"resource": "track:no500", "action": "stream", "territory": "GB"})
    reply = conn.send("POST", "/v1/check", "nul-sub", body, Content_Type="application/json")
    assert reply.status == 401 and reply.problem()["token_error"] == "malformed"
    conn.still_usable()


# --- nesting and numbers in attributes --------------------------------------------------


def test_deeply_nested_attributes_of_a_put_grant(
    conn: Connection, quiet_log: Callable[[], str]
) -> None:
    for levels, where in [(2000, "attributes"), (100, "attributes.a" + ".0" * 31)]:
        body = grant_body(b'{"a":' + nested(levels) + b"}")
        reply = conn.send(
            "PUT", "/v1/grants/no500-deep", "admin", body, Content_Type="application/json"
        )
        assert reply.status == 422 and reply.fields() == [where], reply.body[:300]
        assert "at most 32 levels" in reply.problem()["errors"][0]["message"]
        conn.still_usable()


def test_an_integer_beyond_2_53_in_attributes_of_a_put_grant(
    conn: Connection, quiet_log: Callable[[], str]
) -> None:
    body = grant_body(b'{"n":' + BIG + b"}")
    reply = conn.send("PUT", "/v1/grants/no500-big", "admin", body, Content_Type="application/json")
    assert reply.status == 422 and reply.fields() == ["attributes.n"]
    assert conn.send("GET", "/v1/grants/no500-big", "admin").status == 404  # not stored
    conn.still_usable()


def test_a_value_nested_1000_levels_where_a_code_belongs(
    conn: Connection, quiet_log: Callable[[], str]
) -> None:
    """An error message once quoted the refused value's repr, which recursed as deep."""
    deep = nested(1000)
    check = b'{"resource":"track:no500","action":"stream","territory":' + deep + b"}"
    reply = conn.send("POST", "/v1/check", "alice", check, Content_Type="application/json")
    assert reply.status == 422 and reply.fields() == ["territory"], reply.body[:300]
    put = orjson.dumps({**GRANT, "territories": []})[:-2] + deep + b"]}"  # [<deep>]
    reply = conn.send("PUT", "/v1/grants/no500-t", "admin", put, Content_Type="application/json")
    assert reply.status == 422 and reply.fields() == ["territories.0"], reply.body[:300]
    conn.still_usable()


# --- the same through an import ---------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (grant_line(b'{"q":"lossless\\u0000"}'), "attributes.q"),
        (grant_line(b'{"q\\u0000":1}'), "attributes.q\\x00"),
        (grant_line(b'{"a":' + nested(2000) + b"}"), "attributes"),
        (grant_line(b'{"a":' + nested(500) + b"}"), "attributes.a" + ".0" * 31),
        (grant_line(b'{"n":' + BIG + b"}"), "attributes.n"),
        (grant_line(b'{"n":[1,9007199254740992]}'), "attributes.n.1"),
    ],
    ids=["nul-value", "nul-key", "2000-levels", "500-levels", "big-int", "2^53"],
)
def test_an_import_line_is_a_row_error_naming_line_and_field(
    conn: Connection, quiet_log: Callable[[], str], line: bytes, field: str
) -> None:
    body = b'{"kind":"resource","id":"track:no500"}\n' + line
    reply = conn.send("POST", "/v1/imports", "import", body, Content_Type="application/x-ndjson")
    problem = reply.problem()
    assert reply.status == 422 and problem["import"]["status"] == "failed", problem
    assert [(e["line"], e["field"]) for e in problem["errors"]] == [(2, field)]
    conn.still_usable()


def test_a_source_nested_1000_levels_in_a_replace_source_import(
    conn: Connection, quiet_log: Callable[[], str]
) -> None:
    line = orjson.dumps({"id": "no500-s", **GRANT})[:-1] + b',"source":' + nested(1000) + b"}\n"
    reply = conn.send(
        "POST",
        "/v1/imports?replace_source=feed",
        "import",
        line,
        Content_Type="application/x-ndjson",
    )
    assert reply.status == 422 and reply.fields() == ["source"], reply.body[:300]
    assert "a list" in reply.problem()["errors"][0]["message"]
    conn.still_usable()


def test_a_skipped_row_whose_id_holds_nul_or_a_tab(
    conn: Connection, quiet_log: Callable[[], str]
) -> None:
    """With --skip-invalid a rejected row's id was staged for Postgres as it was."""
    lines = [orjson.dumps({"id": gid, "subject": "nobody"}) for gid in ("a\x00b", "a\tb", "a\\b")]
    body = b"\n".join([*lines, orjson.dumps({"id": "no500-ok", **GRANT})]) + b"\n"
    reply = conn.send(
        "POST",
        "/v1/imports?skip_invalid=true",
        "import",
        body,
        Content_Type="application/x-ndjson",
    )
    assert reply.status == 200, reply.body[:500]
    report = json.loads(reply.body)
    assert report["counts"]["rejected"] == 3 and report["status"] == "committed"
    conn.still_usable()


# --- a client that goes away mid-body ---------------------------------------------------


@pytest.mark.parametrize(
    ("request_head", "what"),
    [
        (
            "PUT /v1/grants/no500-gone HTTP/1.1\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n",
            "PUT /v1/grants/no500-gone",
        ),
        (
            "POST /v1/imports HTTP/1.1\r\nContent-Type: application/x-ndjson\r\n"
            "Transfer-Encoding: chunked\r\n",
            "POST /v1/imports",
        ),
    ],
    ids=["put-grant", "import-upload"],
)
def test_a_client_that_disconnects_mid_body_costs_one_log_line(
    server: Server, quiet_log: Callable[[], str], request_head: str, what: str
) -> None:
    token = server.tokens["admin" if what.startswith("PUT") else "import"]
    head = f"{request_head}Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    part = '{"subject": "user:al' if what.startswith("PUT") else '20\r\n{"id": "no500-gone", "sub'
    with socket.create_connection(("127.0.0.1", server.port)) as client:
        client.sendall(head.encode() + part.encode())
        time.sleep(0.3)  # the route is reading the body
    deadline = time.monotonic() + 20
    while "disconnected" not in quiet_log() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # anything else it would log about this request
    lines = [line for line in quiet_log().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert what in lines[0] and "disconnected" in lines[0], lines
    assert not lines[0].startswith("ERROR")
    # And the server serves on.
    admin = {"Authorization": f"Bearer {server.tokens['admin']}"}
    assert httpx.get(f"{server.url}/v1/grants?limit=1", headers=admin).status_code == 200


# --- the CLI: exit 2 and the message, never a traceback ---------------------------------


def run_cli(dsn: str, *args: str | bytes | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [ENTITLEMENTS, *map(lambda a: a if isinstance(a, bytes) else str(a), args)],
        env=env_for(dsn),
        capture_output=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "content", "field"),
    [
        ("nul.ndjson", grant_line(b'{"q":"\\u0000"}'), "attributes.q"),
        ("deep.ndjson", grant_line(b'{"a":' + nested(2000) + b"}"), "attributes"),
        ("big.ndjson", grant_line(b'{"n":' + BIG + b"}"), "attributes.n"),
        (
            "big.csv",
            b"id,subject,resource,actions,territories,attributes\n"
            b'no500-1,user:alice,track:no500,stream,*,"{""n"": ' + BIG + b'}"\n',
            "attributes.n",
        ),
    ],
    ids=["nul", "2000-levels", "big-int", "big-int-csv"],
)
async def test_the_import_command_exits_2_with_the_message(
    clean: PostgresStore, pg_dsn: str, tmp_path: Path, name: str, content: bytes, field: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    done = run_cli(pg_dsn, "import", path)
    stderr = done.stderr.decode()
    assert done.returncode == 2, (done.returncode, stderr[-2000:])
    assert "Traceback" not in stderr
    assert f"line {1 if name.endswith('ndjson') else 2} {field}:" in stderr, stderr
    assert await clean.pool.fetchval("SELECT count(*) FROM grants") == 0


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((b"--sub", b"\xff"), "sub"),  # not UTF-8: Python hands it over as a lone surrogate
        ((b"--sub", b"bob smith"), "sub"),
        ((b"--sub", b""), "sub"),
        ((b"--sub", b"bob", b"--role", b"plan\x01premium"), "role"),
        ((b"--sub", b"bob", b"--scope", b"entitlements:admin\xff"), "scope"),
        ((b"--sub", b"bob", b"--tenant", b"t\x1b[31m"), "tenant"),
    ],
    ids=["surrogate", "space", "empty", "role", "scope", "tenant"],
)
def test_token_mint_exits_2_for_a_token_the_service_could_not_use(
    pg_dsn: str, args: tuple[bytes, ...], field: str
) -> None:
    done = run_cli(pg_dsn, "token", "mint", *args)
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 2, (done.returncode, done.stdout[:200], stderr[-2000:])
    assert "Traceback" not in stderr and f"error: {field}" in stderr, stderr
    assert not done.stdout.strip()  # no token printed
