"""Resource exhaustion at the edge (OWASP API4), against a real ``entitlements serve``.

- A connection that never completes a request header (sends nothing, or half a
  header) is closed after ``ENTITLEMENTS_HEADER_TIMEOUT``; so is an idle keep-alive
  connection. Before, hundreds of them stayed open for ever.
- A request body that stops arriving is refused with 408 after
  ``ENTITLEMENTS_UPLOAD_STALL_TIMEOUT``; a stalled import upload then frees the
  import lock (before, it held it, and so every other import, for 10 minutes).
- An import that waits for the lock longer than ``ENTITLEMENTS_IMPORT_LOCK_WAIT`` is
  refused with 409 and ``Retry-After`` (the CLI: exit 1 and a message).

The server runs with two workers: the header deadline must reach worker processes.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from processes import stop_process, wait_ready
from sdk_support import free_port
from test_import_cli import ENTITLEMENTS, env_for
from test_import_helpers import grant_record, ndjson_lines, write_ndjson

from entitlements.store.locks import AdvisoryLock
from entitlements.store.postgres import PostgresStore

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 1.0
STALL_TIMEOUT = 3.0
LOCK_WAIT = 1.0
SLACK = 3.0  # a busy CI box: timers fire late, processes answer late
NDJSON_TYPE = "application/x-ndjson"


class Served:
    def __init__(self, port: int, token: str, log: Path) -> None:
        self.port, self.token, self.log = port, token, log
        self.url = f"http://127.0.0.1:{port}"

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def import_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": NDJSON_TYPE}


@pytest.fixture(scope="module")
def served(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    env = env_for(pg_dsn) | {
        "ENTITLEMENTS_HEADER_TIMEOUT": str(int(HEADER_TIMEOUT)),
        "ENTITLEMENTS_UPLOAD_STALL_TIMEOUT": str(int(STALL_TIMEOUT)),
        "ENTITLEMENTS_IMPORT_LOCK_WAIT": str(int(LOCK_WAIT)),
    }
    minted = subprocess.run(
        [ENTITLEMENTS, "token", "mint", "--sub", "ops", "--scope", "entitlements:import"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    port = free_port()
    log = tmp_path_factory.mktemp("edge") / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [ENTITLEMENTS, "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, log.read_text, timeout=90)
        yield Served(port, minted.stdout.strip(), log)
    finally:
        stop_process(proc, timeout=20)


def wait_closed(socks: list[socket.socket], within: float) -> dict[int, tuple[float, bytes]]:
    """When each socket was closed by the server (monotonic time) and what it sent first."""
    selector = selectors.DefaultSelector()
    received: dict[int, bytes] = {}
    for i, s in enumerate(socks):
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ, i)
        received[i] = b""
    closed: dict[int, tuple[float, bytes]] = {}
    deadline = time.monotonic() + within
    while len(closed) < len(socks) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.1):
            i = key.data
            try:
                data = key.fileobj.recv(4096)  # type: ignore[union-attr]
            except ConnectionResetError:
                data = b""
            if data:
                received[i] += data
                continue
            closed[i] = (time.monotonic(), received[i])
            selector.unregister(key.fileobj)
    selector.close()
    return closed


def test_connections_that_never_complete_a_header_are_closed_after_the_bound(
    served: Served,
) -> None:
    silent: list[socket.socket] = []
    half: list[socket.socket] = []
    opened: dict[int, float] = {}
    try:
        for i in range(400):
            s = served.connect()
            opened[i] = time.monotonic()
            if i % 2:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                half.append(s)
            else:
                silent.append(s)
        # The service still answers while they hang there.
        assert httpx.get(f"{served.url}/healthz", timeout=5).status_code == 200
        socks = silent + half
        order = [i for i in range(400) if i % 2 == 0] + [i for i in range(400) if i % 2]
        closed = wait_closed(socks, HEADER_TIMEOUT + 10)
        assert len(closed) == len(socks), f"{len(socks) - len(closed)} connections still open"
        for position, (at, first) in closed.items():
            lived = at - opened[order[position]]
            assert HEADER_TIMEOUT * 0.9 <= lived <= HEADER_TIMEOUT + SLACK + 5, lived
            if position >= len(silent):  # half a header: told why
                assert first.startswith(b"HTTP/1.1 408 "), first[:100]
            else:
                assert first == b""
    finally:
        for s in silent + half:
            s.close()


def test_a_slow_but_complete_header_and_keep_alive_are_served_then_idle_closes(
    served: Served,
) -> None:
    with served.connect() as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(HEADER_TIMEOUT / 2)
        s.sendall(b"Host: localhost\r\n\r\n")
        assert read_response(s)[0] == 200
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")  # the same connection
        assert read_response(s)[0] == 200
        idle_from = time.monotonic()
        closed = wait_closed([s], HEADER_TIMEOUT + 10)
        assert closed, "an idle keep-alive connection stayed open"
        assert closed[0][0] - idle_from <= HEADER_TIMEOUT + SLACK


def read_response(s: socket.socket) -> tuple[int, bytes]:
    """One response with a Content-Length body: its status and body."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        data = s.recv(4096)
        assert data, f"closed mid-response: {raw!r}"
        raw += data
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = dict(line.split(":", 1) for line in head.decode("latin-1").lower().split("\r\n")[1:])
    length = int(fields["content-length"])
    while len(body) < length:
        data = s.recv(4096)
        assert data, f"closed mid-body: {raw!r}"
        body += data
    return int(head.split()[1]), body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def start_stalled_upload(served: Served, records: bytes) -> socket.socket:
    """An import upload that sends its header and one chunk of body, then nothing."""
    s = served.connect()
    head = (
        "POST /v1/imports HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {served.token}\r\nContent-Type: {NDJSON_TYPE}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    s.sendall(head.encode() + chunk(records))
    return s


async def import_lock_holders(store: PostgresStore) -> int:
    key = int(AdvisoryLock.IMPORT)
    return int(
        await store.pool.fetchval(
            """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
               AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1""",
            key >> 32,
            key & 0xFFFFFFFF,
        )
    )


def response_of(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:])}
    return status, headers, orjson.loads(body) if body else None


async def test_a_stalled_upload_gets_408_and_frees_the_lock_a_waiting_import_gets_409(
    served: Served, clean: PostgresStore
) -> None:
    stalled = start_stalled_upload(served, ndjson_lines([grant_record(1, prefix="stall")]))
    try:
        sent = time.monotonic()
        for _ in range(100):  # the stalled import takes the import lock
            if await import_lock_holders(clean):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the stalled upload never took the import lock")

        # Another import waits at most LOCK_WAIT for it, then is told to come back.
        asked = time.monotonic()
        async with httpx.AsyncClient(timeout=30) as client:
            busy = await client.post(
                f"{served.url}/v1/imports",
                content=ndjson_lines([grant_record(2, prefix="busy")]),
                headers=served.import_headers(),
            )
        waited = time.monotonic() - asked
        assert busy.status_code == 409, busy.text
        assert busy.headers["content-type"] == "application/problem+json"
        assert int(busy.headers["retry-after"]) >= 1
        problem = busy.json()
        assert (
            problem["type"].endswith(":busy") and "another import is running" in problem["detail"]
        )
        assert LOCK_WAIT * 0.9 <= waited <= LOCK_WAIT + SLACK, waited

        # The stalled upload is refused once its body has not moved for STALL_TIMEOUT.
        closed = wait_closed([stalled], STALL_TIMEOUT + 15)
        assert closed, "the stalled upload was never answered"
        at, raw = closed[0]
        assert STALL_TIMEOUT * 0.9 <= at - sent <= STALL_TIMEOUT + SLACK, at - sent
        status, headers, body = response_of(raw)
        assert status == 408 and headers["content-type"] == "application/problem+json"
        assert headers["connection"] == "close"
        assert body["type"].endswith(":upload-stalled"), body
        assert "ENTITLEMENTS_UPLOAD_STALL_TIMEOUT" in body["detail"]
    finally:
        stalled.close()

    # Nothing of it landed, it is on record as failed, and the lock is free again.
    assert await import_lock_holders(clean) == 0
    failed = await clean.pool.fetch("SELECT report FROM imports WHERE status = 'failed'")
    messages = sorted(r["report"]["errors"][0]["message"] for r in failed)
    assert len(messages) == 2, messages  # the busy one and the stalled one
    assert "another import is running" in messages[0]
    assert "no part of the request body arrived" in messages[1]
    async with httpx.AsyncClient(timeout=30) as client:
        after = await client.post(
            f"{served.url}/v1/imports",
            content=ndjson_lines([grant_record(3, prefix="after")]),
            headers=served.import_headers(),
        )
    assert after.status_code == 200 and after.json()["counts"]["inserted"] == 1, after.text
    assert await clean.pool.fetchval("SELECT count(*) FROM grants") == 1


def test_a_check_whose_body_stalls_gets_408(served: Served) -> None:
    with served.connect() as s:
        head = (
            "POST /v1/check HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: 100\r\nAuthorization: Bearer {served.token}\r\n\r\n"
        )
        s.sendall(head.encode() + b'{"resource": ')
        sent = time.monotonic()
        closed = wait_closed([s], STALL_TIMEOUT + 15)
        assert closed, "the stalled request was never answered"
        at, raw = closed[0]
        status, _, body = response_of(raw)
        assert status == 408 and body["type"].endswith(":upload-stalled"), raw[:300]
        assert STALL_TIMEOUT * 0.9 <= at - sent <= STALL_TIMEOUT + SLACK


async def test_the_cli_import_reports_a_busy_import_lock_clearly(
    clean: PostgresStore, pg_dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "grants.ndjson"
    write_ndjson(path, 3)
    env = env_for(pg_dsn) | {"ENTITLEMENTS_IMPORT_LOCK_WAIT": "1"}
    async with clean.pool.acquire() as other, other.transaction():
        await other.execute("SELECT pg_advisory_xact_lock($1)", AdvisoryLock.IMPORT)
        started = time.monotonic()
        done = await asyncio.to_thread(
            subprocess.run,
            [ENTITLEMENTS, "import", str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        took = time.monotonic() - started
    assert done.returncode == 1, done
    assert "another import is running" in done.stderr and "Traceback" not in done.stderr
    assert "ENTITLEMENTS_IMPORT_LOCK_WAIT" in done.stderr
    assert took < 30, took
    assert await clean.pool.fetchval("SELECT count(*) FROM grants") == 0
