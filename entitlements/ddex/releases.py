"""Resources and releases of an ERN message, as entitlements resources.

- A sound recording is ``track:<ISRC>`` (the ISRC upper-cased, hyphens removed).
  Other resource kinds (videos, images…) are out of scope: counted, never resources.
- A release is ``release:<ICPN>`` (verbatim, leading zeros kept), else
  ``release:<GRid>``, else ``release:<namespace>:<ProprietaryId>`` (the DPID
  namespace keeps two senders' ids apart). Its sound recordings get it as a parent.
- A track release — ERN 3 ``ReleaseType`` TrackRelease, a ``ReleaseId`` that
  is an ISRC, or an ERN 4 ``TrackRelease`` — is not a resource of its own: its
  deals apply to the ``track:<ISRC>`` of its sound recording.
- An ERN 4 ``ClipRelease`` is out of scope, like videos.

In ERN 3 a release lists its resources in ``ReleaseResourceReferenceList``;
in ERN 4 in (nested) ``ResourceGroup`` s, a track release in its one
``ReleaseResourceReference``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from entitlements.ddex.elements import RESOURCE_KINDS
from entitlements.ddex.problems import Problems
from entitlements.ddex.stream import Node
from entitlements.domain.model import parse_resource
from entitlements.errors import InvalidInputError

ISRC_RE: Final = re.compile(r"[A-Z]{2}[A-Z0-9]{3}[0-9]{7}")


@dataclass(frozen=True, slots=True)
class Resource:
    """A resource of the message: its kind and, for a sound recording, its track id."""

    reference: str
    kind: str
    track: str | None
    line: int | None


@dataclass(frozen=True, slots=True)
class Identity:
    """A release's ids in resource form (see ``entitlements.ddex.model``)."""

    key: str
    aliases: tuple[str, ...]
    isrc_track: str | None
    """``track:<ISRC>`` when a ReleaseId is an ISRC."""


@dataclass(frozen=True, slots=True)
class Release:
    """A release of the message, resolved against its resources."""

    reference: str
    identity: Identity
    resource: str | None
    track_release: bool
    tracks: tuple[str, ...]
    skip: str | None
    """Why all its deals are skipped (``video``, ``clip``, ``no_isrc``…), or None."""
    line: int | None


def isrc_track(text: str) -> str | None:
    """``track:<ISRC>`` for a well-formed ISRC (hyphens and case forgiven), else None."""
    isrc = text.replace("-", "").strip().upper()
    return f"track:{isrc}" if ISRC_RE.fullmatch(isrc) else None


def read_resource(node: Node, problems: Problems, where: str) -> Resource | None:
    """A ``ResourceList`` entry; None (with a problem noted) when it has no reference."""
    reference = node.text_of("ResourceReference")
    if reference is None:
        problems.add(where, f"{node.name} has no ResourceReference", node.line)
        return None
    kind = RESOURCE_KINDS.get(node.name, "user_defined_resource")
    track = None
    if kind == "sound_recording":
        track = _recording_track(node, problems, f"{where}[{reference}]")
    return Resource(reference, kind, track, node.line)


def _recording_track(node: Node, problems: Problems, where: str) -> str | None:
    """The recording's ISRC as a track id: ERN 3 ``SoundRecordingId``, ERN 4.1-4.2
    ``ResourceId``, ERN 4.3 ``SoundRecordingEdition/ResourceId``.

    An id marked ``IsReplaced`` is an old one and is used only if there is no
    other. ERN 4 prefers the edition without a ``Type`` or ``NonImmersiveEdition``
    (the stereo master) when editions carry different ISRCs.
    """
    candidates: list[tuple[int, Node]] = []
    for ident in node.all("SoundRecordingId") + node.all("ResourceId"):  # ERN 3; ERN 4.1-4.2
        candidates.append((_replaced(ident), ident))
    for edition in node.all("SoundRecordingEdition"):
        edition_type = edition.text_of("Type")
        rank = 0 if edition_type in {None, "NonImmersiveEdition"} else 2
        for ident in edition.all("ResourceId"):
            candidates.append((rank + _replaced(ident), ident))
    for _, ident in sorted(candidates, key=lambda c: c[0]):
        text = ident.text_of("ISRC")
        if text is None:
            continue
        track = isrc_track(text)
        if track is None:
            problems.add(
                f"{where}/ISRC",
                f"{text[:40]!r} is not an ISRC (CC-XXX-YY-NNNNN, 12 characters)",
                ident.line,
            )
        return track
    return None


def _replaced(ident: Node) -> int:
    return 1 if ident.attrib.get("IsReplaced", "").strip() in {"true", "1"} else 0


def read_identity(
    ids: list[Node], problems: Problems, where: str, line: int | None
) -> Identity | None:
    """A release's identity from its ``ReleaseId`` elements (ERN 3 allows several)."""
    icpn: list[str] = []
    grid: list[str] = []
    proprietary: list[str] = []
    isrc: list[str] = []

    def resource(text: str, what: str) -> str | None:
        try:
            return parse_resource(text, "ReleaseId")
        except InvalidInputError:
            problems.add(
                f"{where}/ReleaseId",
                f"{what} {text[:60]!r} cannot be a resource id (letters, digits and ._~@+/:=- only)",
                line,
            )
            return None

    for ident in ids:
        for child in ident.children:
            if not child.text:
                continue
            if child.name == "ICPN" and (r := resource(f"release:{child.text}", "ICPN")):
                icpn.append(r)
            elif child.name == "GRid" and (r := resource(f"release:{child.text}", "GRid")):
                grid.append(r)
            elif child.name == "ProprietaryId":
                namespace = child.attrib.get("Namespace", "").strip()
                if not namespace:
                    problems.add(
                        f"{where}/ReleaseId/ProprietaryId",
                        "a ProprietaryId needs its Namespace (the sender's DPID)",
                        child.line,
                    )
                elif r := resource(f"release:{namespace}:{child.text}", "ProprietaryId"):
                    proprietary.append(r)
            elif child.name == "ISRC":
                track = isrc_track(child.text)
                if track is None:
                    problems.add(
                        f"{where}/ReleaseId/ISRC",
                        f"{child.text[:40]!r} is not an ISRC",
                        child.line,
                    )
                else:
                    isrc.append(track)
    aliases = tuple(dict.fromkeys(icpn + grid + isrc + proprietary))
    if not aliases:
        problems.add(
            f"{where}/ReleaseId",
            "the release has no ICPN, GRid, ISRC or ProprietaryId to name it by",
            line,
        )
        return None
    return Identity(aliases[0], aliases, isrc[0] if isrc else None)


def read_release(
    node: Node, resources: dict[str, Resource], problems: Problems, where: str
) -> Release | None:
    """A ``ReleaseList`` entry resolved against the resources read before it."""
    reference = node.text_of("ReleaseReference")
    if reference is None:
        problems.add(where, f"{node.name} has no ReleaseReference", node.line)
        return None
    where = f"{where}[{reference}]"
    identity = read_identity(node.all("ReleaseId"), problems, where, node.line)
    if identity is None:
        return None
    refs: list[Node] = []
    for listing in node.all("ReleaseResourceReferenceList"):  # ERN 3
        refs.extend(listing.all("ReleaseResourceReference"))
    refs.extend(node.all("ReleaseResourceReference"))  # ERN 4 TrackRelease
    for group in node.all("ResourceGroup"):  # ERN 4 Release
        refs.extend(_group_references(group))
    listed: list[Resource] = []
    for ref in refs:
        resource = resources.get(ref.text)
        if resource is None:
            problems.add(
                f"{where}/ReleaseResourceReference",
                f"refers to resource {ref.text[:40]!r}, which is not in the message's ResourceList",
                ref.line,
            )
            continue
        listed.append(resource)
    types = {t.text for t in node.all("ReleaseType")}
    track_release = (
        node.name in {"TrackRelease", "ClipRelease"}
        or "TrackRelease" in types
        or identity.isrc_track is not None
    )
    recordings = [r for r in listed if r.kind == "sound_recording"]
    other = next((r.kind for r in listed if r.kind != "sound_recording"), None)
    if node.name == "ClipRelease":
        return Release(reference, identity, None, True, (), "clip", node.line)
    if not track_release:
        tracks = tuple(dict.fromkeys(r.track for r in recordings if r.track is not None))
        skip = other if not recordings and other is not None else None
        return Release(reference, identity, identity.key, False, tracks, skip, node.line)
    if identity.isrc_track is not None:
        return Release(reference, identity, identity.isrc_track, True, (), None, node.line)
    if len(recordings) > 1:
        problems.add(
            where,
            f"track release {reference} lists {len(recordings)} sound recordings; a track"
            " release is one track",
            node.line,
        )
        return None
    if not recordings:
        return Release(reference, identity, None, True, (), other or "no_isrc", node.line)
    track = recordings[0].track
    return Release(reference, identity, track, True, (), None if track else "no_isrc", node.line)


def _group_references(group: Node) -> list[Node]:
    out: list[Node] = []
    for child in group.children:
        if child.name == "ResourceGroup":
            out.extend(_group_references(child))
        elif child.name == "ResourceGroupContentItem":
            out.extend(child.all("ReleaseResourceReference"))
    return out
