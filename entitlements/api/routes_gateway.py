"""``/v1/gateway/check``: the decision for a request a proxy is about to forward.

Who may call it: only a trusted proxy (``ENTITLEMENTS_GATEWAY_TRUSTED_PROXIES``,
matched against the TCP peer); anyone else is answered 403, so a client can never
choose the path or territory that is checked. The *client's* token travels in the
forwarded ``Authorization`` header and is verified with the one verifier (an
access token, or an exchanged token limited to its resources, as ``/v1/check``).

It answers only 200, 401 or 403 — nginx ``auth_request`` turns any other status
into a 500 — each refusal with a problem body saying why (``type``
``urn:entitlements:problem:gateway-*``, ``not-allowed``, ``invalid-token``,
``forbidden``, ``unavailable``). An adapter with no rule of its own: the path is
matched by the route table (``entitlements.gateway``) and the question goes to
``AccessService.check``, the same call (and the same caches) as ``/v1/check``.

A lean route (``api.lean``): the handler reads the ASGI scope itself (``raw_path``,
so ``%2F`` and ``/`` stay different) and answers with headers only.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

from entitlements.api.lean import LeanRoute
from entitlements.api.openapi import PROBLEM
from entitlements.api.problems import problem, unauthenticated
from entitlements.domain.parsers import format_time, parse_territory
from entitlements.errors import (
    InvalidInputError,
    PermissionDeniedError,
    StoreUnavailableError,
    UnauthenticatedError,
)
from entitlements.gateway.config import GatewayConfig
from entitlements.gateway.forwarded import CHECK_PREFIX, ForwardedRefusal, read_forwarded
from entitlements.gateway.routes import Matched, Public
from entitlements.service.access import Question
from entitlements_client.bearer import bearer_token

__all__ = ["DECISION_HEADERS", "GATEWAY_ROUTES", "GatewayRoute", "gateway_check"]

SUBJECT_HEADER: Final = "X-Entitlements-Subject"
GRANT_HEADER: Final = "X-Entitlements-Grant"
VALID_UNTIL_HEADER: Final = "X-Entitlements-Valid-Until"
TOKEN_HEADER: Final = "X-Entitlements-Token"  # noqa: S105 (a header name)
DECISION_HEADERS: Final = (SUBJECT_HEADER, GRANT_HEADER, VALID_UNTIL_HEADER, TOKEN_HEADER)

_EMPTY: Final = b""


def _refused(code: str, title: str, detail: str, **extra: Any) -> Response:
    return problem(403, code, title, detail, **extra)


async def gateway_check(request: Request) -> Response:
    """Trusted proxy → forwarded request → route → token → territory → the check service."""
    scope = request.scope
    ent = request.state.ent
    gateway: GatewayConfig = ent.gateway
    client = scope.get("client")
    if not gateway.proxies.trusts(client[0] if client else None):
        return _refused(
            "gateway-untrusted-proxy",
            "Not a trusted proxy",
            "only a proxy listed in ENTITLEMENTS_GATEWAY_TRUSTED_PROXIES may call the gateway"
            " check",
        )
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    raw_path = raw.decode("latin-1").split("?", 1)[0]
    root: str = scope.get("root_path", "")
    forwarded = read_forwarded(
        scope["method"],
        raw_path,
        scope.get("query_string", _EMPTY).decode("latin-1"),
        scope["headers"],
        prefix=root + CHECK_PREFIX if raw_path.startswith(root + CHECK_PREFIX) else CHECK_PREFIX,
        conventions=gateway.conventions,
        territory_header=gateway.territory_header,
    )
    if isinstance(forwarded, ForwardedRefusal):
        extra = {"header": forwarded.header} if forwarded.header else {}
        return _refused(
            "gateway-bad-request",
            "The forwarded request cannot be read",
            forwarded.message,
            **extra,
        )
    matched = gateway.routes.match(forwarded.method, forwarded.uri)
    if isinstance(matched, Public):
        return Response(status_code=200)
    if not isinstance(matched, Matched):
        titles = {
            "bad_path": "The path is refused",
            "no_route": "No route for this request",
            "bad_resource": "The path names no valid resource",
        }
        return _refused(
            "gateway-" + matched.kind.replace("_", "-"), titles[matched.kind], matched.message
        )

    token = bearer_token(forwarded.authorization)
    if token is None:
        missing = forwarded.authorization is None
        return unauthenticated(
            "an Authorization: Bearer token is required"
            if missing
            else "the Authorization header must be 'Bearer <token>'",
            "missing",
        )
    try:
        caller = await ent.auth.verify_token(token, allow_exchanged=True)
    except UnauthenticatedError as exc:
        return unauthenticated(str(exc), exc.code)

    territory = forwarded.territory.strip() if forwarded.territory else None
    if not territory:
        header = gateway.territory_header
        return _refused(
            "gateway-no-territory",
            "No territory",
            f"the territory header {header} is missing"
            if header
            else "no territory header is configured (ENTITLEMENTS_GATEWAY_TERRITORY_HEADER)",
        )
    try:
        decision = await ent.access.check(
            caller,
            Question(
                matched.resource,
                matched.action,
                parse_territory(territory, gateway.territory_header or "territory"),
            ),
        )
    except InvalidInputError as exc:
        return _refused(
            "gateway-bad-request",
            "The request cannot be checked",
            str(exc),
            errors=[e.as_dict() for e in exc.errors],
        )
    except PermissionDeniedError as exc:
        return _refused("forbidden", "Forbidden", str(exc))
    except StoreUnavailableError as exc:
        # 403, not 503: nginx turns anything but 2xx/401/403 into a 500. Fail closed.
        return problem(
            403,
            "unavailable",
            "The rights store is unavailable",
            "try again shortly",
            headers={"Retry-After": str(exc.retry_after)},
        )
    subject = "user:" + caller.subject
    if not decision.allowed:
        return _refused(
            "not-allowed",
            "Not allowed",
            f"not allowed: {decision.reason}",
            reason=decision.reason,
            subject=subject,
            resource=matched.resource,
            action=matched.action,
            revision=decision.revision,
        )
    headers = {SUBJECT_HEADER: subject}
    if decision.grant is not None:
        headers[GRANT_HEADER] = decision.grant
    valid_until = format_time(decision.valid_until)
    if valid_until is not None:
        headers[VALID_UNTIL_HEADER] = valid_until
    policy = matched.token
    if policy is not None:
        minted = ent.tokens.mint_for_request(
            caller,
            audience=policy.audience,
            lifetime=policy.lifetime,
            method=forwarded.method,
            path=forwarded.path,
        )
        headers[TOKEN_HEADER] = minted
        headers["Authorization"] = "Bearer " + minted
    return Response(status_code=200, headers=headers)


class GatewayRoute(LeanRoute):
    """``/v1/gateway/check`` and every path below it, any method (Envoy's ``ext_authz``
    appends the original path and keeps the original method)."""

    def __init__(self) -> None:
        # Documented as GET (what nginx and Traefik send); served for any method.
        super().__init__(CHECK_PREFIX, gateway_check, methods=["GET"], operation=_OPERATION)
        self.methods = None  # any method: the proxy's, whatever it is

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if path == CHECK_PREFIX or path.startswith(CHECK_PREFIX + "/"):
            return Match.FULL, {"endpoint": self.endpoint, "path_params": {}, "route": self}
        return Match.NONE, {}


_HEADER_DOCS: Final = {
    SUBJECT_HEADER: "the namespaced subject (user:<id>)",
    GRANT_HEADER: "the grant that allowed the request",
    VALID_UNTIL_HEADER: "RFC 3339: the answer may change by time alone from then on; absent"
    " when no such change lies ahead",
    TOKEN_HEADER: "a per-request token for the upstream (JWT, at most 60 s, bound to the"
    " method and path), when the route mints one",
    "Authorization": "Bearer + the same per-request token, when one is minted",
}
_PROBLEM_BODY: Final = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
_OPERATION: Final = {
    "tags": ["gateway"],
    "operationId": "gateway_check",
    "summary": "The decision for a request a trusted proxy is about to forward (nginx"
    " auth_request, Envoy ext_authz, Traefik forwardAuth)",
    "description": "Any method; every path below /v1/gateway/check too (Envoy appends the"
    " original path). Only trusted proxies (ENTITLEMENTS_GATEWAY_TRUSTED_PROXIES) may call it;"
    " the client's token is the forwarded Authorization header. Answers only 200, 401 or 403.",
    "responses": {
        "200": {
            "description": "allowed (or a public route): the decision in headers",
            "headers": {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in _HEADER_DOCS.items()
            },
        },
        "401": {
            "description": "no client token, or one that does not verify",
            "headers": {
                "WWW-Authenticate": {
                    "description": 'Bearer error="invalid_token"',
                    "required": True,
                    "schema": {"type": "string"},
                }
            },
            "content": _PROBLEM_BODY,
        },
        "403": {
            "description": "not allowed; or the caller is not a trusted proxy, the forwarded"
            " request cannot be read, no route matches, the territory is missing, or the"
            " rights store is unavailable (the problem's type says which)",
            "content": _PROBLEM_BODY,
        },
    },
}

GATEWAY_ROUTES: Final = [GatewayRoute()]
"""The gateway route, as the app mounts it."""
