"""A deadline for the request header, for uvicorn's HTTP/1.1 protocols.

uvicorn closes a keep-alive connection that stays idle after a response
(``timeout_keep_alive``), but nothing bounds a connection that never completes a
request header: one that sends nothing after connecting, or half a header and then
nothing, stays open for ever, and a few hundred of them hold as many sockets and
file descriptors (slowloris, OWASP API4).

These subclasses of uvicorn's ``HttpToolsProtocol`` and ``H11Protocol`` set a
deadline whenever the connection starts waiting for a request (when it opens, and
when a response completes with no pipelined request queued) and clear it when a
request's header is complete. Past the deadline the connection is closed (after a
``408 Request Timeout`` when part of a request had arrived). Time spent answering a
request, or reading its body, is not counted: the body has its own bound
(``ENTITLEMENTS_UPLOAD_STALL_TIMEOUT``, ``entitlements.api.body``).
``http_protocol(seconds)`` is what ``uvicorn.run(http=...)`` takes; it pickles, so
it reaches ``--workers N`` processes too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, cast

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("entitlements.api")

_TIMEOUT_BODY = b"the request header did not arrive in time\n"
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\n"
    b"connection: close\r\n"
    b"\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class HeaderDeadline(asyncio.Protocol):
    """The deadline, mixed in before one of uvicorn's HTTP/1.1 protocol classes.

    A request costs two attribute writes and a clock read, not a timer: one timer per
    connection looks at the deadline when it falls due, and moves itself on if the
    deadline moved (or comes back later if a request is being answered).
    """

    # Set by the uvicorn protocol this is mixed into.
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._deadline: float | None = None  # None: a request is being answered
        self._header_started = False
        self._watch: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._wait_for_header()

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None and data:
            self._header_started = True
        before = self.cycle
        super().data_received(data)
        if self.cycle is not before:  # a request's header is complete
            self._deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        super().connection_lost(exc)

    def _response_done(self) -> None:
        """After uvicorn's ``on_response_complete``: wait for the next request, unless a
        pipelined one is already being answered."""
        cycle = self.cycle
        if (cycle is None or cycle.response_complete) and not self.transport.is_closing():
            self._wait_for_header()

    def _wait_for_header(self) -> None:
        self._deadline = self.loop.time() + self.header_timeout
        self._header_started = False
        if self._watch is None:
            self._watch = self.loop.call_at(self._deadline, self._look)

    def _look(self) -> None:
        self._watch = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # closed, or upgraded to another protocol
        deadline = self._deadline
        if deadline is None:  # answering a request: nothing to time; look again later
            self._watch = self.loop.call_later(self.header_timeout, self._look)
        elif self.loop.time() < deadline:  # a later request moved the deadline on
            self._watch = self.loop.call_at(deadline, self._look)
        else:
            if self._header_started:
                self.transport.write(_TIMEOUT_RESPONSE)
            log.debug("closed a connection without a complete request header in time")
            self.transport.close()


class H11HeaderDeadline(HeaderDeadline, H11Protocol):
    """uvicorn's pure-Python HTTP/1.1 protocol, with the header deadline."""

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._response_done()


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
    _FAST: type[HeaderDeadline] = H11HeaderDeadline
else:

    class HttpToolsHeaderDeadline(HeaderDeadline, HttpToolsProtocol):
        """uvicorn's httptools protocol (its default), with the header deadline."""

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._response_done()

    _FAST = HttpToolsHeaderDeadline


def http_protocol(header_timeout: float, *, h11: bool = False) -> type[asyncio.Protocol]:
    """The ``http=`` argument for uvicorn: its default protocol (httptools when installed,
    else h11), closing connections whose request header is not complete in time."""
    cls = H11HeaderDeadline if h11 else _FAST
    # uvicorn only calls what it is given (with config=, server_state=, app_state=,
    # _loop=); a partial of a module-level class pickles for worker processes.
    return cast(type[asyncio.Protocol], functools.partial(cls, header_timeout=header_timeout))
