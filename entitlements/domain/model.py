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
from entitlements.domain.values import (
    MAX_ATTRIBUTES_DEPTH,
    brief,
    json_problem,
    shown,
    surely_plain,
)
from entitlements.errors import FieldError, InvalidInputError

Effect = Literal["allow", "deny"]
Reason = Literal["granted", "denied", "territory", "not_yet_valid", "expired", "not_licensed"]

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
    ``ancestors``: the resource's ancestors at that revision, sorted — a change
    feed entry naming any of them (or the resource) may change the answer.
    """

    allowed: bool
    reason: Reason
    grant: str | None
    valid_until: datetime | None
    revision: int
    attributes: Mapping[str, Any] | None = None
    ancestors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "reason": self.reason,
            "grant": self.grant,
            "valid_until": format_time(self.valid_until),
            "revision": self.revision,
            "attributes": dict(self.attributes) if self.attributes is not None else None,
            "ancestors": list(self.ancestors),
        }


@dataclass(frozen=True, slots=True)
class CheckData:
    """What a check needs: the revision read, the resource's ancestors and the candidate grants.

    ``too_deep``: the walk up from the resource found ancestors ``MAX_DEPTH`` levels
    above it, so the graph there is deeper than the limit and ``ancestors`` may miss
    some (with a deny among their grants). Every check on such data is refused. It
    has no default on purpose: whoever builds one says whether the walk was whole.
    """

    revision: int
    ancestors: frozenset[str]
    grants: tuple[Grant, ...]
    too_deep: bool


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

GrantRow = tuple[
    str,
    str,
    str,
    tuple[str, ...],
    tuple[str, ...],
    tuple[str, ...],
    datetime | None,
    datetime | None,
    Effect,
    dict[str, Any] | None,
    str | None,
]
"""A grant in its normal form, field by field: every set a sorted tuple without repeats.

Two equal grants have equal rows, so the store compares rows (``IS NOT DISTINCT
FROM``) to tell an unchanged grant from an updated one.
"""


def grant_row(g: Grant) -> GrantRow:
    """The grant as a ``GrantRow`` (the store's column order)."""
    return (
        g.id,
        g.subject,
        g.resource,
        tuple(sorted(g.actions)),
        tuple(sorted(g.territories)),
        tuple(sorted(g.exclude_territories)),
        g.valid_from,
        g.valid_until,
        g.effect,
        dict(g.attributes) if g.attributes is not None else None,
        g.source,
    )


def _sorted_unique(items: tuple[str, ...]) -> tuple[str, ...]:
    """``tuple(sorted(set(items)))``, cheaper for the one- and two-item lists most rows have."""
    if len(items) == 1:
        return items
    if len(items) == 2:
        a, b = items
        return items if a < b else (b, a) if b < a else (a,)
    return tuple(sorted(set(items)))


# The fast path remembers values it has accepted: a feed repeats its subjects,
# sources, action lists and territory lists on row after row. Only accepted
# values, only strings (and tuples of them) as keys, cleared when full.
_MEMO_LIMIT: Final = 4096
_SUBJECTS: Final[set[str]] = set()
_SOURCES: Final[set[str]] = set()
_ACTION_LISTS: Final[dict[tuple[str, ...], tuple[str, ...]]] = {}
_TERRITORY_LISTS: Final[dict[tuple[str, ...], tuple[str, ...]]] = {}
_EXCLUDE_LISTS: Final[dict[tuple[str, ...], tuple[str, ...]]] = {}


def _remember(memo: set[str] | dict[Any, Any], key: Any, value: Any = None) -> None:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    if isinstance(memo, set):
        memo.add(key)
    else:
        memo[key] = value


def _items(value: object) -> tuple[str, ...] | None:
    """A list's items as a memo key, or None if it is not a list of hashable items."""
    if type(value) is not list and type(value) is not tuple:
        return None
    for item in value:
        if type(item) is not str:
            return None
    return tuple(value)


def _codes(value: object, *, worldwide: bool) -> tuple[str, ...] | None:
    """A territory list exactly as ``_territory_set`` accepts it, sorted, or None to say "ask it"."""
    key = _items(value)
    if key is None:
        return None
    memo = _TERRITORY_LISTS if worldwide else _EXCLUDE_LISTS
    known = memo.get(key)
    if known is not None:
        return known
    if not 0 < len(key) <= _MAX_TERRITORIES:
        return None if worldwide or len(key) else ()
    if worldwide and len(key) == 1 and key[0] == WORLDWIDE:
        codes: tuple[str, ...] = (WORLDWIDE,)
    else:
        for code in key:
            if code not in ISO_3166_ALPHA2:
                return None
        codes = _sorted_unique(key)
    _remember(memo, key, codes)
    return codes


def _fast_row(data: object, grant_id: str | None) -> GrantRow | None:
    """The common case, a valid grant, as its ``GrantRow`` in a few microseconds.

    None means "not sure": it accepts only what the full validator below accepts,
    with the same result (a property test holds them to that), and never explains
    a refusal; anything unusual goes the long way, which reports every problem.
    Bulk import validates millions of rows through here without building a Grant.
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
    subject, resource = get("subject"), get("resource")
    if type(subject) is not str:
        return None
    if subject not in _SUBJECTS:
        if not _SUBJECT_RE.fullmatch(subject):
            return None
        _remember(_SUBJECTS, subject)
    if type(resource) is not str or len(resource) > MAX_RESOURCE_LENGTH:
        return None
    if not _RESOURCE_RE.fullmatch(resource):
        return None
    raw_actions, raw_territories = get("actions"), get("territories")
    try:  # lists seen before (keys are only ever tuples of strings)
        actions = _ACTION_LISTS.get(tuple(raw_actions)) if type(raw_actions) is list else None
        territories = (
            _TERRITORY_LISTS.get(tuple(raw_territories)) if type(raw_territories) is list else None
        )
    except TypeError:  # an unhashable item: certainly not a list of strings
        return None
    if actions is None:
        action_items = _items(raw_actions)
        if action_items is None or not 0 < len(action_items) <= MAX_ACTIONS:
            return None
        for action in action_items:
            if not _ACTION_RE.fullmatch(action):
                return None
        actions = _sorted_unique(action_items)
        _remember(_ACTION_LISTS, action_items, actions)
    if territories is None:
        territories = _codes(raw_territories, worldwide=True)
        if territories is None:
            return None
    raw_excludes = get("exclude_territories")
    excludes = () if raw_excludes is None else _codes(raw_excludes, worldwide=False)
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
    if source is not None:
        if type(source) is not str:
            return None
        if source not in _SOURCES:
            if not _SOURCE_RE.fullmatch(source):
                return None
            _remember(_SOURCES, source)
    attributes = get("attributes")
    if attributes is not None:
        if type(attributes) is not dict:
            return None
        try:
            text = orjson.dumps(attributes)
        except (TypeError, orjson.JSONEncodeError):
            return None
        if len(text) > MAX_ATTRIBUTES_BYTES:
            return None
        if not surely_plain(attributes) and _attributes_problem(attributes) is not None:
            return None
    raw_from, raw_until = get("valid_from"), get("valid_until")
    if raw_from is None and raw_until is None:
        valid_from = valid_until = None
    else:
        try:
            valid_from = None if raw_from is None else parse_time(raw_from, "valid_from")
            valid_until = None if raw_until is None else parse_time(raw_until, "valid_until")
        except InvalidInputError:
            return None
        if valid_from is not None and valid_until is not None and valid_until <= valid_from:
            return None
    return (
        gid,
        subject,
        resource,
        actions,
        territories,
        excludes,
        valid_from,
        valid_until,
        effect,
        attributes,
        source,
    )


def grant_from_row(row: GrantRow) -> Grant:
    """The Grant of a ``GrantRow`` (the inverse of ``grant_row``)."""
    return Grant(
        id=row[0],
        subject=row[1],
        resource=row[2],
        actions=frozenset(row[3]),
        territories=frozenset(row[4]),
        exclude_territories=frozenset(row[5]),
        valid_from=row[6],
        valid_until=row[7],
        effect=row[8],
        attributes=row[9],
        source=row[10],
    )


def _fast_grant(data: object, grant_id: str | None) -> Grant | None:
    """``_fast_row`` as a Grant (None: ask the full validator)."""
    row = _fast_row(data, grant_id)
    return None if row is None else grant_from_row(row)


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
    # The walk first: it explains what orjson would only refuse (a lone surrogate,
    # nesting beyond its own limit), and it never recurses.
    problem = _attributes_problem(value)
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


def _attributes_problem(value: object) -> FieldError | None:
    return json_problem(value, "attributes", MAX_ATTRIBUTES_DEPTH)


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
        errors.append(FieldError(shown(name), "unknown field"))
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
