"""DDEX ERN deal messages as one import: order, the stale rule, batches, the report.

``DdexImport`` runs inside an import's transaction (``ImportService.run_ddex``, or
``run`` with ``format="ddex"`` for one uploaded message)::

    sources -> headers (read_header: each file up to its MessageHeader, in a thread)
            -> ordered by MessageCreatedDateTime (ties keep the order given)
            -> one message at a time (read_message, in a thread: memory follows
               one message's releases, never the batch)
            -> batches of messages -> the stale rule -> ReleaseEntry s
            -> DdexWriter.apply (store.ddex: replace-per-release in SQL)
            -> the graph check of the new track links, the report

The rules (the issue's, written down here):

- **Replace per release**: a NewReleaseMessage is the whole truth, for its sender,
  about the deals of each release it carries (a track release's deals are its
  track's), and about which tracks each release holds; a PurgeReleaseMessage
  removes a release's grants and track links (the rights become
  ``not_licensed``, not a deny); a track release that no release of its sender
  carries any more loses its grants. ERN 3 ``TakeDown`` is read as a release
  without deals (``entitlements.ddex``).
- **Stale**: per sender and release (matched by any of its ids), the
  ``MessageCreatedDateTime`` last applied is kept; a message older than that is
  skipped for that release and reported stale; one as old is applied again (a
  message applied twice changes nothing). A ``MessageId`` is not a version.
- **TestMessage**: read and reported, never applied.
- Two releases of one message may not share an id, nor name the same stored
  release: the message is refused, naming both.

Messages are applied in batches (up to ``BATCH_MESSAGES`` messages or
``limits.batch_rows`` grants), set-based, with the same outcome as one at a time:
a message that names a release the batch already names starts a new batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Final

from entitlements.ddex import (
    DEFAULT_MAPPING,
    DdexMapping,
    DdexMessage,
    DdexRelease,
    MessageHeader,
    PurgedRelease,
    load_mapping,
    read_header,
    read_message,
)
from entitlements.domain.model import GrantRow, grant_row_from_mapping
from entitlements.errors import FieldError, InvalidInputError
from entitlements.service.ddex_report import DdexSummary
from entitlements.service.import_run import ImportRun, OnProgress, Ticker
from entitlements.service.ports import DdexWriter, ImportSession
from entitlements.store.ddex_rows import KnownRelease, ReleaseEntry

BATCH_MESSAGES: Final = 250
"""Most messages applied in one batch."""
READ_AHEAD: Final = 16
"""Messages read ahead while a batch is applied."""

Key = tuple[str, str]
"""(sender, release id in resource form)"""
_Read = tuple[int, "MessageSource", DdexMessage]


def mapping_for(path: Path | None) -> DdexMapping:
    """The mapping in force: the file's (``--mapping``, ``ENTITLEMENTS_DDEX_MAPPING``), or
    the defaults. ``InvalidInputError`` names the file and the key."""
    return DEFAULT_MAPPING if path is None else load_mapping(path)


@dataclass(frozen=True, slots=True)
class MessageSource:
    """One message to import: a file (``path``) or an upload spooled to ``file``."""

    name: str
    path: Path | None = None
    file: IO[bytes] | None = None
    size: int = 0

    def open(self) -> Path | IO[bytes]:
        """What the reader reads, from its start (an upload is read twice: header, message)."""
        if self.file is not None:
            self.file.seek(0)
            return self.file
        assert self.path is not None
        return self.path


@dataclass(slots=True)
class _Pending:
    number: int
    message: DdexMessage
    keys: frozenset[Key]


@dataclass(slots=True)
class _Batch:
    pending: list[_Pending] = field(default_factory=list)
    keys: set[Key] = field(default_factory=set)
    grants: int = 0

    def fits(self, item: _Pending, max_grants: int) -> bool:
        if not self.pending:
            return True
        return (
            len(self.pending) < BATCH_MESSAGES
            and self.grants + item.message.grant_count <= max_grants
            and self.keys.isdisjoint(item.keys)
        )

    def add(self, item: _Pending) -> None:
        self.pending.append(item)
        self.keys |= item.keys
        self.grants += item.message.grant_count

    def drop(self, count: int) -> None:
        rest = self.pending[count:]
        self.pending, self.keys, self.grants = [], set(), 0
        for item in rest:
            self.add(item)


@dataclass(slots=True)
class Plan:
    """What a batch applies: entries of the first ``taken`` messages (the next one names
    a stored release one of them names: it waits for the next batch)."""

    entries: list[ReleaseEntry] = field(default_factory=list)
    taken: int = 0
    stale: dict[int, list[tuple[str, datetime]]] = field(default_factory=dict)
    grants: dict[int, int] = field(default_factory=dict)


def message_keys(message: DdexMessage) -> frozenset[Key]:
    """Every (sender, id) the message names its releases by; two releases sharing one
    are refused."""
    sender = message.header.sender
    owner: dict[str, str] = {}
    for item in _items(message):
        label = item.reference if isinstance(item, DdexRelease) else item.key
        for alias in item.aliases:
            other = owner.setdefault(alias, label)
            if other != label:
                raise InvalidInputError(
                    FieldError(
                        f"{message.name}:ReleaseList",
                        f"releases {other} and {label} are both {alias}: a message carries a"
                        " release once",
                    )
                )
    return frozenset((sender, alias) for alias in owner)


def _items(message: DdexMessage) -> tuple[DdexRelease | PurgedRelease, ...]:
    """A message's releases (a NewReleaseMessage) or purged releases (a purge)."""
    return (*message.releases, *message.purged)


def plan(pending: Sequence[_Pending], known: Mapping[Key, KnownRelease]) -> Plan:
    """The stale rule and the entries of a batch, message by message in order."""
    out = Plan()
    used: set[int] = set()
    for item in pending:
        message, header = item.message, item.message.header
        items = _items(message)
        matches = [_matches(header.sender, i.aliases, known) for i in items]
        records = [m[0].record if m else None for m in matches]
        named = {k.record for m in matches for k in m}
        if out.taken and not named.isdisjoint(used):
            break
        _one_each(message, matches)
        used |= named
        stale = [bool(m) and max(k.created for k in m) > header.created for m in matches]
        out.stale[item.number] = [
            (i.key, max(k.created for k in m))
            for i, m, old in zip(items, matches, stale, strict=True)
            if old
        ]
        first = len(out.entries)
        index: dict[int, int] = {}  # position in the message -> index in the batch
        for pos, (i, m, old) in enumerate(zip(items, matches, stale, strict=True)):
            if old:
                continue
            index[pos] = first + len(index)
            out.entries.append(_entry(item.number, header, i, tuple(k.record for k in m)))
        out.grants[item.number] = sum(len(e.grants) for e in out.entries[first:])
        _link_albums(message, out.entries, index, records)
        out.taken += 1
    return out


def _matches(
    sender: str, aliases: Sequence[str], known: Mapping[Key, KnownRelease]
) -> list[KnownRelease]:
    found = {k.record: k for a in aliases if (k := known.get((sender, a))) is not None}
    return [found[r] for r in sorted(found)]


def _one_each(message: DdexMessage, matches: list[list[KnownRelease]]) -> None:
    """Two releases of one message naming one stored release: refused."""
    seen: dict[int, str] = {}
    items = _items(message)
    for item, found in zip(items, matches, strict=True):
        for k in found:
            other = seen.setdefault(k.record, item.key)
            if other != item.key:
                raise InvalidInputError(
                    FieldError(
                        f"{message.name}:ReleaseList",
                        f"releases {other} and {item.key} are one release this sender named"
                        " by both ids before: a message carries a release once",
                    )
                )


def _entry(
    number: int, header: MessageHeader, item: DdexRelease | PurgedRelease, records: tuple[int, ...]
) -> ReleaseEntry:
    if isinstance(item, DdexRelease):
        grants = tuple(_row(g) for g in item.grants)
        return ReleaseEntry(
            message=number,
            kind="new",
            sender=header.sender,
            key=item.key,
            aliases=item.aliases,
            created=header.created,
            message_id=header.message_id,
            resource=item.resource,
            tracks=item.tracks,
            track_release=item.track_release,
            records=records,
            grants=grants,
        )
    return ReleaseEntry(
        message=number,
        kind="purge",
        sender=header.sender,
        key=item.key,
        aliases=item.aliases,
        created=header.created,
        message_id=header.message_id,
        records=records,
    )


def _row(grant: dict[str, object]) -> GrantRow:
    """A grant the reader made, through the API's one validator (it always passes)."""
    return grant_row_from_mapping(grant)


def _link_albums(
    message: DdexMessage,
    entries: list[ReleaseEntry],
    index: dict[int, int],
    records: list[int | None],
) -> None:
    """Which releases of the message carry each of its track releases (those listing its
    track): by index for the ones applied, by record for the stale ones."""
    releases = message.releases
    albums = [p for p, r in enumerate(releases) if not r.track_release]
    for pos, release in enumerate(releases):
        if not release.track_release or release.resource is None:
            continue
        carriers = [a for a in albums if release.resource in releases[a].tracks]
        if pos in index:
            entry = entries[index[pos]]
            entries[index[pos]] = replace(
                entry,
                albums=tuple(index[a] for a in carriers if a in index),
                album_records=tuple(
                    r for a in carriers if a not in index and (r := records[a]) is not None
                ),
            )
        record = records[pos]
        if record is None:
            continue
        for a in carriers:
            if a in index:
                entry = entries[index[a]]
                entries[index[a]] = replace(entry, carried=(*entry.carried, record))


class DdexImport:
    """One DDEX import's reading and applying, inside the import's transaction."""

    def __init__(
        self,
        session: ImportSession,
        run: ImportRun,
        mapping: DdexMapping,
        progress: OnProgress = None,
    ) -> None:
        self.session = session
        self.run = run
        self.mapping = mapping
        self.progress = progress
        self.summary = DdexSummary()
        run.report.ddex = self.summary
        self.names: list[str] = []

    async def load(self, sources: Sequence[MessageSource]) -> None:
        """Read, order and apply the messages; graph problems fail the import."""
        run = self.run
        tick = Ticker(run, self.progress)
        ordered = await self._order(sources)
        self.names = [s.name for s in ordered]
        writer = self.session.ddex()
        batch = _Batch()
        # The next messages are read (in a thread) while Postgres applies a batch.
        queue: asyncio.Queue[_Read | BaseException | None] = asyncio.Queue(READ_AHEAD)
        reader = asyncio.create_task(self._read(ordered, queue))
        # A full batch is applied while the next one is read and gathered (one at a time).
        applying: asyncio.Task[None] | None = None
        try:
            while (read := await queue.get()) is not None:
                if isinstance(read, BaseException):
                    raise read
                number, source, message = read
                run.bytes += source.size
                run.records += message.grant_count
                self.summary.read(number, message)
                if not message.header.test:
                    item = _Pending(number, message, message_keys(message))
                    if not batch.fits(item, run.limits.batch_rows):
                        if applying is not None:
                            await applying
                        applying = asyncio.create_task(self._flush(writer, batch))
                        batch = _Batch()
                    batch.add(item)
                tick()
            if applying is not None:
                await applying
            await self._flush(writer, batch)
        finally:
            for task in (reader, applying):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
        for line, problem in await self.session.graph_problems(run.limits.max_errors):
            name = self.names[line - 1] if 0 < line <= len(self.names) else "a message"
            run.add_errors(None, [FieldError(f"{name}:parents", problem)], row=False)
            run.failed = True
        tick.done()

    async def _read(
        self, ordered: list[MessageSource], queue: asyncio.Queue[_Read | BaseException | None]
    ) -> None:
        """Read the messages in order into ``queue``; then None, or the error that stopped it."""
        try:
            for number, source in enumerate(ordered, start=1):
                message = await asyncio.to_thread(
                    read_message, source.open(), self.mapping, name=source.name
                )
                await queue.put((number, source, message))
        except Exception as exc:  # the consumer raises it, in its place in the order
            await queue.put(exc)
            return
        await queue.put(None)

    async def _order(self, sources: Sequence[MessageSource]) -> list[MessageSource]:
        """The sources by MessageCreatedDateTime (ties keep the order given)."""
        if len(sources) < 2:
            return list(sources)
        created: list[datetime] = []
        for source in sources:
            header = await asyncio.to_thread(read_header, source.open(), name=source.name)
            created.append(header.created)
        order = sorted(range(len(sources)), key=lambda i: created[i])
        return [sources[i] for i in order]

    async def _flush(self, writer: DdexWriter, batch: _Batch) -> None:
        run, summary = self.run, self.summary
        while batch.pending:
            known = await writer.known(sorted(batch.keys))
            planned = plan(batch.pending, known)
            for item in batch.pending[: planned.taken]:
                grants = planned.grants[item.number]
                summary.planned(item.number, item.message, planned.stale[item.number], grants)
                run.report.counts.rows += grants
            applied = await writer.apply(planned.entries, run.key_limit())
            for number, changes in applied.messages.items():
                summary.applied(number, changes)
                run.wrote(changes.inserted, changes.updated)
                run.report.counts.deleted += changes.deleted
            run.add_keys(applied.keys)
            run.loaded += sum(planned.grants.values())
            batch.drop(planned.taken)


__all__ = [
    "BATCH_MESSAGES",
    "DdexImport",
    "MessageSource",
    "Plan",
    "mapping_for",
    "message_keys",
    "plan",
]
