"""Request latency, by route template (not raw path: ids would explode the label set)."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from entitlements import metrics


class TimingMiddleware:
    """A plain ASGI middleware (no BaseHTTPMiddleware: it would buffer streamed bodies)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._children: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            key = (template, scope["method"], status // 100)
            child = self._children.get(key)
            if child is None:  # label look-up costs microseconds; do it once per route
                child = metrics.REQUEST_SECONDS.labels(
                    template, scope["method"], f"{status // 100}xx"
                )
                self._children[key] = child
            child.observe(time.perf_counter() - start)
