"""The DDEX mapping file: TOML or JSON, defaults kept, every mistake named."""

from __future__ import annotations

from pathlib import Path

import pytest

from entitlements.ddex import DEFAULT_MAPPING, DdexMapping, load_mapping, mapping_from_dict
from entitlements.errors import InvalidInputError


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(InvalidInputError) as caught:
        load_mapping(path)
    return [(e.field, e.message) for e in caught.value.errors]


def test_defaults() -> None:
    assert DdexMapping() == DEFAULT_MAPPING
    assert DEFAULT_MAPPING.subjects_for("SubscriptionModel") == ("role:ddex:SubscriptionModel",)
    assert DEFAULT_MAPPING.actions_for("OnDemandStream") == ("stream",)
    assert DEFAULT_MAPPING.actions_for("Stream") == ("stream",)
    assert DEFAULT_MAPPING.actions_for("NonInteractiveStream") == ("radio",)
    assert DEFAULT_MAPPING.actions_for("PermanentDownload") == ("download",)
    assert DEFAULT_MAPPING.actions_for("ConditionalDownload") == ("offline",)
    assert DEFAULT_MAPPING.actions_for("TetheredDownload") == ("offline",)
    assert DEFAULT_MAPPING.actions_for("UserMakeAvailableUserProvided") == (
        "ddex.usermakeavailableuserprovided",
    )
    assert DEFAULT_MAPPING.channels == () and DEFAULT_MAPPING.time_zone == "UTC"


def test_a_file_that_sets_only_channels_keeps_every_other_default(tmp_path: Path) -> None:
    toml = load_mapping(write(tmp_path, "m.toml", 'channels = ["PADPIDA2026020202B"]\n'))
    json_ = load_mapping(write(tmp_path, "m.json", '{"channels": ["PADPIDA2026020202B"]}'))
    expected = DdexMapping(channels=("PADPIDA2026020202B",))
    assert toml == json_ == expected
    assert toml.actions_for("NonInteractiveStream") == ("radio",)
    assert toml.subjects_for("PayAsYouGoModel") == ("role:ddex:PayAsYouGoModel",)


def test_a_full_toml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "mapping.toml",
        """
time_zone = "Europe/Berlin"
channels = ["PADPIDA2026020202B", "Example Music"]

[subjects]
SubscriptionModel = ["role:plan:premium", "role:plan:family"]
AdvertisementSupportedModel = "role:plan:free"
"UserDefined:Bundle" = ["role:plan:bundle"]

[actions]
Webcast = ["radio"]
Podcast = []
""",
    )
    mapping = load_mapping(path)
    assert mapping.subjects_for("SubscriptionModel") == ("role:plan:premium", "role:plan:family")
    assert mapping.subjects_for("AdvertisementSupportedModel") == ("role:plan:free",)
    assert mapping.subjects_for("UserDefined:Bundle") == ("role:plan:bundle",)
    assert mapping.subjects_for("PayAsYouGoModel") == ("role:ddex:PayAsYouGoModel",)
    assert mapping.actions_for("Webcast") == ("radio",)
    assert mapping.actions_for("Podcast") == ()
    assert mapping.actions_for("OnDemandStream") == ("stream",)  # defaults kept
    assert mapping.matches_channel(["example MUSIC"]) and not mapping.matches_channel(["Other"])
    assert mapping.zone.utcoffset(None) is None or mapping.time_zone == "Europe/Berlin"


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ('chanels = ["x"]\n', "m.toml:chanels", "unknown key"),
        ("[actions]\nOnDemandStraem = ['stream']\n", "m.toml:actions.OnDemandStraem", "UseType"),
        (
            "[subjects]\nSubscription = ['role:x']\n",
            "m.toml:subjects.Subscription",
            "CommercialModel",
        ),
        (
            "[subjects]\nSubscriptionModel = ['premium']\n",
            "m.toml:subjects.SubscriptionModel.0",
            "role:",
        ),
        ("[subjects]\nSubscriptionModel = []\n", "m.toml:subjects.SubscriptionModel", "1-32"),
        ("[actions]\nStream = ['Stream Now']\n", "m.toml:actions.Stream.0", "lowercase"),
        ("[actions]\nStream = [1]\n", "m.toml:actions.Stream", "list of strings"),
        ("actions = 3\n", "m.toml:actions", "table"),
        ('time_zone = "Mars/Olympus"\n', "m.toml:time_zone", "IANA"),
        ('time_zone = "../../etc/passwd"\n', "m.toml:time_zone", "IANA"),
        ("channels = ['']\n", "m.toml:channels.0", "non-empty"),
        ("channels = 'x' 'y'\n", "m.toml", "not valid TOML"),
    ],
)
def test_mistakes_are_refused_naming_the_key(
    tmp_path: Path, text: str, field: str, message: str
) -> None:
    problems = errors_of(write(tmp_path, "m.toml", text))
    assert any(f == field and message in m for f, m in problems), problems


def test_json_mistakes(tmp_path: Path) -> None:
    assert errors_of(write(tmp_path, "m.json", '{"channels": ["a"], "channels": ["b"]}')) == [
        ("m.json", "is not valid JSON: duplicate key 'channels'")
    ]
    (problem,) = errors_of(write(tmp_path, "m.json", '{"channels": [NaN]}'))
    assert problem[0] == "m.json" and "NaN" in problem[1]
    (problem,) = errors_of(write(tmp_path, "m.json", '{"channels": [\n'))
    assert problem[0] == "m.json" and "not valid JSON" in problem[1]
    assert errors_of(write(tmp_path, "m.json", "[]")) == [
        ("m.json", "a mapping must be a table (an object)")
    ]


def test_all_problems_at_once_and_the_file_kind_by_suffix(tmp_path: Path) -> None:
    problems = errors_of(write(tmp_path, "m.toml", "x = 1\ny = 2\n[actions]\nNope = []\n"))
    assert [f for f, _ in problems] == ["m.toml:x", "m.toml:y", "m.toml:actions.Nope"]
    assert errors_of(write(tmp_path, "m.yaml", "channels: [x]\n")) == [
        ("m.yaml", "a mapping file must end in .toml or .json")
    ]
    assert errors_of(tmp_path / "missing.toml")[0][1].startswith("cannot be read")


def test_the_constructor_validates_too() -> None:
    with pytest.raises(InvalidInputError):
        DdexMapping(time_zone="Nowhere/Land")
    with pytest.raises(InvalidInputError):
        mapping_from_dict({"subjects": {"SubscriptionModel": "not a subject"}})
