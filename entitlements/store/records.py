"""Grants in and out of Postgres: the ``grants`` columns, and a row read back as a ``Grant``.

The write side is ``domain.model.grant_row`` (a grant in its normal form, in
``GRANT_COLUMNS`` order); every read of a grant goes through ``grant_from_record``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from entitlements.domain.model import Grant

GRANT_COLUMNS: Final = (
    "id, subject, resource, actions, territories, exclude_territories,"
    " valid_from, valid_until, effect, attributes, source"
)
"""A grant's columns, in ``grant_row``'s order."""


def grant_from_record(r: Mapping[str, Any]) -> Grant:
    return Grant(
        id=r["id"],
        subject=r["subject"],
        resource=r["resource"],
        actions=frozenset(r["actions"]),
        territories=frozenset(r["territories"]),
        exclude_territories=frozenset(r["exclude_territories"]),
        valid_from=r["valid_from"],
        valid_until=r["valid_until"],
        effect=r["effect"],
        attributes=r["attributes"],
        source=r["source"],
    )


__all__ = ["GRANT_COLUMNS", "grant_from_record"]
