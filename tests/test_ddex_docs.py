"""The README's "DDEX ERN deal feeds" says what its example messages do: the example is
the file it names, its grants are those the reader makes, and every check in its table
is asked of real Postgres after importing the files the table names, in order."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from ddex_import_support import import_ddex, lines, reason

from entitlements.ddex import load_mapping, read_message
from entitlements.store.postgres import PostgresStore

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "docs" / "examples" / "ddex"
README = (ROOT / "README.md").read_text(encoding="utf-8")
SECTION = README.split("## DDEX ERN deal feeds")[1].split("\n## ")[0]


def checks() -> list[list[str]]:
    table = SECTION.split("<!-- ddex-checks -->")[1].split("<!-- /ddex-checks -->")[0]
    rows = [line for line in table.strip().splitlines()[2:] if line.startswith("|")]
    out = [[c.strip().strip("`") for c in row.strip("|").split("|")] for row in rows]
    assert all(len(cells) == 7 for cells in out)
    return out


def test_the_example_is_the_file() -> None:
    (xml,) = re.findall(r"```xml\n(.*?)```", SECTION, re.S)
    assert xml == (EXAMPLES / "single.xml").read_text(encoding="utf-8")
    (toml,) = re.findall(r"```toml\n(.*?)```", SECTION, re.S)
    assert tomllib.loads(toml) == tomllib.loads((EXAMPLES / "mapping.toml").read_text())
    load_mapping(EXAMPLES / "mapping.toml")


def test_every_file_the_commands_name_exists() -> None:
    named = set(re.findall(r"docs/examples/ddex/[\w.-]+", SECTION))
    assert named and all((ROOT / n).is_file() for n in named), named


def test_the_example_gives_the_grants_the_table_shows() -> None:
    message = read_message(EXAMPLES / "single.xml")
    rows = sorted(
        (g["subject"], g["resource"], g["actions"], g["territories"], g.get("exclude_territories"))
        for r in message.releases
        for g in r.grants
    )
    assert rows == [
        (
            "role:ddex:AdvertisementSupportedModel",
            "release:0602577123452",
            ["stream"],
            ["*"],
            ["DE"],
        ),
        ("role:ddex:PayAsYouGoModel", "track:GBAYE2600001", ["download"], ["GB", "IE"], None),
        (
            "role:ddex:SubscriptionModel",
            "release:0602577123452",
            ["offline", "stream"],
            ["*"],
            None,
        ),
    ]
    assert message.skipped_deals() == {"channel": 1}
    assert message.releases[0].tracks == ("track:GBAYE2600001",)


async def test_each_check_in_the_readme(clean: PostgresStore) -> None:
    imported: str | None = None
    wrong = []
    for after, roles, resource, action, territory, at, answer in checks():
        file = after.split()[0].strip("`")
        if after != imported:
            report = await import_ddex(clean, EXAMPLES / file)
            assert report.status == "committed", report.errors
            if "stale" in after:
                assert lines(report)[0]["status"] == "stale"
            imported = after
        got = await reason(clean, tuple(roles.split(",")), resource, action, territory, at)
        if got != answer:
            wrong.append(f"after {after}: {roles} {resource} {action} {territory} {at}: {got}")
    assert wrong == []


def test_the_readme_has_checks_of_every_kind() -> None:
    answers = {row[-1] for row in checks()}
    assert answers == {"granted", "not_yet_valid", "expired", "territory", "not_licensed"}
