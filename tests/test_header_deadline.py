"""The request-header deadline, on both of uvicorn's HTTP/1.1 protocols (httptools and h11).

A real uvicorn on a loopback socket, serving a tiny ASGI app in this event loop;
``tests/test_edge_limits.py`` does the same through ``entitlements serve --workers 2``.
What must hold: no complete header in time → closed; but time spent answering a
request or receiving its body is never counted, and pipelined requests are served.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from sdk_support import free_port

from entitlements.api.header_deadline import http_protocol

BOUND = 0.5
SLACK = 2.0


async def app(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    if scope["path"] == "/slow":
        await asyncio.sleep(BOUND * 2)  # answering takes longer than the header bound
    reply = b"%d" % len(body)
    headers = [(b"content-length", b"%d" % len(reply))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": reply})


@pytest.fixture(params=["httptools", "h11"])
async def port(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    chosen = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=chosen,
        http=http_protocol(BOUND, h11=request.param == "h11"),
        lifespan="off",
        log_level="warning",
        timeout_keep_alive=30,  # longer than BOUND: the header deadline is what closes
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started
    try:
        yield chosen
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def closed_after(reader: asyncio.StreamReader) -> tuple[float, bytes]:
    """Seconds until the server closes the connection, and what it sent before."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    data = await asyncio.wait_for(reader.read(), BOUND + SLACK + 5)
    return loop.time() - start, data


async def response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200 "), head
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return await reader.readexactly(length)


async def test_a_silent_connection_is_closed_after_the_bound(port: int) -> None:
    reader, writer = await connect(port)
    took, data = await closed_after(reader)
    assert data == b"" and BOUND * 0.9 <= took <= BOUND + SLACK
    writer.close()


async def test_half_a_header_is_answered_408_and_closed(port: int) -> None:
    reader, writer = await connect(port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    took, data = await closed_after(reader)
    assert data.startswith(b"HTTP/1.1 408 ") and b"connection: close" in data
    assert BOUND * 0.9 <= took <= BOUND + SLACK
    writer.close()


async def test_a_header_sent_slowly_within_the_bound_is_served(port: int) -> None:
    reader, writer = await connect(port)
    for piece in (b"GET / HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
        writer.write(piece)
        await asyncio.sleep(BOUND / 4)
    assert await response(reader) == b"0"
    writer.close()


async def test_answering_and_receiving_the_body_do_not_count(port: int) -> None:
    reader, writer = await connect(port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await response(reader) == b"0"  # answered after 2 x BOUND
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
    for piece in (b"a", b"b", b"c", b"d"):  # the body takes 2 x BOUND to arrive
        await asyncio.sleep(BOUND / 2)
        writer.write(piece)
    assert await response(reader) == b"4"
    # Then the connection waits for a next request: closed after the bound.
    took, data = await closed_after(reader)
    assert data == b"" and BOUND * 0.9 <= took <= BOUND + SLACK
    writer.close()


async def test_pipelined_requests_are_all_served(port: int) -> None:
    reader, writer = await connect(port)
    request = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
    writer.write(request * 3)
    for _ in range(3):  # 3 x 2 x BOUND in all: the queued ones are not timed out
        assert await response(reader) == b"0"
    took, data = await closed_after(reader)
    assert data == b"" and took <= BOUND + SLACK
    writer.close()


def test_the_protocol_reaches_worker_processes() -> None:
    # uvicorn hands its config to --workers processes by pickling it.
    made = pickle.loads(pickle.dumps(http_protocol(7.0)))
    assert made.keywords == {"header_timeout": 7.0}
