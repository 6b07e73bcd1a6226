"""The DDEX part of an import's report: totals, stale releases, and a line per message.

``ImportReport.ddex`` holds a ``DdexSummary`` for a DDEX import (None otherwise);
its JSON form is the report's ``ddex`` object (``POST``/``GET /v1/imports``,
``entitlements import --json``)::

    "ddex": {"messages": 2, "test_messages": 0, "stale_messages": 1,
             "releases": 3, "deals": 6, "grants": 4,
             "skipped_deals": {"channel": 1}, "skipped_resources": {"video": 1},
             "links_added": 2, "links_removed": 0,
             "stale": [{"message": "old.xml", "message_id": "…", "release": "release:…",
                        "created": "…", "applied": "…"}],
             "stale_count": 1,
             "lines": [{"message": "album.xml", "status": "applied", …}, …]}

A message's ``status``: ``applied`` (every release), ``stale`` (none: each had a
newer message applied already), ``partly_stale``, or ``test`` (a TestMessage:
read and reported, never applied). The grant counts of a line (``inserted``,
``updated``, ``unchanged``, ``deleted``) add up to the report's ``counts``.
At most ``MAX_LINES`` lines and ``MAX_STALE`` stale releases are listed; the
totals count them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from entitlements.ddex import DdexMessage
from entitlements.domain.model import format_time
from entitlements.store.ddex_rows import MessageChanges

MAX_LINES: Final = 1000
MAX_STALE: Final = 1000

ROOT_NAMES: Final = {"new": "NewReleaseMessage", "purge": "PurgeReleaseMessage"}


@dataclass(slots=True)
class MessageLine:
    """One message in the report."""

    message: str
    message_id: str
    sender: str
    type: str
    version: str
    created: datetime
    test: bool
    releases: int
    deals: int
    grants: int
    skipped_deals: dict[str, int]
    status: str = "read"
    stale: int = 0
    applied_grants: int = 0
    changes: MessageChanges = field(default_factory=MessageChanges)

    def to_json(self) -> dict[str, Any]:
        c = self.changes
        return {
            "message": self.message,
            "message_id": self.message_id,
            "sender": self.sender,
            "type": self.type,
            "version": self.version,
            "created": format_time(self.created),
            "test": self.test,
            "status": self.status,
            "releases": self.releases,
            "deals": self.deals,
            "grants": self.grants,
            "inserted": c.inserted,
            "updated": c.updated,
            "unchanged": self.applied_grants - c.inserted - c.updated,
            "deleted": c.deleted,
            "links_added": c.links_added,
            "links_removed": c.links_removed,
            "stale": self.stale,
            "skipped_deals": self.skipped_deals,
        }


@dataclass(slots=True)
class DdexSummary:
    """What the messages of an import said and what applying them did."""

    messages: int = 0
    test_messages: int = 0
    stale_messages: int = 0
    releases: int = 0
    deals: int = 0
    grants: int = 0
    skipped_deals: dict[str, int] = field(default_factory=dict)
    skipped_resources: dict[str, int] = field(default_factory=dict)
    links_added: int = 0
    links_removed: int = 0
    stale: list[dict[str, Any]] = field(default_factory=list)
    stale_count: int = 0
    lines: dict[int, MessageLine] = field(default_factory=dict)

    def read(self, number: int, message: DdexMessage) -> None:
        """A message was read (``number``: its place in the import, from 1)."""
        header = message.header
        skipped = message.skipped_deals()
        self.messages += 1
        self.test_messages += header.test
        releases = len(message.releases) + len(message.purged)
        self.releases += releases
        self.deals += message.deal_count
        self.grants += message.grant_count
        _add(self.skipped_deals, skipped)
        _add(self.skipped_resources, message.skipped_resources)
        if len(self.lines) < MAX_LINES:
            self.lines[number] = MessageLine(
                message=message.name,
                message_id=header.message_id,
                sender=header.sender,
                type=ROOT_NAMES[header.kind],
                version=header.version,
                created=header.created,
                test=header.test,
                releases=releases,
                deals=message.deal_count,
                grants=message.grant_count,
                skipped_deals=skipped,
                status="test" if header.test else "read",
            )

    def planned(
        self, number: int, message: DdexMessage, stale: list[tuple[str, datetime]], grants: int
    ) -> None:
        """Which of a message's releases are stale (key, the time applied before), and how
        many grants the others carry."""
        total = len(message.releases) + len(message.purged)
        status = "applied" if not stale else "stale" if len(stale) == total else "partly_stale"
        self.stale_messages += status == "stale"
        self.stale_count += len(stale)
        header = message.header
        for key, applied in stale:
            if len(self.stale) < MAX_STALE:
                self.stale.append(
                    {
                        "message": message.name,
                        "message_id": header.message_id,
                        "release": key,
                        "created": format_time(header.created),
                        "applied": format_time(applied),
                    }
                )
        line = self.lines.get(number)
        if line is not None:
            line.status = status
            line.stale = len(stale)
            line.applied_grants = grants

    def applied(self, number: int, changes: MessageChanges) -> None:
        self.links_added += changes.links_added
        self.links_removed += changes.links_removed
        line = self.lines.get(number)
        if line is not None:
            c = line.changes
            c.inserted += changes.inserted
            c.updated += changes.updated
            c.deleted += changes.deleted
            c.links_added += changes.links_added
            c.links_removed += changes.links_removed

    def rolled_back(self) -> None:
        """Nothing landed: no message changed anything."""
        self.links_added = self.links_removed = 0
        for line in self.lines.values():
            line.changes = MessageChanges()
            line.applied_grants = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "test_messages": self.test_messages,
            "stale_messages": self.stale_messages,
            "releases": self.releases,
            "deals": self.deals,
            "grants": self.grants,
            "skipped_deals": dict(sorted(self.skipped_deals.items())),
            "skipped_resources": dict(sorted(self.skipped_resources.items())),
            "links_added": self.links_added,
            "links_removed": self.links_removed,
            "stale": self.stale,
            "stale_count": self.stale_count,
            "lines": [self.lines[n].to_json() for n in sorted(self.lines)],
        }


def _add(into: dict[str, int], counts: dict[str, int] | Any) -> None:
    for key, n in counts.items():
        into[key] = into.get(key, 0) + n


__all__ = ["MAX_LINES", "MAX_STALE", "DdexSummary", "MessageLine"]
