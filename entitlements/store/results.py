"""What the store's calls return: plain values, no driver.

The ports (``entitlements.service.ports``) name these types, so the service can
use them without importing a store adapter (or asyncpg).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from entitlements.domain.model import Change

MAX_CHANGE_KEYS: Final = 10_000
"""A write touching more keys than this records one ('all', '*') change: caches drop everything."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A catalogue write: the revision after it, whether it changed anything, and
    whether it created what it wrote."""

    revision: int
    changed: bool
    created: bool = False


@dataclass(frozen=True, slots=True)
class ChangePage:
    """A page of the change log: its entries, the revision it reaches (every change up
    to it is in this page or an earlier one), and whether more follow at once."""

    changes: list[Change]
    reached: int
    more: bool


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One recorded admin change (issue 15): ``before``/``after`` are the JSON forms of
    the grant or resource (None: it did not exist / was deleted); ``detail`` the rest."""

    id: int
    at: datetime
    actor: str
    action: str
    resource: str | None
    grant: str | None
    before: Any
    after: Any
    detail: Any


__all__ = ["MAX_CHANGE_KEYS", "AuditEntry", "ChangePage", "WriteResult"]
