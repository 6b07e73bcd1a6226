"""Strict JSON for import files: duplicate keys, ``NaN`` and ``Infinity`` refused.

orjson parses every NDJSON line and CSV ``attributes`` cell (fast), but keeps the
last of duplicate keys silently and reads what a rights team would not mean. So a
parsed value is accepted only with a cheap proof that no key was lost
(``surely_unique``); otherwise the stdlib decoder, which sees every key in order,
decides (``find_duplicate``). ``json_problem`` and ``encoding_problem`` say why a
text was refused, in words a rights team can act on.
"""

from __future__ import annotations

import json
from typing import Any, Final

import orjson

from entitlements.domain.values import DECODER_MAX_DEPTH, shown, too_deep, too_deep_problem
from entitlements.errors import FieldError, InvalidInputError


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(key)
            seen.add(key)
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (NaN and Infinity are refused)")


# The stdlib decoder is the exact (slow) check: it sees every key, in order.
_STRICT_JSON: Final = json.JSONDecoder(
    object_pairs_hook=_unique_pairs, parse_constant=_no_constants
)
_WHITESPACE: Final = b" \t\r\n"


def surely_unique(raw: bytes, value: Any, nested: str | None = None) -> bool:
    """A cheap proof that the JSON text ``raw`` (parsed: ``value``) has no duplicate keys,
    or False when it cannot tell (the exact decoder then decides).

    orjson keeps the last of duplicate keys silently, so the parsed value alone
    cannot tell. Two proofs, each sound:

    - ``raw`` is byte for byte what orjson writes for ``value`` (compact JSON in
      key order: what most feed generators write). A text with a repeated key
      cannot be the serialisation of a dict, whose keys are unique.
    - Otherwise, without backslashes no string holds a ``"``, so every ``"``
      delimits a string, and every key is a string followed (after optional
      whitespace) by ``:``. With whitespace removed, ``":`` then occurs once for
      every key in the text, at any depth, plus once for each string value that
      starts with ``:``. If that count equals the keys we hold (the top level,
      and the object under ``nested``), none was lost; a repeated key anywhere
      would make the count larger.
    """
    try:
        if orjson.dumps(value) == raw:
            return True
    except (TypeError, orjson.JSONEncodeError):
        return False
    if type(value) is not dict or b"\\" in raw:
        return False
    inner = value.get(nested) if nested is not None else None
    keys = len(value) + (len(inner) if type(inner) is dict else 0)
    return raw.translate(None, _WHITESPACE).count(b'":') == keys


def find_duplicate(raw: bytes | str) -> FieldError | None:
    """The exact check: the first duplicate key anywhere in ``raw``, if any.

    Not for text nested deeper than any valid record (``DECODER_MAX_DEPTH``): the
    validator refuses it for its depth whatever its keys, and the stdlib decoder
    would recurse once per level.
    """
    if too_deep(raw, DECODER_MAX_DEPTH) is not None:
        return None
    try:
        _STRICT_JSON.decode(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except _DuplicateKeyError as dup:
        return FieldError(shown(dup.key), "duplicate key: JSON keys must be unique")
    except ValueError:
        return None  # orjson accepted it; any other objection is not ours to add
    return None


def json_problem(raw: bytes | str, exc: ValueError) -> FieldError:
    """Why a JSON text was refused, in words a rights team can act on."""
    deep = too_deep(raw, DECODER_MAX_DEPTH)
    if deep is not None:  # e.g. beyond orjson's own limit (1,024 levels)
        return too_deep_problem(deep)
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            return encoding_problem(bad)
    else:
        text = raw
    try:
        _STRICT_JSON.decode(text)
    except _DuplicateKeyError as dup:
        return FieldError(shown(dup.key), "duplicate key: JSON keys must be unique")
    except json.JSONDecodeError as err:
        return FieldError("", f"not valid JSON: {err.msg} (column {err.colno})")
    except ValueError as err:
        return FieldError("", str(err))
    msg = getattr(exc, "msg", None) or str(exc)
    return FieldError("", f"not valid JSON: {msg}")


def encoding_problem(exc: UnicodeDecodeError) -> FieldError:
    byte = exc.object[exc.start : exc.start + 1].hex().upper()
    return FieldError(
        "",
        f"not valid UTF-8 (byte 0x{byte} at byte {exc.start + 1} of the line): save the file"
        " as UTF-8 (Latin-1, Windows-1252 and UTF-16 are not accepted)",
    )


def loads_strict(raw: str) -> Any:
    """Parse one JSON text (a CSV ``attributes`` cell): duplicate keys, NaN and Infinity refused."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(json_problem(raw, exc)) from None
    if isinstance(value, dict | list) and not surely_unique(raw.encode(), value):
        duplicate = find_duplicate(raw)
        if duplicate is not None:
            raise InvalidInputError(duplicate)
    return value


__all__ = [
    "encoding_problem",
    "find_duplicate",
    "json_problem",
    "loads_strict",
    "surely_unique",
]
