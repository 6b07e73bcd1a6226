"""What a DDEX import hands the store, and what the store answers: plain values.

The import service (``entitlements.service.ddex_import``) reads the messages and
decides, per release, what is applied (``ReleaseEntry``) and what is stale; the
store (``entitlements.store.ddex``) applies a batch of entries in SQL. Nothing
here touches a connection (no driver is imported).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from entitlements.domain.model import GrantRow


@dataclass(frozen=True, slots=True)
class KnownRelease:
    """A release a sender's earlier messages told us about: its record (the
    ``ddex_releases`` row) and the ``MessageCreatedDateTime`` last applied to it."""

    record: int
    created: datetime


@dataclass(frozen=True, slots=True)
class ReleaseEntry:
    """One release of one message, to apply: the whole truth about its deals (and,
    for a release, about the tracks it holds) from its sender.

    - ``message``: the message's number in the import (1-based, in the order applied);
      counts and graph problems come back by it.
    - ``kind``: ``new`` (a NewReleaseMessage: ``grants`` replace the release's grants,
      ``tracks`` its track links) or ``purge`` (everything of it goes).
    - ``records``: the stored records it matched by any of its ``aliases`` (empty: a
      release not seen before); the first is kept, the others are folded into it.
    - ``albums``: for a track release, the indexes (in the batch) of the releases of
      its message that list its track; ``album_records``: the records of such
      releases that are not in the batch (their part of the message was stale).
      Neither: it is its own release (delivered on its own).
    - ``carried``: for a release, the records of its message's track releases that
      list it, stale ones included (they stay its track releases).
    """

    message: int
    kind: Literal["new", "purge"]
    sender: str
    key: str
    aliases: tuple[str, ...]
    created: datetime
    message_id: str
    resource: str | None = None
    tracks: tuple[str, ...] = ()
    track_release: bool = False
    records: tuple[int, ...] = ()
    albums: tuple[int, ...] = ()
    album_records: tuple[int, ...] = ()
    carried: tuple[int, ...] = ()
    grants: tuple[GrantRow, ...] = ()


@dataclass(slots=True)
class MessageChanges:
    """What applying one message changed: grants and track links."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    links_added: int = 0
    links_removed: int = 0


@dataclass(slots=True)
class AppliedBatch:
    """What a batch changed, by message number, and the change-feed entries of it
    (``'resource <id>'``/``'user <id>'``, as ``ImportTally.add_keys`` takes them)."""

    messages: dict[int, MessageChanges] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)

    def of(self, message: int) -> MessageChanges:
        return self.messages.setdefault(message, MessageChanges())


__all__ = ["AppliedBatch", "KnownRelease", "MessageChanges", "ReleaseEntry"]
