"""What the store's calls return: plain values, no driver.

The ports (``entitlements.service.ports``) name these types, so the service can
use them without importing a store adapter (or asyncpg).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

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


__all__ = ["MAX_CHANGE_KEYS", "ChangePage", "WriteResult"]
