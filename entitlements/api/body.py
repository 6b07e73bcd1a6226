"""Reading request bodies: a size limit enforced while streaming, a bound on how long
a body may stall, and strict JSON."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from entitlements.domain.parsers import parse_object
from entitlements.domain.values import DECODER_MAX_DEPTH, too_deep, too_deep_problem
from entitlements.errors import (
    FieldError,
    InvalidInputError,
    PayloadTooLargeError,
    UploadStalledError,
)


class BodyStallMiddleware:
    """Refuse a request whose body stops arriving (slowloris on the body, or an upload
    that hangs while it holds the import lock).

    A wait for the next piece of the body may last at most ``seconds``
    (``ENTITLEMENTS_UPLOAD_STALL_TIMEOUT``); past it, the route's read raises
    ``UploadStalledError`` (408, and the connection is closed). Only waiting for the
    client counts: time the route spends between reads (an import waiting for its
    turn, Postgres busy with a batch) does not. Once the body is complete, ``receive``
    (which then waits for the client to go away) is passed through unbounded.

    A read costs a clock read and a dict entry, not a timer (a timer per read cost
    ~5-20 us with uvloop; a check costs ~60): one sweeper per process looks at the
    reads in progress every ``period`` and stops itself when there are none, so a
    stall is noticed between ``seconds`` and ``seconds + period`` after it began.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds
        self.period = min(1.0, seconds / 4)
        self._waiting: dict[asyncio.Task[Any], float] = {}  # task -> when its read began
        self._stalled: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        complete = False

        async def bounded() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            loop = asyncio.get_running_loop()
            task = asyncio.current_task()
            assert task is not None
            self._waiting[task] = loop.time()
            if self._sweeper is None:
                self._sweeper = loop.call_later(self.period, self._sweep, loop)
            cancelling = task.cancelling()
            try:
                message = await receive()
            except asyncio.CancelledError:
                if task not in self._stalled:
                    raise
                self._stalled.discard(task)
                if task.uncancel() > cancelling:  # cancelled for another reason too
                    raise
                raise UploadStalledError(
                    f"no part of the request body arrived for {self.seconds:g} s"
                    " (ENTITLEMENTS_UPLOAD_STALL_TIMEOUT); nothing was done"
                ) from None
            finally:
                del self._waiting[task]
            complete = not message.get("more_body", False)
            return message

        await self.app(scope, bounded, send)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeper = None
        if not self._waiting:
            return  # the next read starts it again
        too_old = loop.time() - self.seconds
        for task, since in self._waiting.items():
            if since <= too_old and task not in self._stalled:
                self._stalled.add(task)
                task.cancel()  # turned into UploadStalledError in that task's read
        self._sweeper = loop.call_later(self.period, self._sweep, loop)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int) -> Any:
    """Parse the body as JSON (orjson: UTF-8 only, no NaN or Infinity)."""
    raw = await read_body(request, limit)
    if not raw:
        raise InvalidInputError(FieldError("", "the body must be a JSON object"))
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        deep = too_deep(raw, DECODER_MAX_DEPTH)  # e.g. beyond orjson's own 1,024 levels
        if deep is not None:
            raise InvalidInputError(too_deep_problem(deep)) from None
        raise InvalidInputError(FieldError("", f"the body is not valid JSON: {exc.msg}")) from None


json_object = parse_object
"""Refuse anything but a JSON object whose keys are all ``allowed`` (the domain's rule)."""
