"""The grant: one right, declared once, and every form it takes.

``Grant`` below is the declaration: each field names its kind and the JSON Schema
of its value (``entitlements.domain.fields``). Its other forms are compiled from it
at import, so adding a field to a grant is one line here (plus its column in
``schema.sql`` and its rule in the validators, which tests hold to this list):

=====================  ======================================================
``grant_json``          the API's JSON form (``Grant.to_json``)
``GRANT_SCHEMA``        that form's JSON Schema; ``GRANT_INPUT_SCHEMA`` the body
                        of ``PUT /v1/grants/{id}`` (OpenAPI)
``grant_row``           the row form, the store's column order (``GrantRow``)
``grant_from_row``      a row back to a grant
``grant_from_record``   a database record (by column name) to a grant
``grant_to_cache``      the list Redis holds, and ``grant_from_cache`` back;
                        ``GRANT_LAYOUT`` fingerprints it for the cache's keys
``GRANT_COLUMNS``       the column names in order (SQL, COPY)
``GRANT_FIELDS``        the JSON keys a grant may have (the validators)
=====================  ======================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, cast

from entitlements.domain import fields
from entitlements.domain.fields import OBJECT, TEXT_SET, TIME, VALUE, declare
from entitlements.domain.parsers import (
    ACTION_PATTERN,
    GRANT_ID_PATTERN,
    MAX_ACTIONS,
    MAX_ATTRIBUTES_BYTES,
    MAX_ID_LENGTH,
    MAX_RESOURCE_LENGTH,
    MAX_SOURCE_LENGTH,
    MAX_SUBJECT_LENGTH,
    RESOURCE_PATTERN,
    RFC3339_PATTERN,
    SOURCE_PATTERN,
    SUBJECT_PATTERN,
    anchored,
)
from entitlements.domain.territories import ISO_3166_ALPHA2, WORLDWIDE

Effect = Literal["allow", "deny"]

TERRITORY_CODES: Final = sorted(ISO_3166_ALPHA2)
MAX_TERRITORIES: Final = len(ISO_3166_ALPHA2) + 1
"""The most entries a territory list may have (every code, and one more)."""

_CODES: Final[dict[str, Any]] = {
    "type": "array",
    "items": {"enum": TERRITORY_CODES},
    "maxItems": MAX_TERRITORIES,
}
TIME_SCHEMA: Final[dict[str, Any]] = {
    "type": "string",
    "format": "date-time",
    # The format alone allows any number of fractional digits; nanoseconds are the most.
    "pattern": anchored(RFC3339_PATTERN),
}


@dataclass(frozen=True, slots=True)
class Grant:
    """One right: who may do which actions to what, where and when.

    ``territories`` holds ISO codes or just ``"*"`` (worldwide); the window is
    half-open, ``[valid_from, valid_until)``; ``None`` means unbounded.
    """

    id: str = field(
        metadata=declare(
            VALUE,
            {
                "type": "string",
                "pattern": anchored(GRANT_ID_PATTERN),
                "maxLength": MAX_ID_LENGTH,
                "description": "the grant's external id (re-importing an id updates it)",
            },
        )
    )
    subject: str = field(
        metadata=declare(
            VALUE,
            {
                "type": "string",
                "pattern": anchored(SUBJECT_PATTERN),
                "maxLength": MAX_SUBJECT_LENGTH,
                "description": "'user:<id>', 'role:<name>' or '*' (any valid token)",
                "examples": ["role:plan:premium"],
            },
        )
    )
    resource: str = field(
        metadata=declare(
            VALUE,
            {
                "type": "string",
                "pattern": anchored(RESOURCE_PATTERN),
                "maxLength": MAX_RESOURCE_LENGTH,
                "description": "'type:id'; a grant on a resource applies to its descendants",
                "examples": ["label:acme"],
            },
        )
    )
    actions: frozenset[str] = field(
        metadata=declare(
            TEXT_SET,
            {
                "type": "array",
                "items": {"type": "string", "pattern": anchored(ACTION_PATTERN)},
                "minItems": 1,
                "maxItems": MAX_ACTIONS,
                "examples": [["stream"]],
            },
        )
    )
    territories: frozenset[str] = field(
        metadata=declare(
            TEXT_SET,
            {
                "anyOf": [
                    {
                        "type": "array",
                        "items": {"const": WORLDWIDE},
                        "minItems": 1,
                        "maxItems": 1,
                    },
                    {**_CODES, "minItems": 1},
                ],
                "description": "ISO 3166-1 alpha-2 codes, or ['*'] for worldwide",
                "examples": [["*"]],
            },
        )
    )
    exclude_territories: frozenset[str] = field(
        default=frozenset(),
        metadata=declare(TEXT_SET, {**_CODES, "description": "codes removed from the set"}),
    )
    valid_from: datetime | None = field(
        default=None,
        metadata=declare(
            TIME, {**TIME_SCHEMA, "description": "the window opens (inclusive)"}, nullable=True
        ),
    )
    valid_until: datetime | None = field(
        default=None,
        metadata=declare(
            TIME,
            {**TIME_SCHEMA, "description": "the window closes (exclusive); after valid_from"},
            nullable=True,
        ),
    )
    effect: Effect = field(
        default="allow",
        metadata=declare(
            VALUE,
            {"enum": ["allow", "deny"], "description": "a matching deny wins over every allow"},
        ),
    )
    attributes: Mapping[str, Any] | None = field(
        default=None,
        compare=True,
        hash=False,
        metadata=declare(
            OBJECT,
            {
                "type": "object",
                "description": f"returned with the decision, not evaluated; at most"
                f" {MAX_ATTRIBUTES_BYTES} bytes of JSON, 32 levels deep",
            },
            nullable=True,
        ),
    )
    source: str | None = field(
        default=None,
        metadata=declare(
            VALUE,
            {
                "type": "string",
                "pattern": anchored(SOURCE_PATTERN),
                "maxLength": MAX_SOURCE_LENGTH,
                "description": "the feed the grant came from (imports replace by source)",
            },
            nullable=True,
        ),
    )

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
        return grant_json(self)


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
FROM``) to tell an unchanged grant from an updated one. (Spelled out for the type
checker; a test holds it to ``Grant``'s fields.)
"""

GRANT_COLUMNS: Final = fields.field_names(Grant)
GRANT_COLUMN_LIST: Final = fields.columns(Grant)
GRANT_FIELDS: Final = frozenset(GRANT_COLUMNS)
GRANT_LAYOUT: Final = fields.layout(Grant)

grant_json: Final = cast(Callable[[Grant], dict[str, Any]], fields.json_form(Grant))
grant_row: Final = cast(Callable[[Grant], GrantRow], fields.row_form(Grant))
grant_from_row: Final = cast(Callable[[GrantRow], Grant], fields.from_row_form(Grant))
grant_from_record: Final = cast(
    Callable[[Mapping[str, Any]], Grant], fields.from_record_form(Grant)
)
grant_to_cache: Final = cast(Callable[[Grant], list[Any]], fields.cache_form(Grant))
grant_from_cache: Final = cast(Callable[[list[Any]], Grant], fields.from_cache_form(Grant))

GRANT_SCHEMA: Final = fields.value_schema(Grant, description="one right")
GRANT_INPUT_SCHEMA: Final = fields.input_schema(Grant, optional=("id",))
"""A grant as the body of ``PUT /v1/grants/{id}``: the id may be left out (the URL names it)."""

__all__ = [
    "GRANT_COLUMNS",
    "GRANT_COLUMN_LIST",
    "GRANT_FIELDS",
    "GRANT_INPUT_SCHEMA",
    "GRANT_LAYOUT",
    "GRANT_SCHEMA",
    "MAX_TERRITORIES",
    "TIME_SCHEMA",
    "Effect",
    "Grant",
    "GrantRow",
    "grant_from_cache",
    "grant_from_record",
    "grant_from_row",
    "grant_json",
    "grant_row",
    "grant_to_cache",
]
