"""The answer to a check, declared once, and what a check reads to reach it.

``Decision`` is the declaration (``entitlements.domain.fields``): its JSON form
(``decision_json``, what ``/v1/check`` answers) and that form's JSON Schema
(``DECISION_SCHEMA``, in the OpenAPI document) are compiled from its fields. The
SDK's own ``Decision`` reads that JSON; a test holds the two to the same fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, cast, get_args

from entitlements.domain import fields
from entitlements.domain.fields import OBJECT, TEXT_TUPLE, TIME, VALUE, declare
from entitlements.domain.grant import TIME_SCHEMA, Grant
from entitlements.domain.parsers import GRANT_ID_PATTERN, RESOURCE_PATTERN, anchored

Reason = Literal["granted", "denied", "territory", "not_yet_valid", "expired", "not_licensed"]
REASONS: Final[tuple[str, ...]] = get_args(Reason)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to a check.

    ``valid_until`` is an instant no later than the first one at which
    ``allowed`` or ``reason`` would change by time alone; callers may cache the
    decision until then. ``revision`` is the data revision it was computed at.
    ``ancestors``: the resource's ancestors at that revision, sorted — a change
    feed entry naming any of them (or the resource) may change the answer.
    """

    allowed: bool = field(metadata=declare(VALUE, {"type": "boolean"}))
    reason: Reason = field(
        metadata=declare(
            VALUE,
            {
                "enum": list(REASONS),
                "description": "granted; or why not: denied (a takedown), territory (licensed,"
                " not here), not_yet_valid, expired, not_licensed",
            },
        )
    )
    grant: str | None = field(
        metadata=declare(
            VALUE,
            {
                "type": "string",
                "pattern": anchored(GRANT_ID_PATTERN),
                "description": "the grant that decided (an allow, or the deny that won)",
            },
            nullable=True,
        )
    )
    valid_until: datetime | None = field(
        metadata=declare(
            TIME,
            {
                **TIME_SCHEMA,
                "description": "the answer may change by time alone from this instant on;"
                " null: no time-based change ahead",
            },
            nullable=True,
        )
    )
    revision: int = field(
        metadata=declare(
            VALUE,
            {
                "type": "integer",
                "minimum": 0,
                "description": "the data revision the answer was computed at",
            },
        )
    )
    attributes: Mapping[str, Any] | None = field(
        default=None,
        metadata=declare(
            OBJECT,
            {"type": "object", "description": "the allowing grant's attributes"},
            nullable=True,
        ),
    )
    ancestors: tuple[str, ...] = field(
        default=(),
        metadata=declare(
            TEXT_TUPLE,
            {
                "type": "array",
                "items": {"type": "string", "pattern": anchored(RESOURCE_PATTERN)},
                "description": "the resource's ancestors at `revision`: a change to any of"
                " them (GET /v1/changes) may change this answer",
            },
        ),
    )

    def to_json(self) -> dict[str, Any]:
        """The decision as the API answers it (``decision_json``)."""
        return decision_json(self)


decision_json: Final = cast(Callable[[Decision], dict[str, Any]], fields.json_form(Decision))
DECISION_FIELDS: Final = fields.field_names(Decision)
DECISION_SCHEMA: Final = fields.value_schema(Decision, description="the answer to one check")


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


__all__ = [
    "DECISION_FIELDS",
    "DECISION_SCHEMA",
    "REASONS",
    "CheckData",
    "Decision",
    "Reason",
    "decision_json",
]
