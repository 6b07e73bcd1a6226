"""Grants, resources and decisions: frozen values and the one validator.

Every way data enters the service (the REST API, bulk import, the CLI) goes
through the functions here, so the rules are written once. They are plain
Python on purpose: the import path validates millions of rows and cannot
afford a framework per row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson

from entitlements.domain.territories import ISO_3166_ALPHA2, WORLDWIDE
from entitlements.errors import FieldError, InvalidInputError

Effect = Literal["allow", "deny"]
Reason = Literal["granted", "denied", "territory", "not_yet_valid", "expired", "not_licensed"]

MAX_ID_LENGTH: Final = 200
MAX_RESOURCE_LENGTH: Final = 240
MAX_SUBJECT_LENGTH: Final = 260
MAX_ACTIONS: Final = 32
MAX_PARENTS: Final = 64
MAX_ATTRIBUTES_BYTES: Final = 4096
MAX_SOURCE_LENGTH: Final = 100

_RESOURCE_RE: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}:[A-Za-z0-9][A-Za-z0-9._~@+/:=-]{0,199}")
_GRANT_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~@+/:=-]{0,199}")
_ACTION_RE: Final = re.compile(r"[a-z][a-z0-9_.-]{0,62}")
_USER_RE: Final = re.compile(r"[A-Za-z0-9._~@+/:=|-]{1,255}")
_ROLE_RE: Final = re.compile(r"[A-Za-z0-9._~@+/:=|-]{1,128}")
_SOURCE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~@+/:=-]{0,99}")
# RFC 3339 date-time: a full date, a time, and an explicit offset.
_RFC3339_RE: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)

GRANT_FIELDS: Final = frozenset(
    {
        "id",
        "subject",
        "resource",
        "actions",
        "territories",
        "exclude_territories",
        "valid_from",
        "valid_until",
        "effect",
        "attributes",
        "source",
    }
)


@dataclass(frozen=True, slots=True)
class Grant:
    """One right: who may do which actions to what, where and when.

    ``territories`` holds ISO codes or just ``"*"`` (worldwide); the window is
    half-open, ``[valid_from, valid_until)``; ``None`` means unbounded.
    """

    id: str
    subject: str
    resource: str
    actions: frozenset[str]
    territories: frozenset[str]
    exclude_territories: frozenset[str] = frozenset()
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    effect: Effect = "allow"
    attributes: Mapping[str, Any] | None = field(default=None, compare=True, hash=False)
    source: str | None = None

    def covers(self, territory: str) -> bool:
        """Whether the grant's territory set contains ``territory``."""
        if territory in self.exclude_territories:
            return False
        return WORLDWIDE in self.territories or territory in self.territories

    def active_at(self, at: datetime) -> bool:
        """Whether ``at`` lies inside the half-open window."""
        if self.valid_from is not None and at < self.valid_from:
            return False
        return self.valid_until is None or at < self.valid_until

    def to_json(self) -> dict[str, Any]:
        """The grant as the API shows it (lists sorted, RFC 3339 times)."""
        return {
            "id": self.id,
            "subject": self.subject,
            "resource": self.resource,
            "actions": sorted(self.actions),
            "territories": sorted(self.territories),
            "exclude_territories": sorted(self.exclude_territories),
            "valid_from": format_time(self.valid_from),
            "valid_until": format_time(self.valid_until),
            "effect": self.effect,
            "attributes": dict(self.attributes) if self.attributes is not None else None,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class Resource:
    """A resource and its direct parents (a track on releases, a release under a label)."""

    id: str
    parents: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": resource_type(self.id), "parents": list(self.parents)}


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to a check.

    ``valid_until`` is an instant no later than the first one at which
    ``allowed`` or ``reason`` would change by time alone; callers may cache the
    decision until then. ``revision`` is the data revision it was computed at.
    """

    allowed: bool
    reason: Reason
    grant: str | None
    valid_until: datetime | None
    revision: int
    attributes: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "reason": self.reason,
            "grant": self.grant,
            "valid_until": format_time(self.valid_until),
            "revision": self.revision,
            "attributes": dict(self.attributes) if self.attributes is not None else None,
        }


@dataclass(frozen=True, slots=True)
class CheckData:
    """What a check needs: the revision read, the resource's ancestors and the candidate grants."""

    revision: int
    ancestors: frozenset[str]
    grants: tuple[Grant, ...]


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the change log: at ``revision``, ``kind`` ``key`` changed."""

    revision: int
    kind: str
    key: str


# --- small parsers, each raising InvalidInputError naming the field ---------


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
        shown = repr(value)[:20]
        raise InvalidInputError(
            FieldError(field_name, f"{shown} is not an ISO 3166-1 alpha-2 code such as 'GB'")
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


def _string_list(value: object, field_name: str, limit: int) -> list[object]:
    if not isinstance(value, list | tuple):
        raise InvalidInputError(FieldError(field_name, "must be a list"))
    if len(value) > limit:
        raise InvalidInputError(FieldError(field_name, f"must have at most {limit} entries"))
    return list(value)


def _territory_set(value: object, field_name: str, *, allow_worldwide: bool) -> frozenset[str]:
    items = _string_list(value, field_name, len(ISO_3166_ALPHA2) + 1)
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


_SUBJECT_RE: Final = re.compile(
    r"\*|user:[A-Za-z0-9._~@+/:=|-]{1,255}|role:[A-Za-z0-9._~@+/:=|-]{1,128}"
)
_MAX_TERRITORIES: Final = len(ISO_3166_ALPHA2) + 1


def _codes(value: object, *, worldwide: bool) -> frozenset[str] | None:
    """A territory list exactly as ``_territory_set`` accepts it, or None to say "ask it"."""
    if type(value) is not list and type(value) is not tuple:
        return None
    if not 0 < len(value) <= _MAX_TERRITORIES:
        return None if worldwide or len(value) else frozenset()
    if worldwide and len(value) == 1 and value[0] == WORLDWIDE:
        return frozenset((WORLDWIDE,))
    for code in value:
        if type(code) is not str or code not in ISO_3166_ALPHA2:
            return None
    return frozenset(value)


def _fast_grant(data: object, grant_id: str | None) -> Grant | None:
    """The common case, a valid grant, in a few microseconds; None means "not sure".

    It accepts only what the full validator below accepts (a property test holds
    them to that) and never explains a refusal: anything unusual goes the long way,
    which reports every problem. Bulk import validates millions of rows through here.
    """
    if type(data) is not dict or not data.keys() <= GRANT_FIELDS:
        return None
    get = data.get
    if grant_id is None:
        gid = get("id")
        if type(gid) is not str or not _GRANT_ID_RE.fullmatch(gid):
            return None
    else:
        body_id = get("id")
        if body_id is not None and body_id != grant_id:
            return None
        gid = grant_id
    subject, resource, actions = get("subject"), get("resource"), get("actions")
    if type(subject) is not str or not _SUBJECT_RE.fullmatch(subject):
        return None
    if type(resource) is not str or len(resource) > MAX_RESOURCE_LENGTH:
        return None
    if not _RESOURCE_RE.fullmatch(resource):
        return None
    if type(actions) is not list and type(actions) is not tuple:
        return None
    if not 0 < len(actions) <= MAX_ACTIONS:
        return None
    for action in actions:
        if type(action) is not str or not _ACTION_RE.fullmatch(action):
            return None
    territories = _codes(get("territories"), worldwide=True)
    if territories is None:
        return None
    raw_excludes = get("exclude_territories")
    excludes = frozenset() if raw_excludes is None else _codes(raw_excludes, worldwide=False)
    if excludes is None:
        return None
    raw_effect = get("effect")
    effect: Effect
    if raw_effect is None or raw_effect == "allow":
        effect = "allow"
    elif raw_effect == "deny":
        effect = "deny"
    else:
        return None
    source = get("source")
    if source is not None and (type(source) is not str or not _SOURCE_RE.fullmatch(source)):
        return None
    attributes = get("attributes")
    if attributes is not None:
        if type(attributes) is not dict:
            return None
        try:
            if len(orjson.dumps(attributes)) > MAX_ATTRIBUTES_BYTES:
                return None
        except (TypeError, orjson.JSONEncodeError):
            return None
    try:
        raw_from, raw_until = get("valid_from"), get("valid_until")
        valid_from = None if raw_from is None else parse_time(raw_from, "valid_from")
        valid_until = None if raw_until is None else parse_time(raw_until, "valid_until")
    except InvalidInputError:
        return None
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        return None
    return Grant(
        id=gid,
        subject=subject,
        resource=resource,
        actions=frozenset(actions),
        territories=territories,
        exclude_territories=excludes,
        valid_from=valid_from,
        valid_until=valid_until,
        effect=effect,
        attributes=attributes,
        source=source,
    )


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
    errors.extend(FieldError(name[:64], "unknown field") for name in unknown)

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


def _parse_actions(value: object) -> frozenset[str]:
    items = _string_list(value, "actions", MAX_ACTIONS)
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
    return _matching(
        value, _SOURCE_RE, "source", "must be a feed name of 1-100 letters, digits and ._~@+/:=-"
    )


def resource_from_mapping(data: object, *, resource_id: str | None = None) -> Resource:
    """Validate a resource and its parents (``{"id": ..., "parents": [...]}``)."""
    if not isinstance(data, Mapping):
        raise InvalidInputError(FieldError("", "a resource must be a JSON object"))
    errors: list[FieldError] = []
    for name in sorted(str(k) for k in data if k not in {"id", "parents", "kind"}):
        errors.append(FieldError(name[:64], "unknown field"))
    rid = resource_id
    if "id" in data:
        try:
            body_id = parse_resource(data["id"], "id")
            if rid is not None and body_id != rid:
                errors.append(FieldError("id", "does not match the id in the URL"))
            rid = body_id
        except InvalidInputError as exc:
            errors.extend(exc.errors)
    elif rid is None:
        errors.append(FieldError("id", "is required"))
    parents: list[str] = []
    raw = data.get("parents", [])
    try:
        items = _string_list(raw, "parents", MAX_PARENTS)
        for i, item in enumerate(items):
            try:
                parent = parse_resource(item, f"parents.{i}")
            except InvalidInputError as exc:
                errors.extend(exc.errors)
                continue
            if parent == rid:
                errors.append(FieldError(f"parents.{i}", "a resource cannot be its own parent"))
            elif parent not in parents:
                parents.append(parent)
    except InvalidInputError as exc:
        errors.extend(exc.errors)
    if errors or rid is None:
        raise InvalidInputError(errors)
    return Resource(id=rid, parents=tuple(sorted(parents)))
