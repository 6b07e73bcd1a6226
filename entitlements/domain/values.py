"""Free-form values from callers (text, JSON) that the store can hold exactly.

Most of what a caller sends is checked against a pattern (ids, subjects,
resources, actions, codes) that admits no control character. What is left —
a grant's ``attributes``, a token's ``jti``, an exchange ``audience``, an
import id — goes through the rules here, so that every value that reaches
Postgres is one it can store and give back unchanged:

- Postgres ``text`` and ``jsonb`` cannot hold U+0000 (NUL), and a lone UTF-16
  surrogate is not UTF-8 at all: both are refused wherever they appear (a key or
  a value, at any depth). An identifier (``parse_text``) holds no control
  character of any kind.
- JSON numbers are kept within ±(2^53 - 1), the integers every JSON stack
  represents exactly. A parser hands a larger integer over as a rounded float
  (``123456789012345678901234567890`` becomes ``1.2345678901234568e+29``), so
  a number beyond that range, integer or float, is refused rather than stored
  changed.
- ``attributes`` nest at most ``MAX_ATTRIBUTES_DEPTH`` levels. The walk below
  uses its own stack, never Python's recursion, so no input can exhaust it.

Each refusal is a ``FieldError`` naming the dotted path of the value
(``attributes.bitrate``); keys from the caller are shown escaped (``shown``),
so an error message itself never carries a NUL into a report or a log.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any, Final

import orjson

from entitlements.errors import FieldError, InvalidInputError

MAX_ATTRIBUTES_DEPTH: Final = 32
"""How many levels ``attributes`` may nest: the object itself is level 1."""

MAX_SAFE_INTEGER: Final = 2**53 - 1
"""The largest integer every JSON implementation holds exactly (JavaScript's
``Number.MAX_SAFE_INTEGER``); numbers in ``attributes`` stay within ± this."""

MAX_SHOWN: Final = 64
"""How many characters of a caller's key an error message repeats."""

_MAX_PATH: Final = 200


def shown(key: str, limit: int = MAX_SHOWN) -> str:
    """A caller's key or name as an error may repeat it: at most ``limit`` characters,
    with control characters and lone surrogates escaped (``a\\x00b``)."""
    text = key[:limit]
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def brief(value: object, limit: int = 20) -> str:
    """A refused value as an error may quote it: a string or number as its repr, cut to
    ``limit``; a container only by its kind (its repr would recurse as deep as a caller
    nested it: orjson parses up to 1,024 levels, more than Python's recursion limit)."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return repr(value)[:limit]


def text_problem(text: str) -> str | None:
    """Why Postgres could not store ``text`` unchanged (a NUL, a lone surrogate), or None."""
    if "\x00" in text:
        return "contains the NUL character (U+0000), which cannot be stored"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate (it is not valid Unicode)"
    return None


def parse_text(value: object, field: str, max_length: int) -> str:
    """An opaque identifier from a caller (a ``jti``, an ``audience``, an import id):
    1 to ``max_length`` characters, none of them a control character."""
    if not isinstance(value, str) or not 0 < len(value) <= max_length:
        raise InvalidInputError(FieldError(field, f"must be a string of 1-{max_length} characters"))
    if not value.isprintable() and any(_control(c) for c in value):
        problem = text_problem(value) or "contains a control character"
        raise InvalidInputError(FieldError(field, problem))
    return value


def _control(c: str) -> bool:
    """A control character (C0, DEL, C1) or a lone surrogate. (Other characters that
    ``isprintable`` refuses, such as no-break spaces, are harmless text.)"""
    code = ord(c)
    return code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code < 0xE000


_NOT_PLAIN: Final = "must be plain JSON: an object, array, string, number, true, false or null"
_BEYOND: Final = (
    f"is beyond ±{MAX_SAFE_INTEGER} (2^53 - 1): JSON does not carry such numbers exactly"
)


def _value_problem(value: object) -> str | None:
    """Why a value that is neither an object nor a list cannot be stored exactly, or None."""
    if isinstance(value, str):
        return text_problem(value)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else _BEYOND
    if isinstance(value, float):
        if not math.isfinite(value):
            return "must be a finite number"
        return None if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else _BEYOND
    return _NOT_PLAIN


def _members(value: object) -> Iterator[tuple[str | None, object]] | None:
    """An object's or a list's (key, item) pairs (a list's keys are its indices; a key
    that is not a string is None), or None for anything else."""
    if isinstance(value, dict):
        return ((k if isinstance(k, str) else None, v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return ((str(i), v) for i, v in enumerate(value))
    return None


def json_problem(value: object, field: str, max_depth: int) -> FieldError | None:
    """The first reason, in document order, why ``value`` is not plain JSON the store
    holds exactly, or None.

    Plain JSON: objects with string keys, lists, strings, finite numbers within
    ±``MAX_SAFE_INTEGER``, booleans and null; no NUL or lone surrogate in any key
    or string; at most ``max_depth`` levels (``value`` itself is level 1).
    """
    members = _members(value)
    if members is None:
        problem = _value_problem(value)
        return None if problem is None else FieldError(field, problem)
    stack: list[tuple[Iterator[tuple[str | None, object]], str]] = [(members, field)]
    while stack:
        members, path = stack[-1]
        for key, item in members:
            if key is None:
                return FieldError(_cut(path), "keys must be strings")
            problem = text_problem(key)
            if problem is not None:
                return FieldError(_cut(f"{path}.{shown(key)}"), f"the key {problem}")
            inner = _members(item)
            if inner is None:
                problem = _value_problem(item)
                if problem is not None:
                    return FieldError(_cut(f"{path}.{shown(key)}"), problem)
                continue
            if len(stack) >= max_depth:
                where = _cut(f"{path}.{shown(key)}")
                return FieldError(where, f"is nested too deeply (at most {max_depth} levels)")
            stack.append((inner, f"{path}.{shown(key)}"))
            break
        else:
            stack.pop()
    return None


def surely_plain(obj: dict[Any, Any]) -> bool:
    """A cheap proof that ``json_problem`` finds nothing in a flat object that orjson has
    just written (so its keys are strings and it holds no lone surrogate); False means
    "cannot tell": ask ``json_problem``. Most attributes are a few strings and numbers."""
    for key, item in obj.items():
        kind = type(item)
        if kind is str:
            if "\x00" in item:
                return False
        elif kind is int or kind is float:
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:  # NaN fails this too
                return False
        elif item is not None and kind is not bool:
            return False  # nested, or not a JSON type: the walk decides
        if "\x00" in key:
            return False
    return True


DECODER_MAX_DEPTH: Final = 2 * MAX_ATTRIBUTES_DEPTH
"""Text nested deeper than this holds no valid input: a recursive parser (the stdlib's
``json``) is never handed it (it would recurse that deep; orjson stops at 1,024)."""

# A JSON string (escapes and all), or a bracket.
_JSON_TOKEN_RE: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def too_deep(raw: bytes | str, limit: int) -> str | None:
    """None if the JSON text ``raw`` nests at most ``limit`` levels; else the field
    (its top-level key, escaped; "" for none) under which it goes deeper.

    A count of brackets proves most texts shallow; otherwise the text is scanned,
    string by string and bracket by bracket, without recursion, so any depth is
    safe (and the text need not even be valid JSON).
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"{") + data.count(b"[") <= limit:
        return None
    depth = 0
    key = b""
    for match in _JSON_TOKEN_RE.finditer(data):
        token = match.group()
        if token[0] == 0x22:  # a string; at depth 1, the key of whatever opens next
            if depth == 1:
                key = token
        elif token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return _key_text(key)
        else:
            depth -= 1
    return None


def too_deep_problem(field: str) -> FieldError:
    """The refusal of input that ``too_deep`` found nested beyond any valid one."""
    return FieldError(field, f"is nested too deeply (at most {MAX_ATTRIBUTES_DEPTH} levels)")


def _key_text(token: bytes) -> str:
    if not token:
        return ""
    try:
        text = orjson.loads(token)
    except orjson.JSONDecodeError:
        text = token[1:-1].decode("utf-8", "replace")
    return shown(text) if isinstance(text, str) else ""


def _cut(path: str) -> str:
    return path if len(path) <= _MAX_PATH else path[: _MAX_PATH - 1] + "…"


__all__ = [
    "DECODER_MAX_DEPTH",
    "MAX_ATTRIBUTES_DEPTH",
    "MAX_SAFE_INTEGER",
    "brief",
    "json_problem",
    "parse_text",
    "shown",
    "surely_plain",
    "text_problem",
    "too_deep",
    "too_deep_problem",
]
