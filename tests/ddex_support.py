"""A small builder of ERN messages for the DDEX tests, written from the standard.

It writes the elements the reader looks at, in the order and nesting of the
ERN 3.8.2, 4.1.1 and 4.3 schemas, plus a little descriptive metadata (titles,
artists) so the reader has something to skip. The hand-written files in
``tests/ddex/`` are complete, schema-valid messages; these are compact ones
for one rule each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

SENDER = "PADPIDA2026010101A"
NAMESPACES = {
    "382": "http://ddex.net/xml/ern/382",
    "411": "http://ddex.net/xml/ern/411",
    "43": "http://ddex.net/xml/ern/43",
}


@dataclass
class Deal:
    """One Deal. ``periods`` holds (StartDate|StartDateTime, EndDate|EndDateTime) pairs;
    a value with a ``T`` is written as a date-time."""

    models: Sequence[str] = ("SubscriptionModel",)
    use_types: Sequence[str] = ("OnDemandStream",)
    territories: Sequence[str] = ("Worldwide",)
    excluded: Sequence[str] = ()
    periods: Sequence[tuple[str | None, str | None]] = (("2026-01-01", None),)
    channels: Sequence[str] = ()  # DistributionChannel PartyId (DPID)
    channel_names: Sequence[str] = ()  # DistributionChannel FullName
    excluded_channels: Sequence[str] = ()
    price_code: str | None = None
    price_type_attribute: str | None = None
    takedown: bool = False  # ERN 3 only
    terms: bool = True  # False: a Deal with only a DealReference


@dataclass
class Recording:
    reference: str
    isrc: str | None
    kind: str = "SoundRecording"  # or Video, Image


@dataclass
class Release:
    reference: str
    resources: Sequence[str] = ()
    icpn: str | None = None
    grid: str | None = None
    isrc: str | None = None
    proprietary: tuple[str, str] | None = None  # (namespace, value)
    track: bool = False  # ERN 3: ReleaseType TrackRelease; ERN 4: a TrackRelease element
    release_type: str = "Album"


@dataclass
class Message:
    version: str = "43"
    root: str = "NewReleaseMessage"
    namespace: str | None = None
    sender: str = SENDER
    message_id: str = "M-1"
    created: str = "2026-03-01T10:00:00Z"
    control: str | None = None
    recordings: Sequence[Recording] = (Recording("A1", "USRC17607839"),)
    releases: Sequence[Release] = (Release("R0", ("A1",), icpn="0602527894567"),)
    deals: Sequence[tuple[Sequence[str], Sequence[Deal]]] = ((("R0",), (Deal(),)),)
    purged: dict[str, str] = field(default_factory=dict)  # PurgedRelease ReleaseId children
    padding: str = ""  # extra descriptive metadata per recording

    def xml(self) -> bytes:
        return "".join(_message(self)).encode()


def _release_id(r: Release) -> str:
    parts = []
    if r.grid:
        parts.append(f"<GRid>{escape(r.grid)}</GRid>")
    if r.isrc:
        parts.append(f"<ISRC>{escape(r.isrc)}</ISRC>")
    if r.icpn:
        parts.append(f"<ICPN>{escape(r.icpn)}</ICPN>")
    if r.proprietary:
        ns, value = r.proprietary
        parts.append(f"<ProprietaryId Namespace={quoteattr(ns)}>{escape(value)}</ProprietaryId>")
    return f"<ReleaseId>{''.join(parts)}</ReleaseId>"


def _typed(name: str, value: str) -> str:
    if value.startswith("UserDefined:"):
        return f"<{name} UserDefinedValue={quoteattr(value[12:])}>UserDefined</{name}>"
    return f"<{name}>{escape(value)}</{name}>"


def _period(start: str | None, end: str | None) -> str:
    out = ["<ValidityPeriod>"]
    for tag, value in (("Start", start), ("End", end)):
        if value is not None:
            kind = "DateTime" if "T" in value else "Date"
            out.append(f"<{tag}{kind}>{escape(value)}</{tag}{kind}>")
    out.append("</ValidityPeriod>")
    return "".join(out)


def _dsp(party: str | None, name: str | None, generation: int) -> str:
    if name is not None:
        return f"<PartyName><FullName>{escape(name)}</FullName></PartyName>"
    assert party is not None
    if generation == 3:
        return f'<PartyId Namespace="DPID">{escape(party)}</PartyId>'
    return f"<PartyId><DPID>{escape(party)}</DPID></PartyId>"


def _channels(d: Deal, generation: int) -> str:
    out = []
    tag = "ExcludedDistributionChannel" if d.excluded_channels else "DistributionChannel"
    for party in d.excluded_channels or d.channels:
        out.append(f"<{tag}>{_dsp(party, None, generation)}</{tag}>")
    for name in d.channel_names:
        out.append(f"<DistributionChannel>{_dsp(None, name, generation)}</DistributionChannel>")
    return "".join(out)


def _price(d: Deal, generation: int) -> str:
    if d.price_code is None and d.price_type_attribute is None:
        return ""
    attr = f" PriceType={quoteattr(d.price_type_attribute)}" if d.price_type_attribute else ""
    inner = ""
    if d.price_code is not None:
        tag = "PriceType" if generation == 3 else "PriceCode"
        inner = f'<{tag} Namespace="{SENDER}">{escape(d.price_code)}</{tag}>'
    return f"<PriceInformation{attr}>{inner}</PriceInformation>"


def _deal(d: Deal, generation: int) -> str:
    if not d.terms:
        return "<Deal><DealReference>OUT-OF-BAND-1</DealReference></Deal>"
    models = "".join(_typed("CommercialModelType", m) for m in d.models)
    uses = "".join(_typed("UseType", u) for u in d.use_types)
    places = "".join(f"<TerritoryCode>{escape(t)}</TerritoryCode>" for t in d.territories)
    places += "".join(
        f"<ExcludedTerritoryCode>{escape(t)}</ExcludedTerritoryCode>" for t in d.excluded
    )
    periods = "".join(_period(s, e) for s, e in d.periods)
    if generation == 3:
        usage = "<TakeDown>true</TakeDown>" if d.takedown else f"<Usage>{uses}</Usage>"
        body = models + usage + places + _channels(d, 3) + _price(d, 3) + periods
    else:
        body = places + periods + models + uses + _channels(d, 4) + _price(d, 4)
    return f"<Deal><DealTerms>{body}</DealTerms></Deal>"


def _recording(rec: Recording, version: str, padding: str) -> str:
    if rec.kind != "SoundRecording":
        return f"<{rec.kind}><ResourceReference>{rec.reference}</ResourceReference></{rec.kind}>"
    isrc = (
        f"<ISRC>{escape(rec.isrc)}</ISRC>"
        if rec.isrc
        else '<ProprietaryId Namespace="X">1</ProprietaryId>'
    )
    title = f"<DisplayTitleText>Title of {rec.reference}</DisplayTitleText>{padding}"
    if version == "382":
        return (
            f"<SoundRecording><SoundRecordingId>{isrc}</SoundRecordingId>"
            f"<ResourceReference>{rec.reference}</ResourceReference>"
            f"<ReferenceTitle><TitleText>Title of {rec.reference}</TitleText></ReferenceTitle>"
            f"{padding}<Duration>PT3M</Duration></SoundRecording>"
        )
    if version == "411":
        ids = f"<ResourceId>{isrc}</ResourceId>"
    else:
        ids = f"<SoundRecordingEdition><ResourceId>{isrc}</ResourceId></SoundRecordingEdition>"
    return (
        f"<SoundRecording><ResourceReference>{rec.reference}</ResourceReference>"
        f"<Type>MusicalWorkSoundRecording</Type>{ids}{title}<Duration>PT3M</Duration>"
        "</SoundRecording>"
    )


def _release(r: Release, version: str) -> str:
    if version == "382":
        refs = "".join(
            f"<ReleaseResourceReference>{a}</ReleaseResourceReference>" for a in r.resources
        )
        kind = "TrackRelease" if r.track else r.release_type
        return (
            f"<Release>{_release_id(r)}<ReleaseReference>{r.reference}</ReleaseReference>"
            f"<ReferenceTitle><TitleText>Release {r.reference}</TitleText></ReferenceTitle>"
            f"<ReleaseResourceReferenceList>{refs}</ReleaseResourceReferenceList>"
            f"<ReleaseType>{kind}</ReleaseType></Release>"
        )
    if r.track:
        return (
            f"<TrackRelease><ReleaseReference>{r.reference}</ReleaseReference>{_release_id(r)}"
            f"<ReleaseResourceReference>{r.resources[0]}</ReleaseResourceReference>"
            "<ReleaseLabelReference>PLabel</ReleaseLabelReference></TrackRelease>"
        )
    items = "".join(
        f"<ResourceGroupContentItem><ReleaseResourceReference>{a}</ReleaseResourceReference>"
        "</ResourceGroupContentItem>"
        for a in r.resources
    )
    return (
        f"<Release><ReleaseReference>{r.reference}</ReleaseReference>"
        f"<ReleaseType>{r.release_type}</ReleaseType>{_release_id(r)}"
        f"<DisplayTitleText>Release {r.reference}</DisplayTitleText>"
        f'<ResourceGroup><ResourceGroup ResourceGroupType="Component">{items}</ResourceGroup>'
        "</ResourceGroup></Release>"
    )


def _message(m: Message) -> list[str]:
    generation = 3 if m.version.startswith("3") else 4
    ns = m.namespace if m.namespace is not None else NAMESPACES[m.version]
    control = f"<MessageControlType>{m.control}</MessageControlType>" if m.control else ""
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<ern:{m.root} xmlns:ern="{ns}" LanguageAndScriptCode="en">\n',
        f"<MessageHeader><MessageId>{escape(m.message_id)}</MessageId>"
        f"<MessageSender><PartyId>{escape(m.sender)}</PartyId></MessageSender>"
        "<MessageRecipient><PartyId>PADPIDA2026020202B</PartyId></MessageRecipient>"
        f"<MessageCreatedDateTime>{escape(m.created)}</MessageCreatedDateTime>{control}"
        "</MessageHeader>\n",
    ]
    if m.root == "PurgeReleaseMessage":
        ids = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in m.purged.items())
        out.append(f"<PurgedRelease><ReleaseId>{ids}</ReleaseId></PurgedRelease>\n")
    else:
        if generation == 4:
            out.append(
                "<PartyList><Party><PartyReference>PLabel</PartyReference></Party></PartyList>\n"
            )
        out.append("<ResourceList>\n")
        out.extend(_recording(r, m.version, m.padding) + "\n" for r in m.recordings)
        out.append("</ResourceList>\n<ReleaseList>\n")
        out.extend(_release(r, m.version) + "\n" for r in m.releases)
        out.append("</ReleaseList>\n")
        if m.deals:
            out.append("<DealList>\n")
            for refs, deals in m.deals:
                out.append("<ReleaseDeal>")
                out.extend(f"<DealReleaseReference>{r}</DealReleaseReference>" for r in refs)
                out.extend(_deal(d, generation) for d in deals)
                out.append("</ReleaseDeal>\n")
            out.append("</DealList>\n")
    out.append(f"</ern:{m.root}>\n")
    return out


def ern(**kwargs: object) -> bytes:
    """An ERN message as bytes (see ``Message`` for the arguments)."""
    return Message(**kwargs).xml()  # type: ignore[arg-type]
