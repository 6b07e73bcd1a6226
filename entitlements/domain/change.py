"""One entry of the change log."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the change log: at ``revision``, ``kind`` ``key`` changed."""

    revision: int
    kind: str
    key: str


__all__ = ["Change"]
