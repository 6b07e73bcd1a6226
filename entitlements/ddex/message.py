"""Read ERN messages: one pass over the XML, records in, a ``DdexMessage`` out.

The schema orders a message as header, resources, releases, deals, so one
streamed pass resolves everything: a release's resources are known when the
release is read, a deal's releases when the deal is read.

A deal that refers to a release the message does not carry, a release that
refers to a resource it does not carry, and every bad value are errors; the
message is refused whole (``InvalidInputError``, every problem named).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Final, cast

from entitlements.ddex.dates import DateError, instant
from entitlements.ddex.deals import Terms, grants, read_terms
from entitlements.ddex.mapping import DEFAULT_MAPPING, DdexMapping
from entitlements.ddex.model import (
    ControlType,
    DdexMessage,
    DdexRelease,
    MessageHeader,
    MessageKind,
    PurgedRelease,
    SkippedDeal,
    SkipReason,
)
from entitlements.ddex.problems import Problems, refuse
from entitlements.ddex.releases import Release, Resource, read_identity, read_release, read_resource
from entitlements.ddex.stream import Node, Record, Root, Source, records

# "ddex:" + the sender must be a valid grant source (entitlements.domain.model).
_SENDER_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~@+/:=-]{0,94}")
MAX_MESSAGE_ID: Final = 200
HEADER_READ: Final = 4096
CONTROL_TYPES: Final = ("LiveMessage", "TestMessage")


@dataclass(slots=True)
class _Deals:
    """What the deals of one message say about one release, gathered in order."""

    count: int = 0
    granted: list[Terms] = field(default_factory=list)
    skipped: list[SkippedDeal] = field(default_factory=list)
    taken_down: bool = False


def source_name(source: Source, name: str | None = None) -> str:
    if name is not None:
        return name
    if isinstance(source, str | os.PathLike):
        return PurePath(os.fspath(source)).name or "message"
    return "message"


def read_header(source: Source, *, name: str | None = None) -> MessageHeader:
    """Only the header (reads no further than ``MessageHeader``): for ordering messages."""
    label = source_name(source, name)
    # Small reads: lxml parses each read whole before it yields, and the header is
    # near the start (ordering 10,000 messages read each whole twice, otherwise).
    stream = records(source, name=label, read_size=HEADER_READ)
    try:
        root = cast(Root, next(stream))
        for item in stream:
            if isinstance(item, Record) and item.section == "MessageHeader":
                problems = Problems(label)
                header = _header(root, item.node, problems)
                problems.raise_any()
                assert header is not None
                return header
            break
    finally:
        stream.close()
    raise refuse(label, root.name, "has no MessageHeader as its first element")


def read_message(
    source: Source, mapping: DdexMapping = DEFAULT_MAPPING, *, name: str | None = None
) -> DdexMessage:
    """Read and map one ERN message (a path or a binary file object)."""
    label = source_name(source, name)
    with closing(records(source, name=label)) as stream:  # closes the file on any error too
        return _Reader(label, mapping).read(stream)


def read_messages(
    sources: Iterable[Source], mapping: DdexMapping = DEFAULT_MAPPING
) -> list[DdexMessage]:
    """Read several messages and order them by ``MessageCreatedDateTime`` (ties keep input order).

    All of them are held at once; to apply a large batch one message at a time,
    order the files by ``read_header`` (which stops after the header) first.
    """
    messages = [read_message(source, mapping) for source in sources]
    return sorted(messages, key=lambda m: m.header.created)


class _Reader:
    def __init__(self, name: str, mapping: DdexMapping) -> None:
        self.name = name
        self.mapping = mapping
        self.problems = Problems(name)
        self.resources: dict[str, Resource] = {}
        self.skipped_resources: Counter[str] = Counter()
        self.releases: dict[str, Release] = {}
        self.keys: dict[str, str] = {}  # release key -> reference
        self.deals: dict[str, _Deals] = {}
        self.purged: list[PurgedRelease] = []
        self.release_deals = 0

    def read(self, stream: Iterator[Root | Record]) -> DdexMessage:
        root = cast(Root, next(stream))
        header: MessageHeader | None = None
        seen_header = False
        for item in stream:
            assert isinstance(item, Record)
            if item.section == "MessageHeader":
                header = _header(root, item.node, self.problems)
                seen_header = True
            elif not seen_header:
                raise refuse(
                    self.name, item.section, "comes before the MessageHeader", item.node.line
                )
            elif item.section == "ResourceList":
                self._resource(item.node)
            elif item.section == "ReleaseList":
                self._release(item.node)
            elif item.section == "DealList":
                self._release_deal(item.node, root.generation)
            elif item.section == "PurgedRelease":
                self._purged(item.node)
        if not seen_header:
            raise refuse(self.name, root.name, "has no MessageHeader", root.line)
        if root.kind == "purge" and not self.purged and not self.problems.errors:
            self.problems.add(root.name, "has no PurgedRelease")
        self.problems.raise_any()
        assert header is not None
        return DdexMessage(
            name=self.name,
            header=header,
            releases=tuple(self._finish(header)),
            purged=tuple(self.purged),
            skipped_resources=dict(self.skipped_resources),
        )

    def _resource(self, node: Node) -> None:
        resource = read_resource(node, self.problems, f"ResourceList/{node.name}")
        if resource is None:
            return
        if resource.reference in self.resources:
            self.problems.add(
                f"ResourceList/{node.name}[{resource.reference}]",
                f"resource reference {resource.reference!r} is used twice",
                node.line,
            )
            return
        self.resources[resource.reference] = resource
        if resource.kind != "sound_recording":
            self.skipped_resources[resource.kind] += 1
        elif resource.track is None:
            self.skipped_resources["no_isrc"] += 1

    def _release(self, node: Node) -> None:
        release = read_release(node, self.resources, self.problems, f"ReleaseList/{node.name}")
        if release is None:
            return
        if release.reference in self.releases:
            self.problems.add(
                f"ReleaseList/{node.name}[{release.reference}]",
                f"release reference {release.reference!r} is used twice",
                node.line,
            )
            return
        twin = self.keys.get(release.identity.key)
        if twin is not None:
            self.problems.add(
                f"ReleaseList/{node.name}[{release.reference}]",
                f"release {release.identity.key} is also release {twin}; a message carries a"
                " release once",
                node.line,
            )
            return
        self.keys[release.identity.key] = release.reference
        self.releases[release.reference] = release
        self.deals[release.reference] = _Deals()

    def _release_deal(self, node: Node, generation: int) -> None:
        self.release_deals += 1
        label = f"ReleaseDeal[{self.release_deals}]"
        targets: list[Release] = []
        for ref in node.all("DealReleaseReference"):
            release = self.releases.get(ref.text)
            if release is None:
                self.problems.add(
                    f"DealList/{label}/DealReleaseReference",
                    f"the deal refers to release {ref.text[:40]!r}, which is not in the"
                    " message's ReleaseList",
                    ref.line,
                )
            elif release not in targets:
                targets.append(release)
        if not node.all("DealReleaseReference"):
            self.problems.add(f"DealList/{label}", "has no DealReleaseReference", node.line)
        about = "deal for " + (
            ", ".join(f"{r.reference} = {r.identity.key}" for r in targets) or "no release"
        )
        for index, deal in enumerate(node.all("Deal"), start=1):
            deal_label = f"{label}/Deal[{index}]"
            terms = read_terms(
                deal,
                generation=generation,
                mapping=self.mapping,
                problems=self.problems.about(about),
                label=deal_label,
            )
            if terms is None:
                continue
            for release in targets:
                self._apply(release, terms)

    def _apply(self, release: Release, terms: Terms) -> None:
        deals = self.deals[release.reference]
        deals.count += 1
        reason = release.skip or terms.skip
        if terms.takedown:
            deals.taken_down = True
        elif reason is not None:
            deals.skipped.append(SkippedDeal(cast(SkipReason, reason), terms.label, terms.line))
        else:
            deals.granted.append(terms)  # made into grants in _finish, with the header

    def _purged(self, node: Node) -> None:
        identity = read_identity(node.all("ReleaseId"), self.problems, "PurgedRelease", node.line)
        if identity is not None:
            self.purged.append(PurgedRelease(identity.key, identity.aliases, node.line))

    def _finish(self, header: MessageHeader) -> Iterator[DdexRelease]:
        for reference, release in self.releases.items():
            deals = self.deals[reference]
            made: dict[str, dict[str, Any]] = {}
            skipped = list(deals.skipped)
            if deals.taken_down:
                skipped.extend(SkippedDeal("taken_down", t.label, t.line) for t in deals.granted)
            elif release.resource is not None:
                for terms in deals.granted:
                    for grant in grants(
                        terms,
                        resource=release.resource,
                        release_key=release.identity.key,
                        mapping=self.mapping,
                        message_id=header.message_id,
                        source=header.source,
                    ):
                        made.setdefault(grant["id"], grant)
            yield DdexRelease(
                reference=reference,
                key=release.identity.key,
                aliases=release.identity.aliases,
                resource=release.resource,
                track_release=release.track_release,
                tracks=release.tracks,
                deals=deals.count,
                grants=tuple(made.values()),
                skipped=tuple(skipped),
                taken_down=deals.taken_down,
                line=release.line,
            )


def _header(root: Root, node: Node, problems: Problems) -> MessageHeader | None:
    where = "MessageHeader"
    message_id = node.text_of("MessageId")
    if message_id is None:
        problems.add(where, "has no MessageId", node.line)
    elif len(message_id) > MAX_MESSAGE_ID:
        problems.add(f"{where}/MessageId", f"is longer than {MAX_MESSAGE_ID} characters", node.line)
    sender = _sender(node.first("MessageSender"))
    if sender is None:
        problems.add(f"{where}/MessageSender", "has no PartyId", node.line)
    elif not _SENDER_RE.fullmatch(sender):
        problems.add(
            f"{where}/MessageSender/PartyId",
            f"{sender[:60]!r} cannot name a grant source (ddex:<PartyId>: at most 95 letters,"
            " digits and ._~@+/:=-)",
            node.line,
        )
    created_text = node.text_of("MessageCreatedDateTime")
    created = None
    if created_text is None:
        problems.add(where, "has no MessageCreatedDateTime", node.line)
    else:
        try:
            created = instant(created_text)
        except DateError as exc:
            problems.add(f"{where}/MessageCreatedDateTime", str(exc), node.line)
    control = node.text_of("MessageControlType") or "LiveMessage"
    if control not in CONTROL_TYPES:
        problems.add(
            f"{where}/MessageControlType",
            f"{control[:40]!r} is not LiveMessage or TestMessage",
            node.line,
        )
    if message_id is None or sender is None or created is None or control not in CONTROL_TYPES:
        return None
    return MessageHeader(
        kind=cast(MessageKind, root.kind),
        version=root.version,
        namespace=root.namespace,
        sender=sender,
        message_id=message_id,
        created=created,
        control=cast(ControlType, control),
    )


def _sender(party: Node | None) -> str | None:
    """The sender's PartyId: ERN 4 has one; ERN 3 may list several (prefer the DPID)."""
    if party is None:
        return None
    ids = [p for p in party.all("PartyId") if p.text]
    for p in ids:
        if (
            p.attrib.get("IsDPID", "").strip() in {"true", "1"}
            or p.attrib.get("Namespace") == "DPID"
        ):
            return p.text
    return ids[0].text if ids else None
