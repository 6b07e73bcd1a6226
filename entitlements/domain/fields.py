"""A record declared once; its forms compiled from that declaration.

A record the service stores, caches and shows (the grant, the decision) is a frozen
dataclass whose every field carries, in its metadata, the *kind* of value it holds
and its JSON Schema::

    actions: frozenset[str] = field(metadata=declare(TEXT_SET, {"type": "array", ...}))

Each other form of the record follows from its fields, in their order:

- the JSON form (what the API shows) and its JSON Schema (what the OpenAPI document
  says, for answers and for request bodies);
- the row form (a tuple, the store's column order) and back, from a tuple or from a
  database record read by column name;
- the cache form (a JSON list, what Redis holds) and back, and a fingerprint of the
  layout that goes into the cache's keys, so an entry written with other fields is
  never read;
- the column list.

Converters are written as Python source from the fields and compiled once, at import
— the way ``dataclasses`` writes ``__init__`` — so each costs what a hand-written one
costs: no loop over the fields and no look-up per call. A field's kind says, for each
form, the expression that turns a value into it (``{v}`` stands for the value).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from entitlements.domain.parsers import format_time


@dataclass(frozen=True, slots=True)
class Kind:
    """How one kind of value looks in each form: an expression of ``{v}`` per form."""

    name: str
    to_json: str = "{v}"
    to_row: str = "{v}"
    from_row: str = "{v}"
    to_cache: str = "{v}"
    from_cache: str = "{v}"


VALUE: Final = Kind("value")
"""A string, number or boolean (or None): the same in every form."""
TEXT_SET: Final = Kind(
    "text-set",
    to_json="sorted({v})",
    to_row="tuple(sorted({v}))",
    from_row="frozenset({v})",
    to_cache="sorted({v})",
    from_cache="frozenset({v})",
)
"""A set of strings: a sorted list in JSON and the cache, a sorted tuple in a row."""
TEXT_TUPLE: Final = Kind("text-tuple", to_json="list({v})", to_cache="list({v})")
"""An ordered tuple of strings: a list in JSON."""
TIME: Final = Kind(
    "time",
    to_json="format_time({v})",
    to_cache="(None if {v} is None else {v}.timestamp())",
    from_cache="(None if {v} is None else from_timestamp({v}))",
)
"""An aware datetime or None: RFC 3339 in JSON, seconds since the epoch in the cache."""
OBJECT: Final = Kind(
    "object",
    to_json="(None if {v} is None else dict({v}))",
    to_row="(None if {v} is None else dict({v}))",
)
"""A JSON object (any mapping) or None: a plain dict in JSON and in a row."""

_NAMESPACE: Final[dict[str, Any]] = {
    "format_time": format_time,
    "from_timestamp": lambda t: datetime.fromtimestamp(t, UTC),
}


def declare(kind: Kind, schema: Mapping[str, Any], *, nullable: bool = False) -> dict[str, Any]:
    """A field's metadata: its kind, the JSON Schema of its JSON value when it has one, and
    whether it may be ``None`` (``null`` in JSON)."""
    return {"kind": kind, "schema": dict(schema), "nullable": nullable}


def _fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    found = dataclasses.fields(cls)
    for f in found:
        if "kind" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared (no kind in its metadata)")
    return found


def field_names(cls: type) -> tuple[str, ...]:
    """The record's fields, in order: the order of every form."""
    return tuple(f.name for f in _fields(cls))


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _compile(cls: type, name: str, arg: str, body: str, *, setup: str = "") -> Callable[..., Any]:
    source = f"def {name}({arg}):\n" + (f"    {setup}\n" if setup else "") + f"    return {body}\n"
    namespace = {**_NAMESPACE, "cls": cls}
    # Generated from the field declarations above, never from input: the dataclasses
    # technique for converters with no per-call overhead.
    exec(source, namespace)  # noqa: S102
    function: Callable[..., Any] = namespace[name]
    function.__qualname__ = f"{cls.__name__}.{name}"
    function.__doc__ = f"The {name.replace('_', ' ')} form of a {cls.__name__} (compiled)."
    return function


def _kind(f: dataclasses.Field[Any]) -> Kind:
    kind: Kind = f.metadata["kind"]
    return kind


def json_form(cls: type) -> Callable[[Any], dict[str, Any]]:
    """``record -> dict``: every field, by name, in its JSON form."""
    items = ", ".join(
        f"{f.name!r}: {_kind(f).to_json.format(v='o.' + f.name)}" for f in _fields(cls)
    )
    return _compile(cls, "to_json", "o", "{" + items + "}")


def row_form(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    """``record -> tuple``: every field in its row form, in order."""
    items = "".join(f"{_kind(f).to_row.format(v='o.' + f.name)}, " for f in _fields(cls))
    return _compile(cls, "to_row", "o", f"({items})")


def from_row_form(cls: type) -> Callable[[tuple[Any, ...]], Any]:
    """``tuple -> record``: the inverse of ``row_form``."""
    args = ", ".join(_kind(f).from_row.format(v=f"r[{i}]") for i, f in enumerate(_fields(cls)))
    return _compile(cls, "from_row", "r", f"cls({args})")


def from_record_form(cls: type) -> Callable[[Mapping[str, Any]], Any]:
    """``mapping -> record``: a database record read by column name (its arrays as lists)."""
    args = ", ".join(_kind(f).from_row.format(v=f"r[{f.name!r}]") for f in _fields(cls))
    return _compile(cls, "from_record", "r", f"cls({args})")


def cache_form(cls: type) -> Callable[[Any], list[Any]]:
    """``record -> list``: the cache's JSON list, every field in order."""
    items = ", ".join(_kind(f).to_cache.format(v="o." + f.name) for f in _fields(cls))
    return _compile(cls, "to_cache", "o", f"[{items}]")


def from_cache_form(cls: type) -> Callable[[list[Any]], Any]:
    """``list -> record``: the inverse of ``cache_form`` (a list of another length raises)."""
    names = "".join(f"v{i}, " for i in range(len(_fields(cls))))
    args = ", ".join(_kind(f).from_cache.format(v=f"v{i}") for i, f in enumerate(_fields(cls)))
    # Unpacking refuses a list of any other length (ValueError): an entry of another layout.
    return _compile(cls, "from_cache", "v", f"cls({args})", setup=f"({names}) = v")


def layout(cls: type) -> str:
    """A short fingerprint of the fields' names and kinds, in order (for cache keys)."""
    text = ";".join(f"{f.name}:{_kind(f).name}" for f in _fields(cls))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _nullable(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"anyOf": [dict(schema), {"type": "null"}]}


def value_schema(cls: type, *, description: str | None = None) -> dict[str, Any]:
    """The JSON Schema of ``json_form``'s output: every field present, ``null`` allowed
    where the field is declared nullable."""
    properties = {
        f.name: _nullable(f.metadata["schema"]) if f.metadata["nullable"] else f.metadata["schema"]
        for f in _fields(cls)
    }
    schema: dict[str, Any] = {
        "type": "object",
        "required": list(properties),
        "properties": properties,
    }
    if description:
        schema["description"] = description
    return schema


def input_schema(
    cls: type, *, optional: Collection[str] = (), extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON Schema of the record as a request body: unknown keys refused, fields without
    a default required (except those in ``optional``); a field that may be left out may also
    be ``null`` (the validators read ``null`` as "not given")."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f in _fields(cls):
        schema = f.metadata["schema"]
        if _has_default(f) or f.name in optional or f.metadata["nullable"]:
            properties[f.name] = _nullable(schema)
        else:
            properties[f.name] = schema
        if not _has_default(f) and f.name not in optional:
            required.append(f.name)
    properties.update(extra or {})
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": properties,
    }


def columns(cls: type) -> str:
    """The record's fields as an SQL column list (``id, subject, ...``)."""
    return ", ".join(field_names(cls))


__all__ = [
    "OBJECT",
    "TEXT_SET",
    "TEXT_TUPLE",
    "TIME",
    "VALUE",
    "Kind",
    "cache_form",
    "columns",
    "declare",
    "field_names",
    "from_cache_form",
    "from_record_form",
    "from_row_form",
    "input_schema",
    "json_form",
    "layout",
    "row_form",
    "value_schema",
]
