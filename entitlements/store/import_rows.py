"""What an import hands the store: grant rows as lines of Postgres' COPY text
format with their change-feed keys, resource rows, and the tally the store's
writer reports to.

Bulk import renders every valid row here, in the process that read it (the
import's reader thread or a worker process), so the store's writer only
concatenates lines. Nothing here touches a connection (no driver is imported):
the reader's side of an import uses it without loading the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol, cast

import orjson

from entitlements.domain.model import GrantRow

ResourceRow = tuple[str, list[str], int, bool]
"""A resource as staged: its id, its parents, its line, and True (a valid row)."""


def row_tail(revision: int) -> str:
    """The last field of a grants line and its end: the revision an import expects."""
    return f"\t{revision}\n"


def change_key(subject: str, resource: str) -> tuple[str, str]:
    """A grant's change-feed entry (``store.changes.grant_changes``' rule)."""
    if subject.startswith("user:"):
        return ("user", subject[5:])
    return ("resource", resource)


_ARRAYS: Final[dict[tuple[str, ...], str]] = {}


def _copy_array(items: tuple[str, ...]) -> str:
    """An array literal. Actions and territory codes are validated identifiers (no quote,
    backslash, comma or space); each is quoted anyway, so an action named "null" stays a
    string. A feed repeats its lists: the literals are remembered (a bounded memo)."""
    text = _ARRAYS.get(items)
    if text is None:
        text = '{"' + '","'.join(items) + '"}' if items else "{}"
        if len(_ARRAYS) >= 4096:
            _ARRAYS.clear()
        _ARRAYS[items] = text
    return text


def copy_text(row: GrantRow, last: str = "") -> str:
    """A grant row as fields of a COPY text line, tab-separated, in ``id, _DATA`` order,
    then ``last`` (more fields and the newline).

    Only ``attributes`` needs escaping: ids, subjects, resources, actions, codes and
    sources are validated identifiers without tabs, newlines or backslashes (the
    validator's patterns; a test holds them to it), and JSON text escapes control
    characters itself, which leaves its backslashes to double.
    """
    gid, subject, resource, actions, territories, excludes, start, end, effect, attrs, source = row
    return (
        f"{gid}\t{subject}\t{resource}\t{_copy_array(actions)}\t{_copy_array(territories)}"
        f"\t{_copy_array(excludes)}\t{_NULL if start is None else start.isoformat()}"
        f"\t{_NULL if end is None else end.isoformat()}\t{effect}"
        f"\t{_NULL if attrs is None else orjson.dumps(attrs).decode().replace(_BS, _BS2)}"
        f"\t{_NULL if source is None else source}{last}"
    )


_NULL: Final = "\\N"
_BS: Final = "\\"
_BS2: Final = "\\\\"


@dataclass(slots=True)
class GrantRows:
    """Grant rows on their way to Postgres, column by column (cheap to extend, to send
    between processes and to join): for each, its id, line, COPY text line for grants
    (None: a rejected row, kept for its id) and change-feed key (None once the import has
    stopped counting keys)."""

    ids: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    texts: list[str | None] = field(default_factory=list)
    keys: list[tuple[str, str] | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, gid: str, line: int, text: str | None, key: tuple[str, str] | None) -> None:
        self.ids.append(gid)
        self.lines.append(line)
        self.texts.append(text)
        self.keys.append(key)

    def extend(self, other: GrantRows) -> None:
        self.ids.extend(other.ids)
        self.lines.extend(other.lines)
        self.texts.extend(other.texts)
        self.keys.extend(other.keys)

    def prepare(self) -> Prepared:
        """What the writer needs to know of a finished batch before it may COPY it (worked
        out off the writer's path, so Postgres does not wait between batches)."""
        ids = self.ids
        texts = self.texts
        clean = None not in texts and len(set(ids)) == len(ids)
        payload = "".join(cast(list[str], texts)).encode() if clean else None
        return Prepared(min(ids), max(ids), payload)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch's least and greatest id and, when every row is valid and its ids are
    unique within the batch, its rows as one COPY text payload."""

    first: str
    last: str
    payload: bytes | None


class ImportTally(Protocol):
    """The import's bookkeeping, as the store's writer reports to it: what it wrote,
    the duplicate ids it met, and the change-feed entries of what it touched.

    ``failed``: a strict import met a bad row (nothing will land; the writer stops
    writing). ``strict``: a bad row fails the import (not ``skip_invalid``).
    """

    strict: bool
    failed: bool

    def wrote(self, inserted: int, updated: int) -> None: ...

    def again(self, line: int, record_id: str, first: int | None, kind: str = "grant") -> None:
        """The file names ``record_id`` a second time (``first``: the earlier line)."""

    def add_keys(self, encoded: Iterable[str]) -> None:
        """Change-feed entries as SQL makes them: ``'user <id>'`` or ``'resource <id>'``."""

    def add_grant_keys(self, rows: Iterable[tuple[str, str] | None]) -> None:
        """The change-feed entries (``GrantRows.keys``) of grants written straight in."""

    def key_limit(self) -> int:
        """How many change-feed entries to ask SQL for (0: no more are wanted)."""


__all__ = [
    "GrantRows",
    "ImportTally",
    "Prepared",
    "ResourceRow",
    "change_key",
    "copy_text",
    "row_tail",
]
