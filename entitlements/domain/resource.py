"""A resource and its parents: a track on releases, a release under a label."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from entitlements.domain.parsers import (
    MAX_PARENTS,
    MAX_RESOURCE_LENGTH,
    RESOURCE_PATTERN,
    RESOURCE_TYPE_PATTERN,
    anchored,
    parse_resource,
    resource_type,
    string_list,
)
from entitlements.domain.values import shown
from entitlements.errors import FieldError, InvalidInputError


@dataclass(frozen=True, slots=True)
class Resource:
    """A resource and its direct parents (a track on releases, a release under a label)."""

    id: str
    parents: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": resource_type(self.id), "parents": list(self.parents)}


RESOURCE_ID_SCHEMA: Final[dict[str, Any]] = {
    "type": "string",
    "pattern": anchored(RESOURCE_PATTERN),
    "maxLength": MAX_RESOURCE_LENGTH,
    "description": "'type:id'",
}
RESOURCE_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["id", "type", "parents"],
    "properties": {
        "id": RESOURCE_ID_SCHEMA,
        "type": {"type": "string", "pattern": anchored(RESOURCE_TYPE_PATTERN)},
        "parents": {"type": "array", "items": RESOURCE_ID_SCHEMA, "maxItems": MAX_PARENTS},
    },
}
RESOURCE_INPUT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "id": {**RESOURCE_ID_SCHEMA, "description": "if given, the id in the URL"},
        "parents": {
            "type": "array",
            "items": RESOURCE_ID_SCHEMA,
            "maxItems": MAX_PARENTS,
            "description": "not the resource itself; no cycle; no path over 16 levels",
        },
        "kind": {"description": "ignored (an import line's record kind)"},
    },
}
"""A resource as the body of ``PUT /v1/resources/{id}`` (what ``resource_from_mapping`` takes)."""


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
        items = string_list(raw, "parents", MAX_PARENTS)
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


__all__ = [
    "RESOURCE_ID_SCHEMA",
    "RESOURCE_INPUT_SCHEMA",
    "RESOURCE_SCHEMA",
    "Resource",
    "resource_from_mapping",
]
