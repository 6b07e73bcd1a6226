"""The fast validator: a valid grant's row in a few microseconds, for bulk import.

Bulk import validates millions of rows. Most are valid and repeat their subjects,
sources, action lists and territory lists row after row, so this path remembers
what it has accepted and builds the ``GrantRow`` directly, without a ``Grant``.
It accepts only what the full validator (``entitlements.domain.validation``)
accepts, with the same result — a property test holds them to that — and never
explains a refusal: anything unusual returns None and goes the long way.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from entitlements.domain.grant import (
    GRANT_FIELDS,
    MAX_TERRITORIES,
    Effect,
    Grant,
    GrantRow,
    grant_from_row,
)
from entitlements.domain.parsers import (
    _ACTION_RE,
    _GRANT_ID_RE,
    _RESOURCE_RE,
    _SOURCE_RE,
    _SUBJECT_RE,
    MAX_ACTIONS,
    MAX_ATTRIBUTES_BYTES,
    MAX_RESOURCE_LENGTH,
    parse_time,
)
from entitlements.domain.territories import ISO_3166_ALPHA2, WORLDWIDE
from entitlements.domain.values import MAX_ATTRIBUTES_DEPTH, json_problem, surely_plain
from entitlements.errors import FieldError, InvalidInputError

_MAX_TERRITORIES: Final = MAX_TERRITORIES


def attributes_problem(value: object) -> FieldError | None:
    """Why ``attributes`` cannot be stored exactly (the first reason), or None."""
    return json_problem(value, "attributes", MAX_ATTRIBUTES_DEPTH)


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
        if not surely_plain(attributes) and attributes_problem(attributes) is not None:
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


def _fast_grant(data: object, grant_id: str | None) -> Grant | None:
    """``_fast_row`` as a Grant (None: ask the full validator)."""
    row = _fast_row(data, grant_id)
    return None if row is None else grant_from_row(row)
