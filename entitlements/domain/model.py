"""The domain's values and validators under one name (kept for existing imports).

The concepts live in their own modules; import from them in new code:

- ``entitlements.domain.parsers``     identifiers: patterns, limits, one parser each
- ``entitlements.domain.fields``      how a record is declared once and its forms compiled
- ``entitlements.domain.grant``       ``Grant`` (the declaration) and its row, JSON, cache forms
- ``entitlements.domain.decision``    ``Decision`` (declared once) and ``CheckData``
- ``entitlements.domain.resource``    ``Resource`` and its validator
- ``entitlements.domain.change``      ``Change`` (one change-log entry)
- ``entitlements.domain.validation``  the full grant validator
- ``entitlements.domain.fastpath``    the fast grant validator bulk import relies on
"""

from __future__ import annotations

from entitlements.domain.change import Change
from entitlements.domain.decision import CheckData, Decision, Reason
from entitlements.domain.fastpath import _fast_grant, _fast_row
from entitlements.domain.grant import (
    GRANT_FIELDS,
    Effect,
    Grant,
    GrantRow,
    grant_from_record,
    grant_from_row,
    grant_row,
)
from entitlements.domain.parsers import (
    MAX_ACTIONS,
    MAX_ATTRIBUTES_BYTES,
    MAX_DEPTH,
    MAX_ID_LENGTH,
    MAX_PARENTS,
    MAX_RESOURCE_LENGTH,
    MAX_SOURCE_LENGTH,
    MAX_SUBJECT_LENGTH,
    format_time,
    parse_action,
    parse_grant_id,
    parse_resource,
    parse_revision,
    parse_role,
    parse_subject,
    parse_territory,
    parse_time,
    parse_user_id,
    resource_type,
)
from entitlements.domain.resource import Resource, resource_from_mapping
from entitlements.domain.validation import (
    _grant_from_mapping,
    grant_from_mapping,
    grant_row_from_mapping,
)

__all__ = [
    "GRANT_FIELDS",
    "MAX_ACTIONS",
    "MAX_ATTRIBUTES_BYTES",
    "MAX_DEPTH",
    "MAX_ID_LENGTH",
    "MAX_PARENTS",
    "MAX_RESOURCE_LENGTH",
    "MAX_SOURCE_LENGTH",
    "MAX_SUBJECT_LENGTH",
    "Change",
    "CheckData",
    "Decision",
    "Effect",
    "Grant",
    "GrantRow",
    "Reason",
    "Resource",
    "_fast_grant",
    "_fast_row",
    "_grant_from_mapping",
    "format_time",
    "grant_from_mapping",
    "grant_from_record",
    "grant_from_row",
    "grant_row",
    "grant_row_from_mapping",
    "parse_action",
    "parse_grant_id",
    "parse_resource",
    "parse_revision",
    "parse_role",
    "parse_subject",
    "parse_territory",
    "parse_time",
    "parse_user_id",
    "resource_from_mapping",
    "resource_type",
]
