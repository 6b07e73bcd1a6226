"""ERN deals as grants.

A ``Deal``'s ``DealTerms`` say who (``CommercialModelType``), what
(``UseType``: ERN 3 inside ``Usage``, ERN 4 directly), where
(``TerritoryCode``/``ExcludedTerritoryCode``), when (one or more
``ValidityPeriod``) and through which shops (``DistributionChannel``). Each
deal gives one grant per validity period, commercial model and subject:

- subject: ``role:ddex:<CommercialModelType>``, or the mapping's subjects for it;
- actions: the mapping's actions for each UseType (``OnDemandStream`` →
  ``stream``…, any other → ``ddex.<usetype>``);
- territories: ``Worldwide`` (or TIS ``2136``) → ``["*"]``, ISO 3166-1 alpha-2
  codes as they are; an ``ExcludedTerritoryCode`` alone means worldwide minus it;
- window: ``entitlements.ddex.dates`` (an ``EndDate`` is inclusive);
- attributes: ``commercial_model`` and ``use_types`` as written, ``price_type``
  (the first ``PriceInformation``'s ``PriceType``/``PriceCode``, else its
  ``PriceType`` attribute) and ``message_id``; ``source`` ``ddex:<sender>``.

A deal restricted to ``DistributionChannel`` s applies only when one of them is
a configured channel (its PartyId value, bare or as ``Namespace:value``/
``DPID:value``, or its ``FullName``, case-insensitively); a deal whose
``ExcludedDistributionChannel`` names a configured channel does not apply.
Either is skipped as ``channel``. ERN 3 ``TakeDown`` (and the deprecated
``AllDealsCancelled``) set to true cancels every deal of the releases it refers to.

Every deal is validated, skipped or not: a message with a bad deal is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from entitlements.ddex.dates import DateError, end_of, instant, start_of
from entitlements.ddex.grant_ids import grant_id
from entitlements.ddex.mapping import USER_DEFINED_PREFIX, DdexMapping
from entitlements.ddex.problems import Problems
from entitlements.ddex.stream import Node
from entitlements.domain.model import format_time, parse_action, parse_subject
from entitlements.domain.territories import ISO_3166_ALPHA2, WORLDWIDE
from entitlements.errors import InvalidInputError

WORLDWIDE_CODES = frozenset({"Worldwide", "2136"})
_TRUE = frozenset({"true", "1"})

Window = tuple[datetime | None, datetime | None]


@dataclass(frozen=True, slots=True)
class Terms:
    """One deal, read and validated; the same for every release it refers to."""

    label: str
    """``ReleaseDeal[i]/Deal[j]``, 1-based."""
    line: int | None
    skip: str | None = None
    takedown: bool = False
    models: tuple[tuple[str, str], ...] = ()
    """(mapping key, as written) per CommercialModelType."""
    actions: tuple[str, ...] = ()
    use_types: tuple[str, ...] = ()
    territories: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    windows: tuple[Window, ...] = ()
    price_type: str | None = None


def _typed_key(node: Node) -> str:
    """A CommercialModelType/UseType as the mapping names it (``UserDefined:<value>``)."""
    value = node.attrib.get("UserDefinedValue", "").strip()
    if node.text == "UserDefined" and value:
        return USER_DEFINED_PREFIX + value
    return node.text


def read_terms(
    deal: Node, *, generation: int, mapping: DdexMapping, problems: Problems, label: str
) -> Terms | None:
    """A ``Deal`` as ``Terms``; None when it has problems (noted in ``problems``)."""
    terms = deal.first("DealTerms")
    if terms is None:
        return Terms(label, deal.line, skip="out_of_band")
    before = len(problems.errors)
    where = f"DealList/{label}/DealTerms"
    if generation == 3 and any(
        t.text in _TRUE for t in terms.all("TakeDown") + terms.all("AllDealsCancelled")
    ):
        return Terms(label, deal.line, takedown=True)
    models = tuple(
        dict.fromkeys((_typed_key(m), m.text) for m in terms.all("CommercialModelType") if m.text)
    )
    use_nodes = terms.all("UseType") + [u for g in terms.all("Usage") for u in g.all("UseType")]
    use_keys = list(dict.fromkeys(_typed_key(u) for u in use_nodes if u.text))
    use_types = tuple(dict.fromkeys(u.text for u in use_nodes if u.text))
    actions = _actions(use_keys, mapping, problems, where, deal.line)
    for key, _ in models:
        for subject in mapping.subjects_for(key):
            try:
                parse_subject(subject, "subject")
            except InvalidInputError:
                hint = (
                    "map it to subjects in the mapping file [subjects]"
                    if key.startswith(USER_DEFINED_PREFIX)
                    else "it is not a DDEX CommercialModelType"
                )
                problems.add(
                    f"{where}/CommercialModelType",
                    f"commercial model {key[:60]!r} cannot be a role name ({subject[:80]!r}); {hint}",
                    deal.line,
                )
    territories, excludes = _territories(terms, problems, where)
    windows = _windows(terms, mapping, problems, where)
    if len(problems.errors) > before:
        return None
    skip = _skip(terms, models, use_keys, actions, mapping)
    return Terms(
        label,
        deal.line,
        skip=skip,
        models=models,
        actions=actions,
        use_types=use_types,
        territories=territories,
        excludes=excludes,
        windows=windows,
        price_type=_price_type(terms),
    )


def _skip(
    terms: Node,
    models: tuple[tuple[str, str], ...],
    use_keys: list[str],
    actions: tuple[str, ...],
    mapping: DdexMapping,
) -> str | None:
    only = terms.all("DistributionChannel")
    if only and not any(mapping.matches_channel(_channel_names(dsp)) for dsp in only):
        return "channel"
    if any(
        mapping.matches_channel(_channel_names(d)) for d in terms.all("ExcludedDistributionChannel")
    ):
        return "channel"
    if not use_keys:
        return "no_use_type"
    if not actions:
        return "use_type"
    if not models:
        return "no_commercial_model"
    return None


def _actions(
    use_keys: list[str], mapping: DdexMapping, problems: Problems, where: str, line: int | None
) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for key in use_keys:
        for action in mapping.actions_for(key):
            try:
                out[parse_action(action)] = None
            except InvalidInputError:
                hint = (
                    "map it to actions in the mapping file [actions]"
                    if key.startswith(USER_DEFINED_PREFIX)
                    else "it is not a DDEX UseType"
                )
                problems.add(
                    f"{where}/UseType",
                    f"use type {key[:60]!r} cannot be an action name ({action[:80]!r}); {hint}",
                    line,
                )
    return tuple(sorted(out))


def _channel_names(dsp: Node) -> list[str]:
    """Every name a DistributionChannel goes by: PartyId values (bare and qualified), FullNames."""
    names: list[str] = []
    for party in dsp.all("PartyId"):
        if party.text:  # ERN 3: <PartyId Namespace="DPID">PADPIDA…</PartyId>
            names.append(party.text)
            namespace = party.attrib.get("Namespace", "").strip()
            if namespace:
                names.append(f"{namespace}:{party.text}")
        for child in party.children:  # ERN 4: <PartyId><DPID>PADPIDA…</DPID></PartyId>
            if child.text:
                names.append(child.text)
                names.append(f"{child.attrib.get('Namespace', child.name).strip()}:{child.text}")
    for party_name in dsp.all("PartyName"):
        names.extend(n.text for n in party_name.all("FullName") if n.text)
    return names


def _territories(
    terms: Node, problems: Problems, where: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    bad = 0

    def codes(name: str, *, worldwide: bool) -> list[str]:
        nonlocal bad
        out: list[str] = []
        for node in terms.all(name):
            code = node.text
            if code in WORLDWIDE_CODES and worldwide:
                out.append(WORLDWIDE)
            elif code in ISO_3166_ALPHA2:
                out.append(code)
            else:
                bad += 1
                problems.add(
                    f"{where}/{name}",
                    f"{code[:40]!r} is not an ISO 3166-1 alpha-2 code"
                    + (" or Worldwide" if worldwide else " (Worldwide cannot be excluded)"),
                    node.line,
                )
        return out

    included = codes("TerritoryCode", worldwide=True)
    excluded = sorted(set(codes("ExcludedTerritoryCode", worldwide=False)))
    if WORLDWIDE in included or (not included and excluded):
        territories: tuple[str, ...] = (WORLDWIDE,)
    else:
        territories = tuple(sorted(set(included)))
    if not territories and not bad:
        problems.add(where, "the deal has no TerritoryCode or ExcludedTerritoryCode", terms.line)
    return territories, tuple(excluded)


def _windows(
    terms: Node, mapping: DdexMapping, problems: Problems, where: str
) -> tuple[Window, ...]:
    periods = terms.all("ValidityPeriod")
    if not periods:
        problems.add(where, "the deal has no ValidityPeriod", terms.line)
        return ()
    zone = mapping.zone
    windows: dict[Window, None] = {}
    for period in periods:
        try:
            start_time, end_time = period.text_of("StartDateTime"), period.text_of("EndDateTime")
            start_date, end_date = period.text_of("StartDate"), period.text_of("EndDate")
            start = (
                instant(start_time)
                if start_time
                else start_of(start_date, zone)
                if start_date
                else None
            )
            end = instant(end_time) if end_time else end_of(end_date, zone) if end_date else None
        except DateError as exc:
            problems.add(f"{where}/ValidityPeriod", str(exc), period.line)
            continue
        if start is not None and end is not None and end <= start:
            problems.add(
                f"{where}/ValidityPeriod",
                f"ends ({format_time(end)}) no later than it starts ({format_time(start)})",
                period.line,
            )
            continue
        windows[(start, end)] = None
    return tuple(windows)


def _price_type(terms: Node) -> str | None:
    price = terms.first("PriceInformation")
    if price is None:
        return None
    written = price.text_of("PriceType") or price.text_of("PriceCode")
    return written or price.attrib.get("PriceType", "").strip() or None


def grants(
    terms: Terms,
    *,
    resource: str,
    release_key: str,
    mapping: DdexMapping,
    message_id: str,
    source: str,
) -> list[dict[str, Any]]:
    """The grants a deal gives on ``resource`` (the deal must not be skipped or a takedown)."""
    out: list[dict[str, Any]] = []
    for key, written in terms.models:
        for subject in mapping.subjects_for(key):
            for start, end in terms.windows:
                attributes: dict[str, Any] = {
                    "commercial_model": written,
                    "use_types": list(terms.use_types),
                }
                if terms.price_type is not None:
                    attributes["price_type"] = terms.price_type
                attributes["message_id"] = message_id
                grant: dict[str, Any] = {
                    "subject": subject,
                    "resource": resource,
                    "actions": list(terms.actions),
                    "territories": list(terms.territories),
                }
                if terms.excludes:
                    grant["exclude_territories"] = list(terms.excludes)
                if start is not None:
                    grant["valid_from"] = format_time(start)
                if end is not None:
                    grant["valid_until"] = format_time(end)
                grant["attributes"] = attributes
                grant["source"] = source
                grant = {"id": grant_id(grant, release_key), **grant}
                out.append(grant)
    return out
