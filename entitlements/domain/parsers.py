"""Identifiers and small values: their patterns, their limits, and one parser each.

Every way data enters the service (the REST API, bulk import, the CLI, the DDEX
reader) reads ids, subjects, actions, territories and times through the parsers
here, so each rule is written once. Each parser returns the value or raises
``InvalidInputError`` naming the field.

The patterns are also published as text (``*_PATTERN``): the OpenAPI document
states them (anchored), and the SDK's copies are held equal to them by a test
(the SDK cannot import the service).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Final

from entitlements.domain.territories import ISO_3166_ALPHA2
from entitlements.domain.values import brief, shown
from entitlements.errors import FieldError, InvalidInputError

MAX_ID_LENGTH: Final = 200
MAX_RESOURCE_LENGTH: Final = 240
MAX_SUBJECT_LENGTH: Final = 260
MAX_ACTIONS: Final = 32
MAX_PARENTS: Final = 64
MAX_DEPTH: Final = 16
"""The most levels a path through the resource graph may have. A resource without
parents is on level 1, its children on level 2, and so on: a resource has at most
``MAX_DEPTH - 1`` levels of ancestors above it and, as a parent, at most
``MAX_DEPTH - 1`` levels below it. A write that would make any path longer is
refused; where the graph is deeper anyway (written before writes counted the levels
below a resource, or directly with SQL), checks fail closed (``CheckData.too_deep``)."""
MAX_ATTRIBUTES_BYTES: Final = 4096
MAX_SOURCE_LENGTH: Final = 100
MAX_ROLES: Final = 64
"""The most roles a check may name for its subject."""

RESOURCE_PATTERN: Final = r"[a-z][a-z0-9_-]{0,31}:[A-Za-z0-9][A-Za-z0-9._~@+/:=-]{0,199}"
GRANT_ID_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9._~@+/:=-]{0,199}"
ACTION_PATTERN: Final = r"[a-z][a-z0-9_.-]{0,62}"
USER_PATTERN: Final = r"[A-Za-z0-9._~@+/:=|-]{1,255}"
ROLE_PATTERN: Final = r"[A-Za-z0-9._~@+/:=|-]{1,128}"
SOURCE_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9._~@+/:=-]{0,99}"
SUBJECT_PATTERN: Final = rf"\*|user:{USER_PATTERN}|role:{ROLE_PATTERN}"
RESOURCE_TYPE_PATTERN: Final = r"[a-z][a-z0-9_-]{0,31}"
RFC3339_PATTERN: Final = (
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)
"""RFC 3339 date-time: a full date, a time, and an explicit offset."""

_RESOURCE_RE: Final = re.compile(RESOURCE_PATTERN)
_GRANT_ID_RE: Final = re.compile(GRANT_ID_PATTERN)
_ACTION_RE: Final = re.compile(ACTION_PATTERN)
_USER_RE: Final = re.compile(USER_PATTERN)
_ROLE_RE: Final = re.compile(ROLE_PATTERN)
_SOURCE_RE: Final = re.compile(SOURCE_PATTERN)
_SUBJECT_RE: Final = re.compile(SUBJECT_PATTERN)
_RFC3339_RE: Final = re.compile(RFC3339_PATTERN)


def anchored(pattern: str) -> str:
    """``pattern`` as a JSON Schema ``pattern`` (ECMA-262, unanchored search) that
    matches what ``re.fullmatch(pattern)`` matches."""
    return f"^(?:{pattern})$"


def format_time(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z`` suffix, or ``None``."""
    if value is None:
        return None
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def resource_type(resource: str) -> str:
    return resource.split(":", 1)[0]


def _matching(value: object, pattern: re.Pattern[str], field_name: str, message: str) -> str:
    """``value`` if it is a string matching ``pattern`` whole, else a field error."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidInputError(FieldError(field_name, message))
    return value


def parse_resource(value: object, field_name: str = "resource") -> str:
    if not isinstance(value, str):
        raise InvalidInputError(FieldError(field_name, "must be a string 'type:id'"))
    if len(value) > MAX_RESOURCE_LENGTH or not _RESOURCE_RE.fullmatch(value):
        raise InvalidInputError(
            FieldError(
                field_name,
                "must be 'type:id': a lowercase type, a colon, and an id of letters, digits"
                " and ._~@+/:=- (at most 240 characters)",
            )
        )
    return value


def parse_grant_id(value: object, field_name: str = "id") -> str:
    return _matching(
        value,
        _GRANT_ID_RE,
        field_name,
        "must be 1-200 characters: letters, digits and ._~@+/:=-, starting with a letter or digit",
    )


def parse_action(value: object, field_name: str = "action") -> str:
    return _matching(
        value, _ACTION_RE, field_name, "must be a lowercase identifier such as 'stream'"
    )


def parse_territory(value: object, field_name: str = "territory") -> str:
    if not isinstance(value, str) or value not in ISO_3166_ALPHA2:
        raise InvalidInputError(
            FieldError(field_name, f"{brief(value)} is not an ISO 3166-1 alpha-2 code such as 'GB'")
        )
    return value


def parse_user_id(value: object, field_name: str = "subject") -> str:
    return _matching(
        value, _USER_RE, field_name, "must be a user id of 1-255 characters without spaces"
    )


def parse_role(value: object, field_name: str = "roles") -> str:
    return _matching(
        value, _ROLE_RE, field_name, "must be a role name of 1-128 characters without spaces"
    )


def parse_subject(value: object, field_name: str = "subject") -> str:
    """A grant subject: ``user:<id>``, ``role:<name>`` or ``*``."""
    if value == "*":
        return "*"
    if isinstance(value, str):
        kind, _, rest = value.partition(":")
        if kind == "user" and _USER_RE.fullmatch(rest):
            return value
        if kind == "role" and _ROLE_RE.fullmatch(rest):
            return value
    raise InvalidInputError(FieldError(field_name, "must be 'user:<id>', 'role:<name>' or '*'"))


def parse_source(value: object, field_name: str = "source") -> str:
    return _matching(
        value, _SOURCE_RE, field_name, "must be a feed name of 1-100 letters, digits and ._~@+/:=-"
    )


def parse_time(value: object, field_name: str) -> datetime:
    """An RFC 3339 date-time with an explicit offset, returned in UTC."""
    if isinstance(value, str) and _RFC3339_RE.fullmatch(value):
        text = value.replace("t", "T").replace(" ", "T").replace("z", "Z")
        try:
            return datetime.fromisoformat(text).astimezone(UTC)
        except (ValueError, OverflowError):  # e.g. 0001-01-01T00:00:00+01:00 is before year 1
            pass
    raise InvalidInputError(
        FieldError(
            field_name, "must be an RFC 3339 date-time with an offset, e.g. 2026-01-31T00:00:00Z"
        )
    )


def parse_revision(value: object, field_name: str = "min_revision") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise InvalidInputError(FieldError(field_name, "must be a non-negative integer"))
    return value


def string_list(value: object, field_name: str, limit: int) -> list[object]:
    """A JSON list (or tuple) of at most ``limit`` items, not yet checked one by one."""
    if not isinstance(value, list | tuple):
        raise InvalidInputError(FieldError(field_name, "must be a list"))
    if len(value) > limit:
        raise InvalidInputError(FieldError(field_name, f"must have at most {limit} entries"))
    return list(value)


def parse_object(value: object, allowed: frozenset[str]) -> dict[str, Any]:
    """A JSON object whose keys are all ``allowed``; anything else is refused, every
    unknown key named (escaped: a key is the caller's text)."""
    if not isinstance(value, dict):
        raise InvalidInputError(FieldError("", "the body must be a JSON object"))
    unknown = sorted(k for k in value if k not in allowed)
    if unknown:
        raise InvalidInputError([FieldError(shown(k), "unknown field") for k in unknown])
    return value
