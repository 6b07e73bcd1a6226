"""Grants in and out of Postgres: the ``grants`` columns, and a row read back as a ``Grant``.

Both follow the grant's declaration (``entitlements.domain.grant``): the write side
is ``grant_row`` (a grant in its normal form, in ``GRANT_COLUMNS`` order); every read
of a grant goes through ``grant_from_record``.
"""

from __future__ import annotations

from typing import Final

from entitlements.domain.grant import GRANT_COLUMN_LIST, grant_from_record

GRANT_COLUMNS: Final = GRANT_COLUMN_LIST
"""A grant's columns, in ``grant_row``'s order (the declaration's)."""

__all__ = ["GRANT_COLUMNS", "grant_from_record"]
