"""The gateway's route table: which request names which (resource, action).

A :class:`RouteTable` is built from ``ENTITLEMENTS_GATEWAY_ROUTES`` by
:mod:`entitlements.gateway.route_config` (the format and every rule a route
must follow are there). Matching is pure and fast:
:meth:`RouteTable.match` takes a method and a raw path and answers
:class:`Matched` (resource, action, the path's values, the token policy),
:class:`Public`, or :class:`Unmatched` (why). How a raw path is read:
:mod:`entitlements.gateway.paths`.

Which route wins: a request's decoded segments are matched against every
template; where several fit, the one whose *first* differing segment is a
literal wins over a placeholder (``/tracks/top/stream`` beats
``/tracks/{isrc}/stream``), and at the same template a listed method wins over
``"*"``. The most specific route decides, even if its resource is invalid for
the request (no falling through to a wider route). Two routes with the same
template shape and a common method are refused when the table is loaded.

The table is compiled into a trie of segments, so a match costs a dictionary
look-up per segment whatever the number of routes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from entitlements.domain.model import parse_resource
from entitlements.errors import InvalidInputError
from entitlements.gateway.paths import PathRefusal, split_path

__all__ = [
    "ANY_METHOD",
    "DEFAULT_TOKEN_LIFETIME",
    "MAX_TOKEN_LIFETIME",
    "PLACEHOLDER_RE",
    "MatchResult",
    "Matched",
    "Public",
    "Route",
    "RouteTable",
    "TokenPolicy",
    "Unmatched",
    "template_segments",
]

MAX_TOKEN_LIFETIME: Final = 60
DEFAULT_TOKEN_LIFETIME: Final = 30
PLACEHOLDER_RE: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}")
ANY_METHOD: Final = "*"


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    """Mint a per-request token for the upstream: its audience, and its lifetime in seconds."""

    audience: str
    lifetime: int = DEFAULT_TOKEN_LIFETIME


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of the table, as written (``index`` is its place, from 0).

    ``methods`` is ``None`` for ``"*"``; ``placeholders`` are the path's, in order.
    ``resource`` and ``action`` are ``None`` on a public route; ``token`` is the
    effective policy (the route's, else the table's default; never on a public route).
    """

    index: int
    methods: frozenset[str] | None
    path: str
    resource: str | None
    action: str | None
    public: bool
    token: TokenPolicy | None
    placeholders: tuple[str, ...]
    resource_pieces: tuple[tuple[bool, str], ...] = field(default=(), repr=False, compare=False)

    def resource_for(self, params: Mapping[str, str]) -> str:
        """The resource template with ``params`` filled in (not validated here)."""
        return "".join(params[text] if is_name else text for is_name, text in self.resource_pieces)


@dataclass(frozen=True, slots=True)
class Matched:
    """The request names ``resource`` and ``action`` (``resource`` already validated)."""

    route: Route
    resource: str
    action: str
    params: Mapping[str, str]

    @property
    def token(self) -> TokenPolicy | None:
        return self.route.token


@dataclass(frozen=True, slots=True)
class Public:
    """The request is on a public route: no check."""

    route: Route
    params: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Unmatched:
    """No decision can be asked for: why, for a person, and the route when one fitted.

    ``kind``: ``bad_path`` (the path is refused before matching, see
    :mod:`entitlements.gateway.paths`), ``no_route`` (no route has this path and
    method), ``bad_resource`` (the route fits but the path's values do not make a
    valid resource).
    """

    kind: Literal["bad_path", "no_route", "bad_resource"]
    message: str
    route: Route | None = None


MatchResult = Matched | Public | Unmatched


class _Node:
    __slots__ = ("leaf", "literals", "param")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.leaf: dict[str, Route] | None = None  # method (or "*") -> route


class RouteTable:
    """The compiled table. :meth:`match` is pure and thread-safe."""

    __slots__ = ("_root", "default_token", "routes")

    def __init__(self, routes: tuple[Route, ...], default_token: TokenPolicy | None) -> None:
        self.routes = routes
        self.default_token = default_token
        self._root = _Node()
        for route in routes:
            self._add(route)

    def __len__(self) -> int:
        return len(self.routes)

    def _add(self, route: Route) -> None:
        node = self._root
        for segment in template_segments(route.path):
            if segment is None:
                node.param = node.param or _Node()
                node = node.param
            else:
                node = node.literals.setdefault(segment, _Node())
        if node.leaf is None:
            node.leaf = {}
        for method in route.methods or (ANY_METHOD,):
            node.leaf.setdefault(method, route)

    def match(self, method: str, target: str) -> MatchResult:
        """Which route ``method`` and ``target`` (a raw path, ``?query`` ignored) name."""
        segments = split_path(target)
        if isinstance(segments, PathRefusal):
            return Unmatched("bad_path", segments.message)
        values: list[str] = []
        route = _find(self._root, segments, 0, values, method)
        if route is None:
            shown = target.split("?", 1)[0][:200]
            return Unmatched("no_route", f"no route for {method[:32]} {shown}")
        params = dict(zip(route.placeholders, values, strict=True))
        if route.public:
            return Public(route, params)
        assert route.action is not None
        resource = route.resource_for(params)
        try:
            parse_resource(resource)
        except InvalidInputError:
            return Unmatched(
                "bad_resource",
                f"the path does not name a valid resource for route {route.index}"
                f" ({route.resource})",
                route,
            )
        return Matched(route, resource, route.action, params)


def _find(
    node: _Node, segments: tuple[str, ...], i: int, values: list[str], method: str
) -> Route | None:
    """Depth-first, literal before placeholder: the first leaf that takes ``method`` wins.

    A trie is a tree, so each node is visited at most once per match.
    """
    if i == len(segments):
        leaf = node.leaf
        if leaf is None:
            return None
        return leaf.get(method) or leaf.get(ANY_METHOD)
    segment = segments[i]
    child = node.literals.get(segment)
    if child is not None:
        found = _find(child, segments, i + 1, values, method)
        if found is not None:
            return found
    if node.param is not None and segment:
        values.append(segment)
        found = _find(node.param, segments, i + 1, values, method)
        if found is not None:
            return found
        values.pop()
    return None


def template_segments(path: str) -> list[str | None]:
    """A validated template's segments: a literal, or ``None`` for a placeholder."""
    return [None if PLACEHOLDER_RE.fullmatch(s) else s for s in path[1:].split("/")]
