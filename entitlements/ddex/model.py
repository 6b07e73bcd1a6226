"""What the DDEX reader hands on: one ``DdexMessage`` per ERN message, as plain frozen values.

The import (replace-per-release, stale tracking, purge, the report) is built on
these alone; nothing here knows about Postgres or HTTP.

Identifiers of a release are written in resource form, the form the grants
use: ``release:<ICPN>``, ``release:<GRid>``, ``release:<namespace>:<ProprietaryId>``
or ``track:<ISRC>``. ``key`` is one of them chosen by a fixed precedence
(ICPN, GRid, ISRC, ProprietaryId: global ids first); ``aliases`` holds all of them, so a later
message naming the release by another of its ids (a PurgeReleaseMessage that
gives only the GRid) can still be matched to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

MessageKind = Literal["new", "purge"]
ControlType = Literal["LiveMessage", "TestMessage"]

SkipReason = Literal[
    "channel",
    "video",
    "image",
    "text",
    "sheet_music",
    "software",
    "midi",
    "user_defined_resource",
    "clip",
    "no_isrc",
    "out_of_band",
    "no_use_type",
    "use_type",
    "no_commercial_model",
    "taken_down",
]
"""Why a deal gave no grant.

- ``channel``: restricted by ``DistributionChannel`` to channels not configured
  (or our configured channel is in its ``ExcludedDistributionChannel``);
- ``video`` … ``user_defined_resource``: the release is of a resource kind out of scope;
- ``clip``: an ERN 4 ``ClipRelease``;
- ``no_isrc``: a track release whose sound recording has no ISRC;
- ``out_of_band``: no ``DealTerms`` (terms agreed elsewhere, by ``DealReference``);
- ``no_use_type``: ``DealTerms`` without a ``UseType``;
- ``use_type``: every ``UseType`` is mapped to no action in the mapping file;
- ``no_commercial_model``: no ``CommercialModelType``, so no subject;
- ``taken_down``: an ERN 3 ``TakeDown`` (or ``AllDealsCancelled``) in the same
  message cancels every deal of the release.
"""


@dataclass(frozen=True, slots=True)
class MessageHeader:
    """The ``MessageHeader`` of a message, and what its root element says.

    ``created`` (``MessageCreatedDateTime``) is timezone-aware, in UTC; a value
    written without an offset is read as UTC. ``sender`` is the
    ``MessageSender``'s ``PartyId`` (in ERN 3, the DPID one when several are given).
    ``version`` is the ERN version the namespace names (``"3.8.2"``, ``"4.3"``).
    """

    kind: MessageKind
    version: str
    namespace: str
    sender: str
    message_id: str
    created: datetime
    control: ControlType = "LiveMessage"

    @property
    def test(self) -> bool:
        """A ``TestMessage``: parse and report it, never apply it."""
        return self.control == "TestMessage"

    @property
    def source(self) -> str:
        """The grants' ``source``: ``ddex:<sender PartyId>``."""
        return f"ddex:{self.sender}"


@dataclass(frozen=True, slots=True)
class SkippedDeal:
    """A deal (for one release) that gave no grant, and why.

    ``deal`` names it in the message: ``ReleaseDeal[2]/Deal[1]`` (1-based, in
    document order); ``line`` is where that ``Deal`` starts.
    """

    reason: SkipReason
    deal: str
    line: int | None = None


@dataclass(frozen=True, slots=True)
class DdexRelease:
    """One release of a NewReleaseMessage and everything the message says about it.

    - ``reference``: its ``ReleaseReference`` (local to the message, e.g. ``R0``).
    - ``key``/``aliases``: its identity across messages (module docstring).
    - ``resource``: where its deals apply: ``release:…`` for a release,
      ``track:<ISRC>`` for a track release; ``None`` when it cannot be one
      (a video track release, a track release without ISRC) — its deals are
      then all in ``skipped``.
    - ``track_release``: ERN 3 ``ReleaseType`` TrackRelease, a ``ReleaseId``
      that is an ISRC, or an ERN 4 ``TrackRelease`` element.
    - ``tracks``: ``track:<ISRC>`` of each sound recording it lists, in order,
      without repeats — the tracks that get ``resource`` as a parent. Empty
      for a track release (it *is* the track).
    - ``deals``: how many ``Deal`` elements referred to it (each is either in
      ``grants`` — one or more grants — or in ``skipped``, or is the takedown).
    - ``grants``: grants in the NDJSON form ``grant_from_mapping`` accepts,
      ids deterministic, without repeats.
    - ``taken_down``: an ERN 3 ``TakeDown``/``AllDealsCancelled`` referred to it:
      ``grants`` is then empty and every other deal is skipped as ``taken_down``.
    """

    reference: str
    key: str
    aliases: tuple[str, ...]
    resource: str | None
    track_release: bool
    tracks: tuple[str, ...]
    deals: int
    grants: tuple[dict[str, Any], ...]
    skipped: tuple[SkippedDeal, ...]
    taken_down: bool = False
    line: int | None = None


@dataclass(frozen=True, slots=True)
class PurgedRelease:
    """The release a PurgeReleaseMessage removes: its ``key`` and ``aliases``."""

    key: str
    aliases: tuple[str, ...]
    line: int | None = None


@dataclass(frozen=True, slots=True)
class DdexMessage:
    """One ERN message, read and mapped.

    ``name`` is what errors and reports call it (the file name). A
    NewReleaseMessage has ``releases`` (in ``ReleaseList`` order) and no
    ``purged``; a PurgeReleaseMessage the reverse. ``skipped_resources``
    counts the resources of kinds out of scope (``{"video": 2}``) and sound
    recordings without an ISRC (``no_isrc``).
    """

    name: str
    header: MessageHeader
    releases: tuple[DdexRelease, ...] = ()
    purged: tuple[PurgedRelease, ...] = ()
    skipped_resources: Mapping[str, int] = field(default_factory=dict)

    @property
    def grant_count(self) -> int:
        return sum(len(r.grants) for r in self.releases)

    @property
    def deal_count(self) -> int:
        return sum(r.deals for r in self.releases)

    def skipped_deals(self) -> dict[str, int]:
        """Skipped deals counted by reason, for the report."""
        counts: dict[str, int] = {}
        for release in self.releases:
            for skipped in release.skipped:
                counts[skipped.reason] = counts.get(skipped.reason, 0) + 1
        return counts
