"""How ERN deal terms become grants: the defaults, and a mapping file that overrides them.

A mapping file is TOML or JSON (by its suffix), every key optional; what it
does not set keeps its default, so a file that sets only ``channels`` changes
nothing else::

    time_zone = "UTC"                 # date-only StartDate/EndDate are read in this zone
    channels = ["PADPIDA2011072101T", "Example Music"]   # our DistributionChannel names

    [subjects]                        # CommercialModelType -> subjects (default role:ddex:<model>)
    SubscriptionModel = ["role:plan:premium", "role:plan:family"]

    [actions]                         # UseType -> actions (defaults below; others ddex.<usetype>)
    Webcast = ["radio"]
    Podcast = []                      # grants nothing; a deal left with no action is skipped

A ``UserDefined`` commercial model or use type is named ``UserDefined:<value>``
(its ``UserDefinedValue``). Unknown keys, commercial models and use types are
refused, so a typo cannot silently map nothing.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from entitlements.domain.model import parse_action, parse_subject
from entitlements.errors import FieldError, InvalidInputError

DEFAULT_ACTIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "OnDemandStream": ("stream",),
    "Stream": ("stream",),
    "NonInteractiveStream": ("radio",),
    "PermanentDownload": ("download",),
    "ConditionalDownload": ("offline",),
    "TetheredDownload": ("offline",),
}
"""UseType -> actions; any other UseType becomes ``ddex.<usetype in lower case>``."""

COMMERCIAL_MODELS: Final = frozenset(
    (
        "AdvertisementSupportedModel",
        "AsPerContract",
        "DeviceFeeModel",
        "FreeOfChargeModel",
        "PayAsYouGoModel",
        "PerformanceRoyaltiesModel",
        "RightsClaimModel",
        "SubscriptionModel",
        "Unknown",
        "UserDefined",
    )
)
"""CommercialModelType values of the ERN 3 and 4 allowed-value sets."""

USE_TYPES: Final = frozenset(
    (
        "AsPerContract",
        "Broadcast",
        "Cable",
        "ConditionalDownload",
        "ContentInfluencedStream",
        "Display",
        "Download",
        "Dub",
        "DubForAdvertisement",
        "DubForLivePerformance",
        "DubForMovies",
        "DubForMusicOnHold",
        "DubForOnDemandStreaming",
        "DubForPublicPerformance",
        "DubForRadio",
        "DubForTV",
        "ExtractForInternet",
        "KioskDownload",
        "Narrowcast",
        "NonInteractiveStream",
        "OnDemandStream",
        "Perform",
        "PerformAsMusicOnHold",
        "PerformInLivePerformance",
        "PerformInPublic",
        "PermanentDownload",
        "PlayInPublic",
        "Playback",
        "Podcast",
        "Print",
        "PrivateCopy",
        "PurchaseAsPhysicalProduct",
        "Rent",
        "Simulcast",
        "Stream",
        "TetheredDownload",
        "TimeInfluencedStream",
        "Unknown",
        "Use",
        "UseAsAlertTone",
        "UseAsDevice",
        "UseAsKaraoke",
        "UseAsRingbackTone",
        "UseAsRingbackTune",
        "UseAsRingtone",
        "UseAsRingtune",
        "UseAsScreensaver",
        "UseAsVoiceMail",
        "UseAsWallpaper",
        "UseForIdentification",
        "UseInMobilePhoneMessaging",
        "UseInPhoneListening",
        "UserDefined",
        "UserMakeAvailableLabelProvided",
        "UserMakeAvailableUserProvided",
        "Webcast",
    )
)
"""UseType values of the ERN 3 and 4 allowed-value sets."""

USER_DEFINED_PREFIX: Final = "UserDefined:"
MAPPING_KEYS: Final = frozenset({"time_zone", "channels", "subjects", "actions"})
MAX_CHANNELS: Final = 100
MAX_SUBJECTS: Final = 32


@dataclass(frozen=True, slots=True)
class DdexMapping:
    """The mapping in force: ``subjects``/``actions`` hold only the overrides.

    Built by ``mapping_from_dict``/``load_mapping`` (which validate); the
    constructor validates too, so an instance is always usable.
    """

    subjects: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    actions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    channels: tuple[str, ...] = ()
    time_zone: str = "UTC"

    def __post_init__(self) -> None:
        errors = _check(self.subjects, self.actions, self.channels, self.time_zone)
        if errors:
            raise InvalidInputError(errors)

    @property
    def zone(self) -> tzinfo:
        return UTC if self.time_zone == "UTC" else ZoneInfo(self.time_zone)

    def subjects_for(self, model: str) -> tuple[str, ...]:
        """Subjects of a deal under ``model`` (a CommercialModelType, or ``UserDefined:<value>``)."""
        return self.subjects.get(model) or (f"role:ddex:{model}",)

    def actions_for(self, use_type: str) -> tuple[str, ...]:
        """Actions a UseType (or ``UserDefined:<value>``) grants; may be empty (mapped to none)."""
        if use_type in self.actions:
            return self.actions[use_type]
        if use_type in DEFAULT_ACTIONS:
            return DEFAULT_ACTIONS[use_type]
        return ("ddex." + use_type.lower().replace(":", "."),)

    def matches_channel(self, names: Iterable[str]) -> bool:
        """Whether any of a DistributionChannel's names is one of ours (case-insensitive)."""
        ours = {c.casefold() for c in self.channels}
        return any(name.casefold() in ours for name in names)


def _known(name: str, values: frozenset[str]) -> bool:
    if name.startswith(USER_DEFINED_PREFIX):
        return len(name) > len(USER_DEFINED_PREFIX)
    return name in values


def _check(
    subjects: Mapping[str, tuple[str, ...]],
    actions: Mapping[str, tuple[str, ...]],
    channels: tuple[str, ...],
    time_zone: str,
) -> list[FieldError]:
    errors: list[FieldError] = []
    if time_zone != "UTC":
        try:
            ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            errors.append(
                FieldError("time_zone", f"{time_zone[:60]!r} is not an IANA time zone name")
            )
    if len(channels) > MAX_CHANNELS:
        errors.append(FieldError("channels", f"must list at most {MAX_CHANNELS} channels"))
    for i, channel in enumerate(channels):
        if not isinstance(channel, str) or not channel.strip() or len(channel) > 200:
            errors.append(
                FieldError(f"channels.{i}", "must be a non-empty name of 1-200 characters")
            )
    for model, listed in subjects.items():
        if not _known(model, COMMERCIAL_MODELS):
            errors.append(
                FieldError(
                    f"subjects.{model[:60]}",
                    "is not a DDEX CommercialModelType (e.g. SubscriptionModel,"
                    " or UserDefined:<value>)",
                )
            )
        if not listed or len(listed) > MAX_SUBJECTS:
            errors.append(
                FieldError(f"subjects.{model[:60]}", f"must list 1-{MAX_SUBJECTS} subjects")
            )
        for i, subject in enumerate(listed):
            try:
                parse_subject(subject, f"subjects.{model[:60]}.{i}")
            except InvalidInputError as exc:
                errors.extend(exc.errors)
    for use_type, mapped in actions.items():
        if not _known(use_type, USE_TYPES):
            errors.append(
                FieldError(
                    f"actions.{use_type[:60]}",
                    "is not a DDEX UseType (e.g. OnDemandStream, or UserDefined:<value>)",
                )
            )
        for i, action in enumerate(mapped):
            try:
                parse_action(action, f"actions.{use_type[:60]}.{i}")
            except InvalidInputError as exc:
                errors.extend(exc.errors)
    return errors


DEFAULT_MAPPING: Final = DdexMapping()
"""The issue's defaults: no channels, UTC, role:ddex:<model>, the default actions."""


def _names(value: object, field_name: str, errors: list[FieldError]) -> tuple[str, ...]:
    """A string or a list of strings, as a tuple."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    errors.append(FieldError(field_name, "must be a string or a list of strings"))
    return ()


def _table(value: object, field_name: str, errors: list[FieldError]) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        errors.append(FieldError(field_name, "must be a table (an object) of names to lists"))
        return {}
    return {str(k): _names(v, f"{field_name}.{str(k)[:60]}", errors) for k, v in value.items()}


def mapping_from_dict(data: object) -> DdexMapping:
    """Validate a mapping given as a dict (the parsed TOML or JSON); every problem at once."""
    if not isinstance(data, dict):
        raise InvalidInputError(FieldError("", "a mapping must be a table (an object)"))
    errors = [
        FieldError(str(k)[:60], "unknown key")
        for k in sorted(map(str, data))
        if k not in MAPPING_KEYS
    ]
    time_zone = data.get("time_zone", "UTC")
    if not isinstance(time_zone, str):
        errors.append(FieldError("time_zone", "must be a string such as 'UTC' or 'Europe/Berlin'"))
        time_zone = "UTC"
    channels = _names(data.get("channels", []), "channels", errors)
    subjects = _table(data.get("subjects", {}), "subjects", errors)
    actions = _table(data.get("actions", {}), "actions", errors)
    errors.extend(_check(subjects, actions, channels, time_zone))
    if errors:
        raise InvalidInputError(errors)
    return DdexMapping(subjects=subjects, actions=actions, channels=channels, time_zone=time_zone)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:60]!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def load_mapping(path: str | Path) -> DdexMapping:
    """Read a mapping file (``.toml`` or ``.json``); errors name the file and the key."""
    path = Path(path)
    label = path.name
    suffix = path.suffix.lower()
    if suffix not in {".toml", ".json"}:
        raise InvalidInputError(FieldError(label, "a mapping file must end in .toml or .json"))
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(
            FieldError(label, f"cannot be read: {exc.strerror or exc}")
        ) from None
    if len(raw) > 1024 * 1024:
        raise InvalidInputError(FieldError(label, "is over 1 MiB; a mapping file is small"))
    try:
        text = raw.decode("utf-8")
        if suffix == ".toml":
            data: object = tomllib.loads(text)
        else:
            data = json.loads(text, object_pairs_hook=_unique, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            FieldError(label, f"is not valid JSON: {exc.msg}", exc.lineno)
        ) from None
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        kind = "TOML" if suffix == ".toml" else "JSON"
        raise InvalidInputError(FieldError(label, f"is not valid {kind}: {exc}")) from None
    try:
        return mapping_from_dict(data)
    except InvalidInputError as exc:
        raise InvalidInputError(
            [FieldError(f"{label}:{e.field}" if e.field else label, e.message) for e in exc.errors]
        ) from None
