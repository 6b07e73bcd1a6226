"""The original request, read from what a proxy sent to ``/v1/gateway/check``.

Three conventions, each a proxy's own; the reader finds which one a request
follows from its *markers* and reads only that one's headers:

``envoy`` — Envoy HTTP ``ext_authz`` (``http_service.path_prefix:
/v1/gateway/check``). Envoy sends the original method unchanged and the path
``path_prefix + original path`` (with the original query). Marker: a path
*below* the prefix (``/v1/gateway/check/…``; the original ``/`` arrives as
``/v1/gateway/check/``). Read: the method as received; the URI is the received
raw path minus the prefix, plus the received query; the host is ``Host``
(Envoy copies the original ``:authority``); ``X-Forwarded-Proto`` if Envoy was
told to pass it (``allowed_headers``). ``x-envoy-original-path`` is *not* read:
Envoy sets it only when a route rewrites the path, which happens in the router
after ``ext_authz`` has run (so the appended path is already the client's), and
Envoy does not strip a client's copy of it.

``nginx`` — nginx ``auth_request``: a subrequest to a fixed URI, sent as
``GET`` (whatever the client's method) without the body. The original request
exists only where the configuration puts it: ``proxy_set_header X-Original-URI
$request_uri`` and ``proxy_set_header X-Original-Method $request_method``.
Markers: ``X-Original-URI`` or ``X-Original-Method``. Read: both, each
required (the method is never assumed to be the subrequest's ``GET``: a
configuration that forgot the header would authorize every ``DELETE`` as a
``GET``); host ``X-Forwarded-Host``; proto ``X-Forwarded-Proto``.

``traefik`` — Traefik ``forwardAuth``: a ``GET`` (unless
``preserveRequestMethod``) to the configured address with ``X-Forwarded-Method``,
``X-Forwarded-Uri`` (path and query), ``X-Forwarded-Host`` and
``X-Forwarded-Proto`` set by Traefik. Markers: ``X-Forwarded-Uri`` or
``X-Forwarded-Method``. Read: both, each required; host and proto from their
headers.

Which one: a request showing the markers of exactly one *accepted* convention
is read in it; markers of conventions not accepted are ignored. No markers, or
markers of two accepted conventions, is refused: in nginx a client's own
``X-Forwarded-Uri`` reaches the check next to nginx's ``X-Original-URI``, and
guessing which is real would let the client choose the path that is checked.
A deployment accepts only its own proxy's convention by configuring
``conventions``, which also makes a client's stray headers harmless.

In every convention: ``Authorization`` (the client's, passed by all three
proxies by default) and the configured territory header are read as sent; any
header the reader uses that arrives twice is refused. The method must be an
RFC 9110 token of at most 32 characters; the URI must be origin-form
(``/path?query``) of at most 8 KiB. The path is returned raw (still
%-encoded): the route table reads it (:mod:`entitlements.gateway.paths`).
Host and proto are for logs and messages only; no decision reads them.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "ALL_CONVENTIONS",
    "CHECK_PREFIX",
    "MAX_URI_LENGTH",
    "Convention",
    "ForwardedRefusal",
    "ForwardedRequest",
    "read_forwarded",
]

Convention = Literal["envoy", "nginx", "traefik"]
ALL_CONVENTIONS: Final[frozenset[Convention]] = frozenset({"envoy", "nginx", "traefik"})
_ORDER: Final[tuple[Convention, ...]] = ("envoy", "nginx", "traefik")
CHECK_PREFIX: Final = "/v1/gateway/check"
MAX_URI_LENGTH: Final = 8192
MAX_HEADER_VALUE: Final = 8192

_METHOD_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}")

# The headers the reader looks at (lower-case); everything else is skipped unread.
_TRAEFIK_URI: Final = "x-forwarded-uri"
_TRAEFIK_METHOD: Final = "x-forwarded-method"
_NGINX_URI: Final = "x-original-uri"
_NGINX_METHOD: Final = "x-original-method"
_HOST: Final = "host"
_FORWARDED_HOST: Final = "x-forwarded-host"
_FORWARDED_PROTO: Final = "x-forwarded-proto"
_AUTHORIZATION: Final = "authorization"
_READ: Final = frozenset(
    {
        _TRAEFIK_URI,
        _TRAEFIK_METHOD,
        _NGINX_URI,
        _NGINX_METHOD,
        _HOST,
        _FORWARDED_HOST,
        _FORWARDED_PROTO,
        _AUTHORIZATION,
    }
)
_DISPLAY: Final = {
    _TRAEFIK_URI: "X-Forwarded-Uri",
    _TRAEFIK_METHOD: "X-Forwarded-Method",
    _NGINX_URI: "X-Original-URI",
    _NGINX_METHOD: "X-Original-Method",
    _AUTHORIZATION: "Authorization",
}
# Where nginx and Traefik put the original URI and method, and how each gets there.
_SENT_BY: Final[dict[Convention, tuple[str, str, str, str]]] = {
    "nginx": (
        _NGINX_URI,
        "proxy_set_header X-Original-URI $request_uri",
        _NGINX_METHOD,
        "proxy_set_header X-Original-Method $request_method",
    ),
    "traefik": (
        _TRAEFIK_URI,
        "Traefik's forwardAuth sets it",
        _TRAEFIK_METHOD,
        "Traefik's forwardAuth sets it",
    ),
}


@dataclass(frozen=True, slots=True)
class ForwardedRequest:
    """The original request as the proxy described it.

    ``uri`` is origin-form (``path`` plus ``?query`` when there is one); ``path``
    is still %-encoded. ``authorization`` and ``territory`` are the raw header
    values (``None`` when absent); ``host`` and ``proto`` are informational.
    """

    convention: Convention
    method: str
    uri: str
    path: str
    query: str | None
    authorization: str | None
    territory: str | None
    host: str | None
    proto: str | None


@dataclass(frozen=True, slots=True)
class ForwardedRefusal:
    """Why no original request can be read; ``header`` names the one at fault, if one is."""

    message: str
    header: str | None = None


HeaderPairs = Iterable[tuple[bytes | str, bytes | str]]


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def read_forwarded(
    method: str,
    raw_path: str,
    query: str,
    headers: HeaderPairs,
    *,
    prefix: str = CHECK_PREFIX,
    conventions: Collection[Convention] = ALL_CONVENTIONS,
    territory_header: str | None = None,
) -> ForwardedRequest | ForwardedRefusal:
    """Read the original request from the one the proxy sent.

    ``method``, ``raw_path`` (the request target's path, still %-encoded: ASGI
    ``raw_path``) and ``query`` (ASGI ``query_string``, decoded as latin-1) are the
    check request's own; ``headers`` its header pairs (ASGI ``headers`` as they
    come, or ``(str, str)`` pairs; names in any case). ``prefix`` is the path the
    check is served at (include any ``root_path``).
    """
    territory_name = territory_header.lower() if territory_header else None
    seen: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = _text(raw_name).lower()
        if name not in _READ and name != territory_name:
            continue
        if name in seen:
            return ForwardedRefusal(
                f"the header {_shown(name, territory_header)} arrived more than once",
                _shown(name, territory_header),
            )
        value = _text(raw_value)
        if len(value) > MAX_HEADER_VALUE:
            return ForwardedRefusal(
                f"the header {_shown(name, territory_header)} is over {MAX_HEADER_VALUE} bytes",
                _shown(name, territory_header),
            )
        seen[name] = value

    below = raw_path.startswith(prefix + "/")
    if not below and raw_path != prefix:
        return ForwardedRefusal(f"the check is served at {prefix}; this request is elsewhere")
    markers: dict[Convention, bool] = {
        "envoy": below,
        "nginx": _NGINX_URI in seen or _NGINX_METHOD in seen,
        "traefik": _TRAEFIK_URI in seen or _TRAEFIK_METHOD in seen,
    }
    found = [c for c in _ORDER if c in conventions and markers[c]]
    if not found:
        return ForwardedRefusal(_nothing_forwarded(prefix, conventions))
    if len(found) > 1:
        return ForwardedRefusal(
            f"the request follows more than one proxy convention ({' and '.join(found)}):"
            " configure the gateway to accept only your proxy's"
        )
    convention = found[0]
    if convention == "envoy":
        original_method = _method(method, None)
        uri: str | ForwardedRefusal = raw_path[len(prefix) :] + (f"?{query}" if query else "")
        host = seen.get(_HOST)
    else:
        uri_name, uri_how, method_name, method_how = _SENT_BY[convention]
        original_method = _required(seen, method_name, method_how)
        if not isinstance(original_method, ForwardedRefusal):
            original_method = _method(original_method, _DISPLAY[method_name])
        uri = _required(seen, uri_name, uri_how)
        host = _last(seen.get(_FORWARDED_HOST))
    if isinstance(original_method, ForwardedRefusal):
        return original_method
    if isinstance(uri, ForwardedRefusal):
        return uri
    if len(uri) > MAX_URI_LENGTH:
        return ForwardedRefusal(f"the original URI is over {MAX_URI_LENGTH} characters")
    if not uri.startswith("/"):
        header = None if convention == "envoy" else _DISPLAY[_SENT_BY[convention][0]]
        return ForwardedRefusal(
            f"the original URI must be origin-form ('/path?query'), not {uri[:40]!r}", header
        )
    path, mark, rest = uri.partition("?")
    return ForwardedRequest(
        convention=convention,
        method=original_method,
        uri=uri,
        path=path,
        query=rest if mark else None,
        authorization=seen.get(_AUTHORIZATION),
        territory=seen.get(territory_name) if territory_name else None,
        host=host,
        proto=_last(seen.get(_FORWARDED_PROTO)),
    )


def _shown(name: str, territory_header: str | None) -> str:
    if territory_header and name == territory_header.lower():
        return territory_header
    return _DISPLAY.get(name, "-".join(part.capitalize() for part in name.split("-")))


def _nothing_forwarded(prefix: str, conventions: Collection[Convention]) -> str:
    ways = {
        "envoy": f"the original path below {prefix}/ (Envoy ext_authz path_prefix)",
        "nginx": "X-Original-URI and X-Original-Method (nginx auth_request)",
        "traefik": "X-Forwarded-Uri and X-Forwarded-Method (Traefik forwardAuth)",
    }
    accepted = "; or ".join(ways[c] for c in _ORDER if c in conventions)
    return f"no forwarded request: send {accepted}"


def _required(seen: dict[str, str], name: str, how: str) -> str | ForwardedRefusal:
    value = seen.get(name)
    if value is None or not value.strip():
        return ForwardedRefusal(f"{_DISPLAY[name]} is missing ({how})", _DISPLAY[name])
    return value.strip()


def _method(value: str, header: str | None) -> str | ForwardedRefusal:
    if not _METHOD_RE.fullmatch(value):
        where = f"{header} " if header else "the method "
        return ForwardedRefusal(f"{where}is not an HTTP method: {value[:40]!r}", header)
    return value


def _last(value: str | None) -> str | None:
    """The last entry of a comma-separated list (the nearest proxy's), or ``None``."""
    if value is None:
        return None
    last = value.rsplit(",", 1)[-1].strip()
    return last or None
