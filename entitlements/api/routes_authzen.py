"""The OpenID AuthZEN Authorization API 1.0: evaluation, evaluations, resource search, discovery.

An adapter with no rule of its own: each AuthZEN request becomes one or more
``Question``s for ``AccessService`` (the same rules and caches as ``/v1/check``
with ``subject``), and each ``Decision`` an AuthZEN decision.

Who may call: any valid access token (or exchanged token limited to its
resources) asks about its own subject; naming another subject, or any roles,
needs ``entitlements:check:any`` — exactly as ``/v1/check``. The discovery
document is public.

Mapping:

- ``subject`` ``{"type": "user", "id": <user id>, "properties": {"roles": [...]}}``
  (another ``type`` is refused with 400: only users hold rights here);
- ``resource`` ``{"type": "track", "id": "USRC1"}`` → ``track:USRC1``;
- ``action`` ``{"name": "stream"}``;
- ``context`` ``{"territory": "GB", "time": "2026-01-01T00:00:00Z",
  "min_revision": 12}``: ``territory`` required, the others optional;
- the answer ``{"decision": bool, "context": {"reason", "valid_until", "grant",
  "revision"}}``.

What the spec says MUST, done: a missing or invalid required attribute is 400
(a problem naming the field); ``X-Request-ID`` is echoed; unknown fields and
options are ignored; the discovery metadata omits what has no value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import Response

from entitlements.api.auth import checker
from entitlements.api.body import read_json
from entitlements.api.lean import LeanRoute
from entitlements.api.openapi import AUTH, STORE, answers, json_body, json_response
from entitlements.api.problems import error_response, problem
from entitlements.domain.decision import Decision
from entitlements.domain.grant import TERRITORY_CODES, TIME_SCHEMA
from entitlements.domain.parsers import (
    ACTION_PATTERN,
    MAX_ROLES,
    RESOURCE_PATTERN,
    ROLE_PATTERN,
    USER_PATTERN,
    anchored,
    format_time,
    parse_action,
    parse_resource,
    parse_revision,
    parse_role,
    parse_territory,
    parse_time,
    parse_user_id,
)
from entitlements.errors import (
    EntitlementsError,
    FieldError,
    InvalidInputError,
    PermissionDeniedError,
)
from entitlements.service.access import SCOPE_CHECK_ANY, Question
from entitlements.service.checks import MAX_BATCH, MAX_PAGE

__all__ = [
    "AUTHZEN_ROUTES",
    "SEMANTICS",
    "authzen_decision",
    "read_evaluation",
]

EVALUATION_PATH: Final = "/access/v1/evaluation"
EVALUATIONS_PATH: Final = "/access/v1/evaluations"
SEARCH_RESOURCE_PATH: Final = "/access/v1/search/resource"
DISCOVERY_PATH: Final = "/.well-known/authzen-configuration"
SEMANTICS: Final = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")
_PARTS: Final = ("subject", "resource", "action", "context")
_REQUEST_ID_RE: Final = re.compile(r"[\x21-\x7e]{1,200}")
_MAX_ROLES: Final = MAX_ROLES
RESOURCE_TYPE_PATTERN: Final = RESOURCE_PATTERN.split(":", 1)[0]
RESOURCE_ID_PATTERN: Final = RESOURCE_PATTERN.split(":", 1)[1]
_TYPE_RE: Final = re.compile(RESOURCE_TYPE_PATTERN)
_NO_SECONDS_RE: Final = re.compile(r"^(\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2})([Zz]|[+-]\d{2}:\d{2})$")


# --- reading -------------------------------------------------------------------------


def _object(value: object, where: str, errors: list[FieldError]) -> Mapping[str, Any] | None:
    if not isinstance(value, dict):
        errors.append(FieldError(where, "must be an object"))
        return None
    return value


def _string(obj: Mapping[str, Any], key: str, where: str, errors: list[FieldError]) -> str | None:
    value = obj.get(key)
    if value is None:
        errors.append(FieldError(f"{where}.{key}", "is required"))
        return None
    if not isinstance(value, str):
        errors.append(FieldError(f"{where}.{key}", "must be a string"))
        return None
    return value


def _parsed(parse: Any, value: object, where: str, errors: list[FieldError]) -> Any:
    try:
        return parse(value, where)
    except InvalidInputError as exc:
        errors.extend(exc.errors)
        return None


def read_evaluation(body: Mapping[str, Any], prefix: str = "") -> Question:
    """One AuthZEN evaluation (subject, resource, action, context) as a ``Question``;
    every problem reported at once, each named ``prefix + field`` (400)."""
    errors: list[FieldError] = []
    parts: dict[str, Mapping[str, Any] | None] = {}
    for part in ("subject", "resource", "action"):
        if body.get(part) is None:
            errors.append(FieldError(prefix + part, "is required"))
            parts[part] = None
        else:
            parts[part] = _object(body[part], prefix + part, errors)
    context: Mapping[str, Any] = {}
    if body.get("context") is not None:
        context = _object(body["context"], prefix + "context", errors) or {}

    user = roles = None
    subject = parts["subject"]
    if subject is not None:
        where = prefix + "subject"
        kind = _string(subject, "type", where, errors)
        if kind is not None and kind != "user":
            errors.append(
                FieldError(f"{where}.type", "must be 'user': only users hold rights here")
            )
        raw_id = _string(subject, "id", where, errors)
        if raw_id is not None:
            user = _parsed(parse_user_id, raw_id, f"{where}.id", errors)
        properties = subject.get("properties")
        if properties is not None and not isinstance(properties, dict):
            errors.append(FieldError(f"{where}.properties", "must be an object"))
        if isinstance(properties, dict) and properties.get("roles") is not None:
            raw_roles = properties["roles"]
            where_roles = f"{where}.properties.roles"
            if not isinstance(raw_roles, list) or len(raw_roles) > _MAX_ROLES:
                errors.append(FieldError(where_roles, f"must be a list of at most {_MAX_ROLES}"))
            else:
                roles = tuple(
                    _parsed(parse_role, r, f"{where_roles}.{i}", errors)
                    for i, r in enumerate(raw_roles)
                )
    resource = None
    if parts["resource"] is not None:
        where = prefix + "resource"
        kind = _string(parts["resource"], "type", where, errors)
        rid = _string(parts["resource"], "id", where, errors)
        if kind is not None and rid is not None:
            resource = _parsed(parse_resource, f"{kind}:{rid}", where, errors)
    action = None
    if parts["action"] is not None:
        name = _string(parts["action"], "name", prefix + "action", errors)
        if name is not None:
            action = _parsed(parse_action, name, prefix + "action.name", errors)
    territory = None
    if context.get("territory") is None:
        errors.append(FieldError(prefix + "context.territory", "is required"))
    else:
        territory = _parsed(
            parse_territory, context["territory"], prefix + "context.territory", errors
        )
    at = None
    if context.get("time") is not None:
        when = context["time"]
        if isinstance(when, str):
            # The spec's own example leaves out the seconds ("1985-10-26T01:22-07:00").
            when = _NO_SECONDS_RE.sub(r"\1:00\2", when)
        at = _parsed(parse_time, when, prefix + "context.time", errors)
    min_revision = None
    if context.get("min_revision") is not None:
        min_revision = _parsed(
            parse_revision, context["min_revision"], prefix + "context.min_revision", errors
        )
    if errors:
        raise InvalidInputError(errors)
    assert resource is not None and action is not None and territory is not None
    return Question(
        resource=resource,
        action=action,
        territory=territory,
        at=at,
        min_revision=min_revision,
        subject=user,
        roles=roles,
    )


def authzen_decision(decision: Decision) -> dict[str, Any]:
    """A ``Decision`` as AuthZEN answers it."""
    return {
        "decision": decision.allowed,
        "context": {
            "reason": decision.reason,
            "valid_until": format_time(decision.valid_until),
            "grant": decision.grant,
            "revision": decision.revision,
        },
    }


# --- answering -----------------------------------------------------------------------


def _request_id(request: Request) -> dict[str, str] | None:
    value = request.headers.get("x-request-id")
    if value is not None and _REQUEST_ID_RE.fullmatch(value):
        return {"X-Request-ID": value}
    return None


def _json(body: object, request: Request) -> Response:
    return Response(orjson.dumps(body), media_type="application/json", headers=_request_id(request))


def _failed(exc: Exception, request: Request) -> Response:
    """Our problem mapping, with the spec's 400 for a bad request (not 422)."""
    if isinstance(exc, InvalidInputError):
        response = problem(
            400,
            "invalid-request",
            "The request is not valid",
            str(exc),
            errors=[e.as_dict() for e in exc.errors],
        )
    else:
        response = error_response(exc)
    ids = _request_id(request)
    if ids:
        response.headers.update(ids)
    return response


def _body_object(body: object) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInputError(FieldError("", "the body must be a JSON object"))
    return body


async def evaluation(request: Request) -> Response:
    try:
        caller = await checker(request)
        ent = request.state.ent
        body = _body_object(await read_json(request, ent.settings.max_body_bytes))
        decision = await ent.access.check(caller, read_evaluation(body))
    except EntitlementsError as exc:
        return _failed(exc, request)
    return _json(authzen_decision(decision), request)


def _semantic(body: Mapping[str, Any]) -> str:
    options = body.get("options")
    if options is not None and not isinstance(options, dict):
        raise InvalidInputError(FieldError("options", "must be an object"))
    if isinstance(options, dict):
        value = options.get("evaluations_semantic")
        if value is not None and value not in SEMANTICS:
            raise InvalidInputError(
                FieldError("options.evaluations_semantic", f"must be one of {', '.join(SEMANTICS)}")
            )
        if value is not None:
            return str(value)
    return "execute_all"


async def evaluations(request: Request) -> Response:
    try:
        caller = await checker(request)
        ent = request.state.ent
        body = _body_object(await read_json(request, ent.settings.max_body_bytes))
        items = body.get("evaluations")
        if items is not None and not isinstance(items, list):
            raise InvalidInputError(FieldError("evaluations", "must be a list"))
        semantic = _semantic(body)
        if not items:
            # The spec: no (or an empty) evaluations array is a single evaluation.
            decision = await ent.access.check(caller, read_evaluation(body))
            return _json(authzen_decision(decision), request)
        if len(items) > MAX_BATCH:
            raise InvalidInputError(
                FieldError("evaluations", f"at most {MAX_BATCH} evaluations per request")
            )
        defaults = {part: body[part] for part in _PARTS if body.get(part) is not None}
        questions: list[Question] = []
        errors: list[FieldError] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                errors.append(FieldError(f"evaluations.{i}", "must be an object"))
                continue
            # An item's subject, resource, action or context replaces the default whole.
            merged = {**defaults, **{p: item[p] for p in _PARTS if item.get(p) is not None}}
            try:
                questions.append(read_evaluation(merged, f"evaluations.{i}."))
            except InvalidInputError as exc:
                errors.extend(exc.errors)
        if errors:
            raise InvalidInputError(errors)
        decisions = await _evaluate(ent.access, caller, questions, semantic)
    except EntitlementsError as exc:
        return _failed(exc, request)
    return _json({"evaluations": [authzen_decision(d) for d in decisions]}, request)


async def _evaluate(
    access: Any, caller: Any, questions: list[Question], semantic: str
) -> list[Decision]:
    """In order. ``execute_all``: every one, in one batch. The short-circuiting semantics
    stop at the first deny (permit), which is the last one answered; they ask in batches
    of 1, 2, 4, … so a stop early costs little and a long run few round trips."""
    if semantic == "execute_all":
        decisions: list[Decision] = await access.check_many(caller, questions)
        return decisions
    stop_on = semantic == "permit_on_first_permit"
    out: list[Decision] = []
    size = 1
    i = 0
    while i < len(questions):
        chunk = await access.check_many(caller, questions[i : i + size])
        for decision in chunk:
            out.append(decision)
            if decision.allowed is stop_on:
                return out
        i += size
        size = min(size * 2, 64)
    return out


async def search_resource(request: Request) -> Response:
    """AuthZEN resource search → the caller's own entitlements listing (``GET
    /v1/entitlements``): which resources of ``resource.type`` may ``subject`` do
    ``action`` on, in ``context.territory``. The listing answers for the caller's own
    subject only, so another ``subject.id`` is refused (403)."""
    try:
        caller = await checker(request)
        ent = request.state.ent
        body = _body_object(await read_json(request, ent.settings.max_body_bytes))
        errors: list[FieldError] = []
        subject = _object(body.get("subject"), "subject", errors) if "subject" in body else None
        if subject is None and not errors:
            errors.append(FieldError("subject", "is required"))
        action_obj = _object(body.get("action"), "action", errors) if "action" in body else None
        if action_obj is None and "action" not in body:
            errors.append(FieldError("action", "is required"))
        resource_obj = (
            _object(body.get("resource"), "resource", errors) if "resource" in body else None
        )
        if resource_obj is None and "resource" not in body:
            errors.append(FieldError("resource", "is required"))
        context = _object(body["context"], "context", errors) if "context" in body else {}
        page = _object(body["page"], "page", errors) if body.get("page") is not None else {}
        user = None
        if subject is not None:
            kind = _string(subject, "type", "subject", errors)
            if kind is not None and kind != "user":
                errors.append(FieldError("subject.type", "must be 'user'"))
            raw_id = _string(subject, "id", "subject", errors)
            if raw_id is not None:
                user = _parsed(parse_user_id, raw_id, "subject.id", errors)
        name = _string(action_obj, "name", "action", errors) if action_obj is not None else None
        kind = _string(resource_obj, "type", "resource", errors) if resource_obj else None
        if kind is not None and not _TYPE_RE.fullmatch(kind):
            errors.append(FieldError("resource.type", "is not a resource type"))
        territory = context.get("territory") if context else None
        if territory is None:
            errors.append(FieldError("context.territory", "is required"))
        cursor = page.get("token") if page else None
        if cursor is not None and (not isinstance(cursor, str) or len(cursor) > 400):
            errors.append(FieldError("page.token", "must be a token this service returned"))
            cursor = None
        limit = page.get("limit", 100) if page else 100
        if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
            errors.append(FieldError("page.limit", f"must be an integer from 1 to {MAX_PAGE}"))
            limit = 100
        if errors:
            raise InvalidInputError(errors)
        if user != caller.subject:
            return _failed(
                PermissionDeniedError(
                    "resource search answers for the caller's own subject only"
                    f" (even with {SCOPE_CHECK_ANY})"
                ),
                request,
            )
        listing = await ent.access.list_entitlements(
            caller,
            action=name or "",
            territory=territory if isinstance(territory, str) else "",
            type_=kind,
            cursor=cursor,
            limit=limit,
        )
    except EntitlementsError as exc:
        return _failed(exc, request)
    results = []
    for item in listing.items:
        rtype, _, rid = str(item["resource"]).partition(":")
        results.append({"type": rtype, "id": rid})
    out: dict[str, Any] = {"results": results, "page": {"count": len(results)}}
    if listing.next_cursor is not None:
        out["page"]["next_token"] = listing.next_cursor
    return _json(out, request)


async def discovery(request: Request) -> Response:
    """The PDP's metadata: its identifier and the endpoints it serves (nothing without
    a value is sent)."""
    configured = request.state.ent.settings.authzen_pdp
    base = (configured or str(request.base_url)).rstrip("/")
    return Response(
        orjson.dumps(
            {
                "policy_decision_point": base,
                "access_evaluation_endpoint": base + EVALUATION_PATH,
                "access_evaluations_endpoint": base + EVALUATIONS_PATH,
                "search_resource_endpoint": base + SEARCH_RESOURCE_PATH,
            }
        ),
        media_type="application/json",
    )


# --- documentation ---------------------------------------------------------------------

_TYPE: Final[dict[str, Any]] = {"type": "string", "pattern": anchored(RESOURCE_TYPE_PATTERN)}
_ENTITY: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["type", "id"],
    "properties": {
        "type": _TYPE,
        "id": {"type": "string", "pattern": anchored(RESOURCE_ID_PATTERN)},
    },
}
_SUBJECT: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["type", "id"],
    "properties": {
        "type": {"const": "user"},
        "id": {
            "type": "string",
            "pattern": anchored(USER_PATTERN),
            "description": "a user id as in a token's sub",
        },
        "properties": {
            "type": ["object", "null"],
            "properties": {
                "roles": {
                    "type": ["array", "null"],
                    "items": {"type": "string", "pattern": anchored(ROLE_PATTERN)},
                    "maxItems": _MAX_ROLES,
                    "description": f"needs the scope {SCOPE_CHECK_ANY}",
                }
            },
        },
    },
}
_ACTION: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": anchored(ACTION_PATTERN)}},
}
_CONTEXT: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["territory"],
    "properties": {
        "territory": {"enum": TERRITORY_CODES},
        "time": {"anyOf": [TIME_SCHEMA, {"type": "null"}], "description": "default: now"},
        "min_revision": {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                {"type": "null"},
            ]
        },
    },
}
_EVALUATION: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["subject", "resource", "action", "context"],
    "properties": {
        "subject": _SUBJECT,
        "resource": _ENTITY,
        "action": _ACTION,
        "context": _CONTEXT,
    },
}
_DECISION: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["decision", "context"],
    "properties": {
        "decision": {"type": "boolean"},
        "context": {
            "type": "object",
            "properties": {
                "reason": {"type": "string"},
                "valid_until": {"anyOf": [TIME_SCHEMA, {"type": "null"}]},
                "grant": {"type": ["string", "null"]},
                "revision": {"type": "integer"},
            },
        },
    },
}
_REFUSALS: Final = {
    400: "a required attribute is missing or not valid (the problem names it)",
    403: f"asking about another subject or roles needs the scope {SCOPE_CHECK_ANY}",
}


def _answers(ok: dict[int, Any]) -> dict[int | str, dict[str, Any]]:
    return answers(ok, AUTH, (400, 408, 413), STORE, described=_REFUSALS)


AUTHZEN_ROUTES: Final = [
    LeanRoute(
        EVALUATION_PATH,
        evaluation,
        methods=["POST"],
        operation={
            "tags": ["authzen"],
            "summary": "AuthZEN Access Evaluation: one decision",
            "description": "Any valid token asks about its own subject; another subject.id, or"
            f" subject.properties.roles, needs {SCOPE_CHECK_ANY} (the rules of /v1/check).",
            "operationId": "authzen_evaluation",
            **json_body(_EVALUATION),
            "responses": _answers({200: json_response(_DECISION, "the decision")}),
        },
    ),
    LeanRoute(
        EVALUATIONS_PATH,
        evaluations,
        methods=["POST"],
        operation={
            "tags": ["authzen"],
            "summary": f"AuthZEN Access Evaluations: up to {MAX_BATCH}, in order",
            "description": "Who may call: as /access/v1/evaluation, for every item. Top-level"
            " subject, resource, action and context are defaults; an"
            " item's own replaces the default. options.evaluations_semantic: execute_all"
            " (default), deny_on_first_deny, permit_on_first_permit (the answer ends at the"
            " first deny / permit).",
            "operationId": "authzen_evaluations",
            **json_body(
                {
                    "type": "object",
                    "properties": {
                        **_EVALUATION["properties"],
                        "evaluations": {
                            "type": ["array", "null"],
                            "maxItems": MAX_BATCH,
                            "items": {"type": "object"},
                        },
                        "options": {
                            "type": ["object", "null"],
                            "properties": {"evaluations_semantic": {"enum": [*SEMANTICS, None]}},
                        },
                    },
                }
            ),
            "responses": _answers(
                {
                    200: json_response(
                        {
                            "type": "object",
                            "properties": {
                                "evaluations": {"type": "array", "items": _DECISION},
                                **_DECISION["properties"],
                            },
                        },
                        "the decisions, in order",
                    )
                }
            ),
        },
    ),
    LeanRoute(
        SEARCH_RESOURCE_PATH,
        search_resource,
        methods=["POST"],
        operation={
            "tags": ["authzen"],
            "summary": "AuthZEN Resource Search: the caller's own entitlements of a type",
            "description": "Any valid token, about its own subject only (GET /v1/entitlements).",
            "operationId": "authzen_search_resource",
            **json_body(
                {
                    "type": "object",
                    "required": ["subject", "action", "resource", "context"],
                    "properties": {
                        "subject": _SUBJECT,
                        "action": _ACTION,
                        "resource": {
                            "type": "object",
                            "required": ["type"],
                            "properties": {"type": _TYPE},
                        },
                        "context": _CONTEXT,
                        "page": {
                            "type": ["object", "null"],
                            "properties": {
                                "token": {"type": "string"},
                                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                            },
                        },
                    },
                }
            ),
            "responses": _answers(
                {
                    200: json_response(
                        {
                            "type": "object",
                            "required": ["results", "page"],
                            "properties": {
                                "results": {"type": "array", "items": _ENTITY},
                                "page": {
                                    "type": "object",
                                    "properties": {
                                        "next_token": {"type": "string"},
                                        "count": {"type": "integer"},
                                    },
                                },
                            },
                        },
                        "a page of resources",
                    )
                }
            ),
        },
    ),
    LeanRoute(
        DISCOVERY_PATH,
        discovery,
        methods=["GET"],
        operation={
            "tags": ["authzen"],
            "summary": "AuthZEN PDP metadata (public)",
            "description": "Anyone may call it: the PDP's identifier and endpoints, nothing"
            " without a value.",
            "operationId": "authzen_configuration",
            "responses": {
                "200": json_response(
                    {
                        "type": "object",
                        "required": ["policy_decision_point", "access_evaluation_endpoint"],
                        "properties": {
                            "policy_decision_point": {"type": "string"},
                            "access_evaluation_endpoint": {"type": "string"},
                            "access_evaluations_endpoint": {"type": "string"},
                            "search_resource_endpoint": {"type": "string"},
                        },
                    },
                    "the metadata",
                )
            },
        },
    ),
]
"""The AuthZEN routes, as the app mounts them."""
