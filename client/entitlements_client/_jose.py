"""Strict decoding of a compact JWS (RFC 7515): base64url and JSON with no slack.

Three segments of the base64url alphabet, no padding, canonical trailing bits;
header and payload strict UTF-8 JSON objects: no byte order mark, no duplicate
member names, no NaN/Infinity or out-of-range numbers, no lone surrogates, no
U+0000, nesting depth at most ``MAX_JSON_DEPTH``. Different parsers resolve such
slack differently, so a token that needs any of it is refused, never guessed at.
Every failure raises :class:`InvalidTokenError` ``malformed``.
"""

from __future__ import annotations

import json
import math
import re
from base64 import urlsafe_b64decode
from typing import Any, Final, NoReturn

from ._errors import InvalidTokenError

__all__ = ["MAX_JSON_DEPTH", "TOKEN_RE", "b64decode", "fail", "json_object"]

MAX_JSON_DEPTH: Final = 16
TOKEN_RE: Final = re.compile(r"([A-Za-z0-9_-]*)\.([A-Za-z0-9_-]*)\.([A-Za-z0-9_-]*)")
_B64_INDEX: Final = {
    c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
}
_SURROGATE_ESCAPE_RE: Final = re.compile(r"\\u[dD][89a-fA-F]")


def fail(code: str, message: str | None = None) -> NoReturn:
    raise InvalidTokenError(code, message)


def b64decode(segment: str) -> bytes:
    # The alphabet was checked by TOKEN_RE. A length of 4k+1 cannot be base64; with
    # 4k+2 or 4k+3 characters the unused low bits of the last one must be zero, or many
    # strings would decode to the same bytes (signature malleability, cache bypass).
    rest = len(segment) % 4
    if rest == 1:
        fail("malformed", "invalid base64url length")
    if rest and _B64_INDEX[segment[-1]] & (0x0F if rest == 2 else 0x03):
        fail("malformed", "non-canonical base64url")
    return urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # Duplicate names are resolved differently by different parsers; refuse to guess.
        raise ValueError("duplicate JSON member name")
    return obj


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # "1e999" parses to inf
        raise ValueError("number out of range")
    return value


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_constant=_reject_constant, parse_float=_finite_float
)


def _check_tree(value: object, depth: int, check_strings: bool) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError("JSON nested too deeply")
    if isinstance(value, dict):
        for key, item in value.items():
            if check_strings:
                _check_string(key)
            _check_tree(item, depth + 1, check_strings)
    elif isinstance(value, list):
        for item in value:
            _check_tree(item, depth + 1, check_strings)
    elif check_strings and isinstance(value, str):
        _check_string(value)


def _check_string(value: str) -> None:
    value.encode("utf-8")  # lone surrogates from \\ud800 escapes raise here
    if "\x00" in value:
        raise ValueError("U+0000 in a string")


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    if raw.startswith(b"\xef\xbb\xbf"):
        fail("malformed", f"{what} starts with a byte order mark")
    try:
        text = raw.decode("utf-8")
        value = _DECODER.decode(text)
        # Cheap guards first: without enough brackets the tree cannot be too deep, and
        # without a surrogate escape (or a \\u0000 escape: JSON has no other way to
        # write a NUL) no string can hold a lone surrogate (or a NUL).
        deep = raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH
        suspect = "\\u" in text and (
            "\\u0000" in text or _SURROGATE_ESCAPE_RE.search(text) is not None
        )
        if deep or suspect:
            _check_tree(value, 1, suspect)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeError are ValueErrors
        fail("malformed", f"{what} is not strict UTF-8 JSON")
    if not isinstance(value, dict):
        fail("malformed", f"{what} is not a JSON object")
    return value
