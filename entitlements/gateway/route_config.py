"""Loading the gateway's route table: ``ENTITLEMENTS_GATEWAY_ROUTES``.

``ENTITLEMENTS_GATEWAY_ROUTES`` is JSON text (it starts with ``[`` or ``{``) or
the path of a ``.json`` or ``.toml`` file. Either a list of routes, or a table
``{"routes": [...], "token": {...}}`` (a TOML file is always the table form,
with ``[[routes]]``)::

    [
      {"method": "GET", "path": "/tracks/{isrc}/stream",
       "resource": "track:{isrc}", "action": "stream",
       "token": {"audience": "https://player.internal", "lifetime": "30s"}},
      {"method": ["GET", "HEAD"], "path": "/releases/{upc}",
       "resource": "release:{upc}", "action": "view"},
      {"method": "*", "path": "/healthz", "public": true}
    ]

The table form's ``token`` is the default policy of every route that is not
public (a route's own ``token`` replaces it, ``"token": false`` turns it off).

A route has exactly these keys (any other is refused, with a hint):

``method``
    A method (``"GET"``), a list of them, or ``"*"`` (any). Written in any
    case and stored upper-case; a request's method is compared exactly, so a
    request sent as ``get`` matches no route. ``HEAD`` is not implied by
    ``GET``: list it.
``path``
    A template: literal segments and ``{name}`` placeholders, each a whole
    segment (``/tracks/{isrc}.mp3`` is refused). A literal is written decoded,
    in RFC 3986 path characters without ``%`` (it is compared with the
    request's decoded segment). No ``//``, ``.`` or ``..``, ``?`` or ``#``. A
    trailing slash is significant (``/tracks/`` is not ``/tracks``). How a
    request's path is read: :mod:`entitlements.gateway.paths`.
``resource``
    A template such as ``track:{isrc}``: a literal type (a path cannot choose
    what kind of thing it names), a colon, then literal text and placeholders
    of the path. Braces only delimit placeholders (there is no escaping: a
    resource id never holds a brace). With every placeholder set to ``x`` it
    must pass :func:`entitlements.domain.model.parse_resource`; at match time
    the resource built from the request must pass it too, or the request is
    refused (``Unmatched(kind="bad_resource")``).
``action``
    Must pass :func:`entitlements.domain.model.parse_action`.
``public``
    ``true``: no check, no token needed; such a route has no ``resource``,
    ``action`` or ``token``.
``token``
    Mint a per-request upstream token: ``{"audience": "...", "lifetime": "30s"}``
    (lifetime: seconds as a number, or ``"30s"``/``"1m"``; at most 60 s, default
    30 s). ``false`` turns off a table-wide default for this route.

Every problem in a table is reported at once, each naming its key
(``routes.3.path``; in a file, ``routes.toml:routes.3.path``). Which route wins
when several fit: :mod:`entitlements.gateway.routes`.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from entitlements.domain.model import parse_action, parse_resource
from entitlements.errors import FieldError, InvalidInputError
from entitlements.gateway.routes import (
    ANY_METHOD,
    DEFAULT_TOKEN_LIFETIME,
    MAX_TOKEN_LIFETIME,
    PLACEHOLDER_RE,
    Route,
    RouteTable,
    TokenPolicy,
    template_segments,
)

__all__ = ["MAX_ROUTES", "load_routes", "routes_from_data"]

MAX_ROUTES: Final = 10_000
MAX_FILE_BYTES: Final = 4 * 1024 * 1024
MAX_TEMPLATE_LENGTH: Final = 1024
MAX_AUDIENCE_LENGTH: Final = 512

ROUTE_KEYS: Final = frozenset({"method", "path", "resource", "action", "public", "token"})
TABLE_KEYS: Final = frozenset({"routes", "token"})
TOKEN_KEYS: Final = frozenset({"audience", "lifetime"})

_METHOD_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}")
_LITERAL_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@]+")
_RESOURCE_TYPE_RE: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}:")
_LIFETIME_RE: Final = re.compile(r"([0-9]{1,3})(s|m)?")


def load_routes(value: str) -> RouteTable:
    """``ENTITLEMENTS_GATEWAY_ROUTES``: JSON text, or the path of a ``.json``/``.toml`` file.

    Raises :class:`InvalidInputError` naming the file (if any) and the key.
    """
    text = value.strip()
    if text.startswith(("[", "{")):
        return _from_text(text, "json", "ENTITLEMENTS_GATEWAY_ROUTES")
    path = Path(text)
    label = path.name or text
    suffix = path.suffix.lower()
    if suffix not in {".json", ".toml"}:
        raise InvalidInputError(
            FieldError(
                "ENTITLEMENTS_GATEWAY_ROUTES",
                "must be JSON (starting with '[' or '{') or the path of a .json or .toml file",
            )
        )
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(
            FieldError(label, f"cannot be read: {exc.strerror or exc}")
        ) from None
    if len(raw) > MAX_FILE_BYTES:
        raise InvalidInputError(FieldError(label, "is over 4 MiB"))
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(FieldError(label, "is not UTF-8")) from None
    return _from_text(decoded, suffix[1:], label)


def _from_text(text: str, kind: str, label: str) -> RouteTable:
    try:
        if kind == "toml":
            data: object = tomllib.loads(text)
        else:
            data = json.loads(text, object_pairs_hook=_unique, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            FieldError(label, f"is not valid JSON: {exc.msg} (line {exc.lineno})")
        ) from None
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(FieldError(label, f"is not valid {kind.upper()}: {exc}")) from None
    try:
        return routes_from_data(data)
    except InvalidInputError as exc:
        if label == "ENTITLEMENTS_GATEWAY_ROUTES":
            raise
        raise InvalidInputError(
            [FieldError(f"{label}:{e.field}" if e.field else label, e.message) for e in exc.errors]
        ) from None


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:60]!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def routes_from_data(data: object) -> RouteTable:
    """Validate parsed JSON/TOML (a list of routes, or ``{"routes": [...], "token": ...}``).

    Every problem is reported at once, each naming its key (``routes.3.path``).
    """
    errors: list[FieldError] = []
    default_token: TokenPolicy | None = None
    if isinstance(data, dict):
        errors.extend(_unknown_keys(data, TABLE_KEYS, ""))
        if "token" in data:
            default_token = _token(data["token"], "token", errors, allow_false=False)
        if "routes" not in data:
            errors.append(FieldError("routes", "is required: the list of routes"))
        items: object = data.get("routes", [])
    else:
        items = data
    if not isinstance(items, list):
        errors.append(FieldError("routes", "must be a list of routes"))
        items = []
    elif len(items) > MAX_ROUTES:
        errors.append(FieldError("routes", f"must have at most {MAX_ROUTES} routes"))
        items = []
    routes: list[Route] = []
    for index, item in enumerate(items):
        route = _route(item, index, default_token, errors)
        if route is not None:
            routes.append(route)
    errors.extend(_duplicates(routes))
    if errors:
        raise InvalidInputError(errors)
    return RouteTable(tuple(routes), default_token)


def _unknown_keys(data: Mapping[Any, Any], known: frozenset[str], prefix: str) -> list[FieldError]:
    out = []
    for key in sorted(map(str, data)):
        if key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = (
            f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(known))})"
        )
        out.append(FieldError(f"{prefix}{key[:60]}", f"unknown key{hint}"))
    return out


def _route(
    item: object, index: int, default_token: TokenPolicy | None, errors: list[FieldError]
) -> Route | None:
    where = f"routes.{index}."
    if not isinstance(item, dict):
        errors.append(FieldError(f"routes.{index}", "must be an object (a route)"))
        return None
    before = len(errors)
    errors.extend(_unknown_keys(item, ROUTE_KEYS, where))
    methods = _methods(item.get("method"), where + "method", errors)
    path, placeholders = _path(item.get("path"), where + "path", errors)
    public = item.get("public", False)
    if not isinstance(public, bool):
        errors.append(FieldError(where + "public", "must be true or false"))
        public = False
    resource: str | None = None
    action: str | None = None
    pieces: tuple[tuple[bool, str], ...] = ()
    token: TokenPolicy | None = None
    if public:
        for key in ("resource", "action", "token"):
            if key in item:
                errors.append(FieldError(where + key, "a public route has no " + key))
    else:
        resource, pieces = _resource(item.get("resource"), placeholders, where, errors)
        action = _action(item.get("action"), where + "action", errors)
        token = default_token
        if "token" in item:
            token = _token(item["token"], where + "token", errors, allow_false=True)
    if len(errors) > before:
        return None
    return Route(
        index=index,
        methods=methods,
        path=path,
        resource=resource,
        action=action,
        public=public,
        token=token,
        placeholders=placeholders,
        resource_pieces=pieces,
    )


def _methods(value: object, where: str, errors: list[FieldError]) -> frozenset[str] | None:
    if value is None:
        errors.append(FieldError(where, 'is required: a method, a list of methods, or "*"'))
        return None
    if value == ANY_METHOD:
        return None
    items = value if isinstance(value, list) else [value]
    if not items:
        errors.append(FieldError(where, 'must name at least one method (or "*" for any)'))
        return None
    out: set[str] = set()
    for item in items:
        if item == ANY_METHOD:
            errors.append(FieldError(where, '"*" stands alone: it means any method'))
        elif isinstance(item, str) and _METHOD_RE.fullmatch(item):
            out.add(item.upper())
        else:
            errors.append(FieldError(where, f"{str(item)[:40]!r} is not an HTTP method"))
    return frozenset(out)


def _path(value: object, where: str, errors: list[FieldError]) -> tuple[str, tuple[str, ...]]:
    if not isinstance(value, str) or not value.startswith("/"):
        errors.append(FieldError(where, "is required: a path template starting with '/'"))
        return "/", ()
    if len(value) > MAX_TEMPLATE_LENGTH:
        errors.append(FieldError(where, f"must be at most {MAX_TEMPLATE_LENGTH} characters"))
        return "/", ()
    segments = value[1:].split("/")
    names: list[str] = []
    problem: str | None = None
    for i, segment in enumerate(segments):
        placeholder = PLACEHOLDER_RE.fullmatch(segment)
        if placeholder:
            if placeholder.group(1) in names:
                problem = f"placeholder {{{placeholder.group(1)}}} appears twice"
            names.append(placeholder.group(1))
        elif segment == "" and i < len(segments) - 1:
            problem = "has an empty segment ('//')"
        elif segment in {".", ".."}:
            problem = "has a dot-segment ('.' or '..')"
        elif "{" in segment or "}" in segment:
            problem = (
                f"segment {segment[:40]!r}: a placeholder is a whole segment, '{{name}}'"
                " (a letter or _, then letters, digits or _)"
            )
        elif segment and not _LITERAL_SEGMENT_RE.fullmatch(segment):
            problem = (
                f"segment {segment[:40]!r}: write literals decoded, in RFC 3986 path characters"
                " (letters, digits, -._~!$&'()*+,;=:@), without %-escapes, '?' or '#'"
            )
        if problem:
            errors.append(FieldError(where, problem))
            return "/", ()
    if len(segments) > 64:
        errors.append(FieldError(where, "must have at most 64 segments"))
        return "/", ()
    return value, tuple(names)


def _resource(
    value: object, placeholders: tuple[str, ...], where: str, errors: list[FieldError]
) -> tuple[str | None, tuple[tuple[bool, str], ...]]:
    field_name = where + "resource"
    if not isinstance(value, str) or not value:
        errors.append(FieldError(field_name, "is required: a template such as 'track:{isrc}'"))
        return None, ()
    if not _RESOURCE_TYPE_RE.match(value):
        errors.append(
            FieldError(
                field_name,
                "must start with a literal type and a colon ('track:'): a path cannot choose"
                " the type of what it names",
            )
        )
        return None, ()
    pieces: list[tuple[bool, str]] = []
    at = 0
    for found in PLACEHOLDER_RE.finditer(value):
        if found.start() > at:
            pieces.append((False, value[at : found.start()]))
        name = found.group(1)
        if name not in placeholders:
            errors.append(
                FieldError(field_name, f"{{{name}}} is not a placeholder of the route's path")
            )
            return None, ()
        pieces.append((True, name))
        at = found.end()
    if at < len(value):
        pieces.append((False, value[at:]))
    if any("{" in text or "}" in text for is_name, text in pieces if not is_name):
        errors.append(FieldError(field_name, "braces only enclose a placeholder name, '{name}'"))
        return None, ()
    sample = "".join("x" if is_name else text for is_name, text in pieces)
    try:
        parse_resource(sample, field_name)
    except InvalidInputError as exc:
        errors.append(
            FieldError(field_name, f"with each placeholder set to 'x': {exc.errors[0].message}")
        )
        return None, ()
    return value, tuple(pieces)


def _action(value: object, where: str, errors: list[FieldError]) -> str | None:
    if value is None:
        errors.append(FieldError(where, "is required on a route that is not public"))
        return None
    try:
        return parse_action(value, where)
    except InvalidInputError as exc:
        errors.extend(exc.errors)
        return None


def _token(
    value: object, where: str, errors: list[FieldError], *, allow_false: bool
) -> TokenPolicy | None:
    if value is False and allow_false:
        return None
    if not isinstance(value, dict):
        also = " or false" if allow_false else ""
        errors.append(FieldError(where, f'must be {{"audience": ..., "lifetime": ...}}{also}'))
        return None
    before = len(errors)
    errors.extend(_unknown_keys(value, TOKEN_KEYS, where + "."))
    audience = value.get("audience")
    if not isinstance(audience, str) or not 0 < len(audience) <= MAX_AUDIENCE_LENGTH:
        errors.append(
            FieldError(where + ".audience", "is required: the upstream's audience (a string)")
        )
    elif any(c.isspace() or ord(c) < 32 for c in audience):
        errors.append(FieldError(where + ".audience", "must not hold spaces or control characters"))
    lifetime = _lifetime(value.get("lifetime", DEFAULT_TOKEN_LIFETIME), where + ".lifetime", errors)
    if len(errors) > before or not isinstance(audience, str):
        return None
    return TokenPolicy(audience=audience, lifetime=lifetime)


def _lifetime(value: object, where: str, errors: list[FieldError]) -> int:
    seconds: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and (found := _LIFETIME_RE.fullmatch(value.strip())):
        seconds = int(found.group(1)) * (60 if found.group(2) == "m" else 1)
    if seconds is None or not 1 <= seconds <= MAX_TOKEN_LIFETIME:
        errors.append(
            FieldError(
                where,
                f"must be 1 to {MAX_TOKEN_LIFETIME} seconds: a whole number, or '30s', '1m'",
            )
        )
        return DEFAULT_TOKEN_LIFETIME
    return seconds


def _duplicates(routes: list[Route]) -> list[FieldError]:
    """Two routes of the same shape (placeholders alike) sharing a method can never both win."""
    seen: dict[tuple[tuple[str | None, ...], str], Route] = {}
    out: list[FieldError] = []
    for route in routes:
        shape = tuple(template_segments(route.path))
        for method in sorted(route.methods or {ANY_METHOD}):
            first = seen.setdefault((shape, method), route)
            if first is not route:
                shown = "any method" if method == ANY_METHOD else method
                out.append(
                    FieldError(
                        f"routes.{route.index}.path",
                        f"same path and method ({shown}) as routes.{first.index}",
                    )
                )
                break
    return out
