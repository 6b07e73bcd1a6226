"""Who may ask what: every authorization rule of the service, in one place.

An adapter (the REST API today; the AuthZEN and gateway endpoints next) verifies
the caller's token and hands the ``VerifiedToken`` here with the question. The
rules are:

- **Scopes.** Each use case names the scope it needs (``SCOPE_*``); a caller
  without it is refused (``require_scope``).
- **Who may ask about whom.** Any valid token may ask about its own subject, with
  its own roles. Naming another subject, or any roles, needs ``SCOPE_CHECK_ANY``
  (a trusted service asking for a user whose token it already verified).
- **Exchanged tokens** (RFC 8693, ``typ: exchange+jwt``) that list ``resources``
  may ask only about those, and may not list entitlements.

``AccessService.check(caller, question)`` is the one method an adapter calls for
a decision: it applies the rules above and answers as ``/v1/check`` does.
``check_json`` reads the REST API's JSON form of a question (the rules applied
while reading, in the order the API has always applied them).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from entitlements.domain.decision import Decision
from entitlements.domain.grant import TERRITORY_CODES, TIME_SCHEMA
from entitlements.domain.parsers import (
    ACTION_PATTERN,
    MAX_ROLES,
    ROLE_PATTERN,
    USER_PATTERN,
    anchored,
    parse_action,
    parse_object,
    parse_resource,
    parse_revision,
    parse_role,
    parse_territory,
    parse_time,
    parse_user_id,
)
from entitlements.domain.resource import RESOURCE_ID_SCHEMA
from entitlements.errors import FieldError, InvalidInputError, PermissionDeniedError
from entitlements.service.checks import MAX_BATCH, CheckRequest, CheckService, Page
from entitlements.service.decisions import STORE_READ, DecisionRecord
from entitlements.service.ports import DecisionLog
from entitlements.service.tokens import EXCHANGE_TYP
from entitlements_client import VerifiedToken

SCOPE_CHECK_ANY: Final = "entitlements:check:any"
"""Ask about any subject with any roles; read the change feed (it names users)."""
SCOPE_ADMIN: Final = "entitlements:admin"
"""Write and read grants and resources."""
SCOPE_IMPORT: Final = "entitlements:import"
"""Bulk-import grants and resources, and read import reports."""
SCOPE_EXCHANGE: Final = "entitlements:exchange"
"""Trade a user's token for a narrow, long-lived one (RFC 8693)."""

CHECK_FIELDS: Final = frozenset(
    {"resource", "action", "territory", "at", "min_revision", "subject", "roles"}
)
"""The keys of a question in its JSON form."""


def require_scope(caller: VerifiedToken, scope: str) -> None:
    """Refuse a caller whose token does not carry ``scope``."""
    if not caller.has_scope(scope):
        raise PermissionDeniedError(f"this call needs the scope {scope!r}")


def is_exchanged(caller: VerifiedToken) -> bool:
    """Whether the token came from token exchange (narrow, long-lived, revocable)."""
    return caller.typ.lower().removeprefix("application/") == EXCHANGE_TYP


def require_listed(caller: VerifiedToken, resource: str) -> None:
    """An exchanged token may only ask about the resources it lists (if it lists any)."""
    if not is_exchanged(caller):
        return
    listed = caller.claims.get("resources")
    if listed is not None and (isinstance(listed, str) or resource not in listed):
        raise PermissionDeniedError("this token is limited to other resources")


def _may_ask_about_others(caller: VerifiedToken) -> None:
    if not caller.has_scope(SCOPE_CHECK_ANY):
        raise PermissionDeniedError(
            f"asking about another subject or roles needs the scope {SCOPE_CHECK_ANY!r}"
        )


@dataclass(frozen=True, slots=True)
class Question:
    """What a caller asks: may ``subject`` (with ``roles``) do ``action`` on ``resource``
    in ``territory`` at ``at``? ``subject``/``roles`` None: the caller's own; ``at`` None:
    now; ``min_revision``: answer from data at least that fresh."""

    resource: str
    action: str
    territory: str
    at: datetime | None = None
    min_revision: int | None = None
    subject: str | None = None
    roles: tuple[str, ...] | None = None


class AccessService:
    """Decisions for a caller, under every rule of the module docstring.

    ``decisions``: the decision log (issue 15), or None (off: the checks pay nothing
    for it, not even building a record). Every decision method takes the caller's
    ``request_id`` for the log; adapters pass what the client sent, if anything.
    """

    def __init__(self, checks: CheckService, decisions: DecisionLog | None = None) -> None:
        self.checks = checks
        self.decisions = decisions

    @property
    def logging(self) -> bool:
        """Whether decisions are logged (an adapter reads its request id only then)."""
        return self.decisions is not None

    def admit(self, caller: VerifiedToken, question: Question) -> CheckRequest:
        """The question as the service answers it, once the caller may ask it."""
        user = caller.subject if question.subject is None else question.subject
        roles = tuple(caller.roles) if question.roles is None else question.roles
        if question.roles is not None or user != caller.subject:
            _may_ask_about_others(caller)
        require_listed(caller, question.resource)
        return CheckRequest(
            user,
            roles,
            question.resource,
            question.action,
            question.territory,
            question.at,
            question.min_revision,
        )

    async def check(
        self, caller: VerifiedToken, question: Question, *, request_id: str | None = None
    ) -> Decision:
        """The one entry point for a decision: the rules, then the answer."""
        req = self.admit(caller, question)
        if self.decisions is None:
            return await self.checks.check(req)
        return await self._logged(caller, req, request_id)

    async def check_many(
        self,
        caller: VerifiedToken,
        questions: Sequence[Question],
        *,
        request_id: str | None = None,
    ) -> list[Decision]:
        """Decisions in the order asked (each question under the same rules as ``check``)."""
        if len(questions) > MAX_BATCH:
            raise InvalidInputError(FieldError("checks", f"at most {MAX_BATCH} checks per batch"))
        reqs = [self.admit(caller, q) for q in questions]
        if self.decisions is None:
            return await self.checks.check_many(reqs)
        return await self._logged_many(caller, reqs, request_id)

    # --- the REST API's JSON form ------------------------------------------------

    def check_json(
        self, caller: VerifiedToken, body: object, request_id: str | None = None
    ) -> Awaitable[Decision]:
        """``check`` for a question in its JSON form (``POST /v1/check``). (Not a coroutine
        itself: the hottest route awaits the check's own, one frame fewer.)"""
        req = read_question(caller, body)
        if self.decisions is None:
            return self.checks.check(req)
        return self._logged(caller, req, request_id)

    async def check_batch_json(
        self, caller: VerifiedToken, body: object, request_id: str | None = None
    ) -> list[Decision]:
        """``check_many`` for ``{"checks": [...]}`` (``POST /v1/check/batch``); a bad
        question is reported under ``checks.<i>``."""
        checks = parse_object(body, frozenset({"checks"})).get("checks")
        if not isinstance(checks, list):
            raise InvalidInputError(FieldError("checks", "must be a list of checks"))
        if len(checks) > MAX_BATCH:
            raise InvalidInputError(FieldError("checks", f"at most {MAX_BATCH} checks per batch"))
        errors: list[FieldError] = []
        reqs: list[CheckRequest] = []
        for i, item in enumerate(checks):
            try:
                reqs.append(read_question(caller, item, f"checks.{i}."))
            except InvalidInputError as exc:
                errors.extend(
                    FieldError(e.field if e.field else f"checks.{i}", e.message) for e in exc.errors
                )
        if errors:
            raise InvalidInputError(errors)
        if self.decisions is None:
            return await self.checks.check_many(reqs)
        return await self._logged_many(caller, reqs, request_id)

    # --- the decision log ------------------------------------------------------------

    async def _logged(
        self, caller: VerifiedToken, req: CheckRequest, request_id: str | None
    ) -> Decision:
        start = time.perf_counter_ns()
        reset = STORE_READ.set(False)
        try:
            decision = await self.checks.check(req)
            cached = not STORE_READ.get()
        finally:
            STORE_READ.reset(reset)
        self._record(caller, req, decision, cached, start, request_id)
        return decision

    async def _logged_many(
        self, caller: VerifiedToken, reqs: Sequence[CheckRequest], request_id: str | None
    ) -> list[Decision]:
        start = time.perf_counter_ns()
        reset = STORE_READ.set(False)
        try:
            decisions = await self.checks.check_many(reqs)
            cached = not STORE_READ.get()
        finally:
            STORE_READ.reset(reset)
        for req, decision in zip(reqs, decisions, strict=True):
            self._record(caller, req, decision, cached, start, request_id)
        return decisions

    def _record(
        self,
        caller: VerifiedToken,
        req: CheckRequest,
        decision: Decision,
        cached: bool,
        start: int,
        request_id: str | None,
    ) -> None:
        log = self.decisions
        if log is None or not log.keep(decision.allowed):
            return
        log.offer(
            DecisionRecord(
                time.time(),
                request_id,
                caller.issuer,
                req.user,
                req.roles,
                req.resource,
                req.action,
                req.territory,
                req.at,
                decision,
                cached,
                (time.perf_counter_ns() - start) // 1000,
            )
        )

    # --- listing ---------------------------------------------------------------------

    async def list_entitlements(
        self,
        caller: VerifiedToken,
        *,
        action: str,
        territory: str,
        type_: str | None,
        cursor: str | None,
        limit: int,
        at: datetime | None = None,
    ) -> Page:
        """What the caller may use for ``action`` in ``territory``, a page at a time. An
        exchanged token limited to some resources may not list (the list would reach
        beyond them)."""
        if is_exchanged(caller) and caller.claims.get("resources") is not None:
            raise PermissionDeniedError("an exchanged token cannot list entitlements")
        return await self.checks.list_entitlements(
            user=caller.subject,
            roles=tuple(caller.roles),
            action=parse_action(action),
            territory=parse_territory(territory),
            type_=type_,
            cursor=cursor,
            limit=limit,
            at=at,
        )


def read_question(caller: VerifiedToken, body: object, prefix: str = "") -> CheckRequest:
    """A question in its JSON form, validated and admitted for ``caller``.

    Every field's problem is reported at once (each named ``prefix + field``), except
    that a caller who may not ask about others is told so first, whatever else is wrong.
    """
    obj = parse_object(body, CHECK_FIELDS)
    errors: list[FieldError] = []

    def field(name: str, parse: Any, *args: Any) -> Any:
        if name not in obj:
            errors.append(FieldError(prefix + name, "is required"))
            return None
        try:
            return parse(obj[name], prefix + name, *args)
        except InvalidInputError as exc:
            errors.extend(exc.errors)
            return None

    resource = field("resource", parse_resource)
    action = field("action", parse_action)
    territory = field("territory", parse_territory)
    at = field("at", parse_time) if obj.get("at") is not None else None
    min_rev = field("min_revision", parse_revision) if obj.get("min_revision") is not None else None
    user, roles = caller.subject, tuple(caller.roles)
    if "subject" in obj or "roles" in obj:
        if obj.get("subject", caller.subject) != caller.subject or "roles" in obj:
            _may_ask_about_others(caller)
        if "subject" in obj:
            user = field("subject", parse_user_id)
        if "roles" in obj:
            roles = _roles(obj["roles"], prefix, errors)
    if errors:
        raise InvalidInputError(errors)
    require_listed(caller, resource)
    return CheckRequest(user, roles, resource, action, territory, at, min_rev)


def _roles(raw: object, prefix: str, errors: list[FieldError]) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_ROLES:
        errors.append(FieldError(prefix + "roles", f"must be a list of at most {MAX_ROLES} roles"))
        return ()
    parsed = []
    for i, r in enumerate(raw):
        try:
            parsed.append(parse_role(r, f"{prefix}roles.{i}"))
        except InvalidInputError as exc:
            errors.extend(exc.errors)
    return tuple(parsed)


def _nullable(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"anyOf": [dict(schema), {"type": "null"}]}


QUESTION_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["resource", "action", "territory"],
    "properties": {
        "resource": {**RESOURCE_ID_SCHEMA, "examples": ["track:USRC17607839"]},
        "action": {"type": "string", "pattern": anchored(ACTION_PATTERN), "examples": ["stream"]},
        "territory": {"enum": TERRITORY_CODES, "description": "ISO 3166-1 alpha-2"},
        "at": _nullable({**TIME_SCHEMA, "description": "default: now"}),
        "min_revision": _nullable(
            {
                "type": "integer",
                "minimum": 0,
                "maximum": 2**63 - 1,
                "description": "answer from data at least this fresh (a revision a write"
                " returned; no later than the newest)",
            }
        ),
        "subject": {
            "type": "string",
            "pattern": anchored(USER_PATTERN),
            "description": f"a user id as in a token's sub; another than the caller's needs"
            f" the scope {SCOPE_CHECK_ANY}",
        },
        "roles": {
            "type": "array",
            "items": {"type": "string", "pattern": anchored(ROLE_PATTERN)},
            "maxItems": MAX_ROLES,
            "description": f"the subject's roles; needs the scope {SCOPE_CHECK_ANY}",
        },
    },
}
"""The JSON Schema of a question in its JSON form (what ``read_question`` reads)."""


__all__ = [
    "CHECK_FIELDS",
    "EXCHANGE_TYP",
    "QUESTION_SCHEMA",
    "SCOPE_ADMIN",
    "SCOPE_CHECK_ANY",
    "SCOPE_EXCHANGE",
    "SCOPE_IMPORT",
    "AccessService",
    "Question",
    "is_exchanged",
    "read_question",
    "require_listed",
    "require_scope",
]
