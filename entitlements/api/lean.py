"""Lean routes: plain Starlette routes for the hottest paths, documented by themselves.

FastAPI's per-request machinery (dependency resolution, response-model
validation) is about a quarter of a warm check's time. The check routes skip it:
their handlers authenticate and parse on their own and answer raw orjson bytes.
A ``LeanRoute`` carries its OpenAPI operation, so the one object that serves a
route also documents it (``api.openapi.build`` reads it): there is no FastAPI twin
whose dependencies or response model could silently differ from what is served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope


class LeanRoute(Route):
    """A Starlette route with its OpenAPI ``operation`` (an OpenAPI Operation Object).

    Like FastAPI's routes, it records itself in the scope (``scope["route"]``), so the
    request metrics name its path template.
    """

    def __init__(
        self,
        path: str,
        endpoint: Callable[[Request], Awaitable[Response]],
        *,
        methods: list[str],
        operation: Mapping[str, Any],
    ) -> None:
        super().__init__(path, endpoint, methods=methods)
        self.operation = dict(operation)
        self.documented_methods = frozenset(m.upper() for m in methods)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


__all__ = ["LeanRoute"]
