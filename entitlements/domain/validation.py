"""The full validator: a grant from its JSON form, every problem reported at once.

Every way a grant enters the service (the REST API, bulk import, the CLI) goes
through ``grant_from_mapping`` (or ``grant_row_from_mapping`` for import rows), so
the rules are written once. The common valid grant takes the fast path
(``entitlements.domain.fastpath``); anything else is read here, where each refusal
names its field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from entitlements.domain.fastpath import _fast_grant, _fast_row, attributes_problem
from entitlements.domain.grant import (
    GRANT_FIELDS,
    MAX_TERRITORIES,
    Effect,
    Grant,
    GrantRow,
    grant_row,
)
from entitlements.domain.parsers import (
    MAX_ACTIONS,
    MAX_ATTRIBUTES_BYTES,
    parse_action,
    parse_grant_id,
    parse_resource,
    parse_source,
    parse_subject,
    parse_territory,
    parse_time,
    string_list,
)
from entitlements.domain.territories import WORLDWIDE
from entitlements.domain.values import shown
from entitlements.errors import FieldError, InvalidInputError


def grant_row_from_mapping(data: object) -> GrantRow:
    """``grant_row(grant_from_mapping(data))``: the same rules, the same errors, no Grant built
    for the common valid row (bulk import)."""
    row = _fast_row(data, None)
    return row if row is not None else grant_row(_grant_from_mapping(data))


def grant_from_mapping(data: object, *, grant_id: str | None = None) -> Grant:
    """Validate one grant from its JSON form; every problem is reported at once.

    ``grant_id`` (the id from the URL) wins over, and must agree with, an ``id``
    in the body.
    """
    fast = _fast_grant(data, grant_id)
    if fast is not None:
        return fast
    return _grant_from_mapping(data, grant_id=grant_id)


def _grant_from_mapping(data: object, *, grant_id: str | None = None) -> Grant:
    """The full validator: collects every problem, names each field."""
    if not isinstance(data, Mapping):
        raise InvalidInputError(FieldError("", "a grant must be a JSON object"))
    errors: list[FieldError] = []
    unknown = sorted(str(k) for k in data if k not in GRANT_FIELDS)
    errors.extend(FieldError(shown(name), "unknown field") for name in unknown)

    def take(name: str, parse: Any, *args: Any, required: bool = True) -> Any:
        if name not in data or (data[name] is None and not required):
            if required:
                errors.append(FieldError(name, "is required"))
            return None
        try:
            return parse(data[name], *args)
        except InvalidInputError as exc:
            errors.extend(exc.errors)
            return None

    body_id = data.get("id")
    if grant_id is not None and body_id is not None and body_id != grant_id:
        errors.append(FieldError("id", "does not match the id in the URL"))
    gid = take("id", parse_grant_id, "id") if grant_id is None else grant_id
    subject = take("subject", parse_subject, "subject")
    resource = take("resource", parse_resource, "resource")
    actions = take("actions", _parse_actions)
    territories = take("territories", _parse_territories)
    excludes = take("exclude_territories", _parse_excludes, required=False) or frozenset()
    valid_from = take("valid_from", parse_time, "valid_from", required=False)
    valid_until = take("valid_until", parse_time, "valid_until", required=False)
    effect: Effect = take("effect", _parse_effect, required=False) or "allow"
    attributes = take("attributes", _parse_attributes, required=False)
    source = take("source", _parse_source, required=False)
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        errors.append(
            FieldError("valid_until", "must be later than valid_from (the window is empty)")
        )
    if errors:
        raise InvalidInputError(errors)
    return Grant(
        id=gid,
        subject=subject,
        resource=resource,
        actions=actions,
        territories=territories,
        exclude_territories=excludes,
        valid_from=valid_from,
        valid_until=valid_until,
        effect=effect,
        attributes=attributes,
        source=source,
    )


def _territory_set(value: object, field_name: str, *, allow_worldwide: bool) -> frozenset[str]:
    items = string_list(value, field_name, MAX_TERRITORIES)
    if allow_worldwide and items == [WORLDWIDE]:
        return frozenset((WORLDWIDE,))
    errors = []
    codes = set()
    for i, item in enumerate(items):
        if item == WORLDWIDE:
            errors.append(FieldError(f"{field_name}.{i}", "'*' (worldwide) must stand alone"))
            continue
        try:
            codes.add(parse_territory(item, f"{field_name}.{i}"))
        except InvalidInputError as exc:
            errors.extend(exc.errors)
    if errors:
        raise InvalidInputError(errors)
    return frozenset(codes)


def _parse_actions(value: object) -> frozenset[str]:
    items = string_list(value, "actions", MAX_ACTIONS)
    if not items:
        raise InvalidInputError(FieldError("actions", "must list at least one action"))
    errors: list[FieldError] = []
    out = set()
    for i, item in enumerate(items):
        try:
            out.add(parse_action(item, f"actions.{i}"))
        except InvalidInputError as exc:
            errors.extend(exc.errors)
    if errors:
        raise InvalidInputError(errors)
    return frozenset(out)


def _parse_territories(value: object) -> frozenset[str]:
    codes = _territory_set(value, "territories", allow_worldwide=True)
    if not codes:
        raise InvalidInputError(FieldError("territories", "must list codes or be ['*']"))
    return codes


def _parse_excludes(value: object) -> frozenset[str]:
    return _territory_set(value, "exclude_territories", allow_worldwide=False)


def _parse_effect(value: object) -> Effect:
    if value == "allow":
        return "allow"
    if value == "deny":
        return "deny"
    raise InvalidInputError(FieldError("effect", "must be 'allow' or 'deny'"))


def _parse_attributes(value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInputError(FieldError("attributes", "must be a JSON object"))
    # The walk first: it explains what orjson would only refuse (a lone surrogate,
    # nesting beyond its own limit), and it never recurses.
    problem = attributes_problem(value)
    if problem is not None:
        raise InvalidInputError(problem)
    try:
        size = len(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError):
        raise InvalidInputError(FieldError("attributes", "must be plain JSON")) from None
    if size > MAX_ATTRIBUTES_BYTES:
        raise InvalidInputError(
            FieldError("attributes", f"must be at most {MAX_ATTRIBUTES_BYTES} bytes of JSON")
        )
    return value


def _parse_source(value: object) -> str:
    return parse_source(value, "source")
