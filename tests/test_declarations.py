"""The grant and the decision are declared once; every form follows the declaration.

``Grant`` and ``Decision`` are frozen dataclasses whose fields declare their kind
(``entitlements.domain.fields``); the row, record, JSON, cache and OpenAPI forms are
compiled from them. The forms that stay hand-written for speed or for the type
checker (``GrantRow``, the fast validator, the COPY text line, the SDK's
``Decision``, the SDK's identifier patterns) are held to the declaration here: the
same fields, in the same order, each one carried where the declaration puts it.
"""

from __future__ import annotations

import dataclasses
import typing
from datetime import UTC, datetime
from typing import Any

import jsonschema_rs
import pytest

from entitlements.cache import redis as redis_cache
from entitlements.domain import fields
from entitlements.domain import parsers as service_rules
from entitlements.domain.decision import (
    DECISION_FIELDS,
    DECISION_SCHEMA,
    REASONS,
    Decision,
    decision_json,
)
from entitlements.domain.fastpath import _fast_row
from entitlements.domain.grant import (
    GRANT_COLUMN_LIST,
    GRANT_COLUMNS,
    GRANT_FIELDS,
    GRANT_INPUT_SCHEMA,
    GRANT_LAYOUT,
    GRANT_SCHEMA,
    TERRITORY_CODES,
    Grant,
    GrantRow,
    grant_from_cache,
    grant_from_record,
    grant_from_row,
    grant_json,
    grant_row,
    grant_to_cache,
)
from entitlements.domain.validation import grant_from_mapping
from entitlements.store import import_rows, import_writer, records
from entitlements.store.postgres import PostgresStore
from entitlements_client import Decision as SdkDecision
from entitlements_client import _models as sdk_models
from entitlements_client import _questions as sdk_questions

T0 = datetime(2026, 3, 1, tzinfo=UTC)
T1 = datetime(2026, 9, 1, 12, 30, tzinfo=UTC)

# Every field set, none to its default: a form that drops or moves one shows here.
FULL = Grant(
    id="deal-1",
    subject="role:plan:premium",
    resource="release:0602527894567",
    actions=frozenset({"stream", "download"}),
    territories=frozenset({"GB", "IE"}),
    exclude_territories=frozenset({"IE"}),
    valid_from=T0,
    valid_until=T1,
    effect="deny",
    attributes={"quality": "lossless", "bitrate": 1411},
    source="label-feed",
)
# For each field, another value: changing it alone must change that field's place only.
OTHER: dict[str, Any] = {
    "id": "deal-2",
    "subject": "user:alice",
    "resource": "track:USRC17607839",
    "actions": frozenset({"preview"}),
    "territories": frozenset({"*"}),
    "exclude_territories": frozenset({"DE", "FR"}),
    "valid_from": datetime(2025, 1, 1, tzinfo=UTC),
    "valid_until": datetime(2027, 1, 1, tzinfo=UTC),
    "effect": "allow",
    "attributes": {"quality": "hi"},
    "source": "other-feed",
}


def names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def changed_places(a: Any, b: Any) -> list[Any]:
    """Where two forms differ: the indices of two sequences, the keys of two dicts."""
    if isinstance(a, dict):
        assert list(a) == list(b)
        return [k for k in a if a[k] != b[k]]
    assert len(a) == len(b)
    return [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]


def copy_fields(row: GrantRow) -> list[str]:
    text: str = import_rows.copy_text(row)
    return text.split("\t")


def test_the_grant_declaration_lists_every_field_once_in_order() -> None:
    assert names(Grant) == GRANT_COLUMNS
    assert set(OTHER) == set(GRANT_COLUMNS)
    assert frozenset(GRANT_COLUMNS) == GRANT_FIELDS
    assert ", ".join(GRANT_COLUMNS) == GRANT_COLUMN_LIST
    # GrantRow is spelled out for the type checker: one member per field.
    assert len(typing.get_args(GrantRow)) == len(GRANT_COLUMNS)


def test_every_grant_form_lists_the_same_fields_in_the_same_order() -> None:
    assert list(grant_json(FULL)) == list(GRANT_COLUMNS)
    assert list(GRANT_SCHEMA["properties"]) == list(GRANT_COLUMNS)
    assert GRANT_SCHEMA["required"] == list(GRANT_COLUMNS)
    assert list(GRANT_INPUT_SCHEMA["properties"]) == list(GRANT_COLUMNS)
    assert len(grant_row(FULL)) == len(GRANT_COLUMNS)
    assert len(grant_to_cache(FULL)) == len(GRANT_COLUMNS)
    assert len(copy_fields(grant_row(FULL))) == len(GRANT_COLUMNS)
    # The SQL that reads and writes grants, and the import's COPY, name the same columns.
    assert records.GRANT_COLUMNS == GRANT_COLUMN_LIST
    assert GRANT_COLUMNS[1:] == import_writer._DATA_COLUMNS
    assert import_writer._DIRECT_COLUMNS[: len(GRANT_COLUMNS)] == GRANT_COLUMNS


@pytest.mark.parametrize("name", list(OTHER))
def test_each_field_has_its_own_place_in_every_form(name: str) -> None:
    """Change one field: every form changes in that field's place, and only there."""
    other = dataclasses.replace(FULL, **{name: OTHER[name]})
    i = GRANT_COLUMNS.index(name)
    assert changed_places(grant_json(FULL), grant_json(other)) == [name]
    assert changed_places(grant_row(FULL), grant_row(other)) == [i]
    assert changed_places(grant_to_cache(FULL), grant_to_cache(other)) == [i]
    assert changed_places(copy_fields(grant_row(FULL)), copy_fields(grant_row(other))) == [i]


@pytest.mark.parametrize(
    "grant",
    [
        FULL,
        Grant(
            id="g",
            subject="*",
            resource="x:y",
            actions=frozenset({"a"}),
            territories=frozenset({"*"}),
        ),
    ],
    ids=["full", "minimal"],
)
def test_every_form_comes_back_to_the_same_grant(grant: Grant) -> None:
    assert grant_from_row(grant_row(grant)) == grant
    assert grant_from_cache(grant_to_cache(grant)) == grant
    record = {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in zip(GRANT_COLUMNS, grant_row(grant), strict=True)
    }  # a database record: arrays come back as lists
    assert grant_from_record(record) == grant
    # The JSON form is what both validators read back.
    assert grant_from_mapping(grant_json(grant)) == grant
    assert _fast_row(grant_json(grant), None) == grant_row(grant)


def test_the_json_form_is_what_its_schemas_describe() -> None:
    for grant in (FULL, dataclasses.replace(FULL, attributes=None, source=None, valid_from=None)):
        body = grant_json(grant)
        assert jsonschema_rs.Draft202012Validator(GRANT_SCHEMA, validate_formats=True).is_valid(
            body
        )
        assert jsonschema_rs.Draft202012Validator(
            GRANT_INPUT_SCHEMA, validate_formats=True
        ).is_valid(body)
    # The input form: the id may be left out (the URL names it); an unknown key may not.
    del body["id"]
    assert jsonschema_rs.Draft202012Validator(GRANT_INPUT_SCHEMA).is_valid(body)
    assert not jsonschema_rs.Draft202012Validator(GRANT_INPUT_SCHEMA).is_valid(
        {**body, "colour": "red"}
    )


def test_a_cache_entry_of_another_layout_is_never_read() -> None:
    assert redis_cache.FORMAT.endswith(GRANT_LAYOUT)
    longer = [*grant_to_cache(FULL), "one more field"]
    with pytest.raises(ValueError):
        grant_from_cache(longer)
    with pytest.raises(ValueError):
        grant_from_cache(grant_to_cache(FULL)[:-1])


def test_a_field_added_to_the_declaration_reaches_every_form() -> None:
    """The one edit: a scratch copy of Grant with one more declared field."""
    extra = (
        "territory_note",
        str | None,
        dataclasses.field(
            default=None,
            metadata=fields.declare(fields.VALUE, {"type": "string"}, nullable=True),
        ),
    )
    copied = [(f.name, f.type, f) for f in dataclasses.fields(Grant)]
    scratch = dataclasses.make_dataclass("Scratch", [*copied, extra], frozen=True)
    value = scratch(**{n: getattr(FULL, n) for n in GRANT_COLUMNS}, territory_note="not IE")
    assert fields.json_form(scratch)(value)["territory_note"] == "not IE"
    assert fields.row_form(scratch)(value)[-1] == "not IE"
    assert fields.from_row_form(scratch)(fields.row_form(scratch)(value)) == value
    assert fields.cache_form(scratch)(value)[-1] == "not IE"
    assert fields.from_cache_form(scratch)(fields.cache_form(scratch)(value)) == value
    assert fields.columns(scratch).endswith(", source, territory_note")
    assert "territory_note" in fields.value_schema(scratch)["properties"]
    assert "territory_note" in fields.input_schema(scratch)["properties"]
    assert fields.layout(scratch) != GRANT_LAYOUT  # and so the cache's keys change


def test_an_undeclared_field_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class Loose:
        name: str

    with pytest.raises(TypeError, match=r"Loose\.name is not declared"):
        fields.json_form(Loose)


async def test_the_grants_table_has_every_declared_column(store: PostgresStore) -> None:
    stored = await store.pool.fetch(
        """SELECT column_name FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name = 'grants'"""
    )
    assert set(GRANT_COLUMNS) <= {r["column_name"] for r in stored}


# --- the decision -------------------------------------------------------------

DECISIONS = [
    Decision(True, "granted", "deal-1", T1, 42, {"quality": "lossless"}, ("label:acme",)),
    Decision(False, "territory", None, None, 7),
    Decision(False, "denied", "takedown-9", None, 2**53, None, ("label:a", "release:b")),
]


def test_the_decision_declaration_and_its_forms_agree() -> None:
    assert names(Decision) == DECISION_FIELDS
    assert list(DECISION_SCHEMA["properties"]) == list(DECISION_FIELDS)
    validator = jsonschema_rs.Draft202012Validator(DECISION_SCHEMA, validate_formats=True)
    for decision in DECISIONS:
        body = decision_json(decision)
        assert list(body) == list(DECISION_FIELDS)
        assert body == decision.to_json()
        assert validator.is_valid(body), body


def test_the_sdk_reads_the_decision_the_service_writes() -> None:
    """The SDK cannot import the service: its Decision is held to the service's here."""
    assert names(SdkDecision) == DECISION_FIELDS
    assert set(sdk_models.REASONS) == set(REASONS)
    assert typing.get_args(sdk_models.Reason) == REASONS
    validator = jsonschema_rs.Draft202012Validator(DECISION_SCHEMA, validate_formats=True)
    for decision in DECISIONS:
        body = decision_json(decision)
        read = SdkDecision.from_json(body)
        assert read.to_json() == body
        assert validator.is_valid(read.to_json())
        for name in DECISION_FIELDS:
            mine, theirs = getattr(decision, name), getattr(read, name)
            assert (dict(theirs) if name == "attributes" and theirs else theirs) == mine


# --- the SDK's copies of the identifier rules ------------------------------------


def test_the_sdk_checks_identifiers_by_the_service_s_rules() -> None:
    """The SDK refuses a bad question before it joins a batch, by the service's rules."""
    assert sdk_questions.RESOURCE_RE.pattern == service_rules.RESOURCE_PATTERN
    assert sdk_questions.ACTION_RE.pattern == service_rules.ACTION_PATTERN
    assert sdk_questions.USER_RE.pattern == service_rules.USER_PATTERN
    assert sdk_questions.ROLE_RE.pattern == service_rules.ROLE_PATTERN
    assert sdk_questions.MAX_ROLES == service_rules.MAX_ROLES
    # The territory: the SDK checks the shape; every assigned code has it.
    assert all(sdk_questions.TERRITORY_RE.fullmatch(code) for code in TERRITORY_CODES)
