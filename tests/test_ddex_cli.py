"""``entitlements import FILE.xml [FILE2.xml …]`` as a user runs it: a real process, real
Postgres, one import for several messages, exit codes, the mapping file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
from ddex_import_support import count, reason
from ddex_support import Deal, ern
from test_ddex_import import AD, JUNE, SUB, T1, album
from test_import_cli import ENTITLEMENTS, cli, env_for

from entitlements.store.postgres import PostgresStore

HERE = Path(__file__).parent / "ddex"


def command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ENTITLEMENTS, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


async def test_several_messages_are_one_import_with_a_line_each(
    clean: PostgresStore, pg_dsn: str, tmp_path: Path
) -> None:
    newer = write(
        tmp_path,
        "b.xml",
        album(created="2026-04-01T00:00:00Z", message_id="M-2", deals=(Deal(),)),
    )
    older = write(tmp_path, "a.xml", album(created="2026-03-01T00:00:00Z", message_id="M-1"))
    before = await clean.revision()
    done = cli(pg_dsn, newer, older)
    assert done.returncode == 0, done.stderr
    assert f"committed at revision {before + 1}" in done.stdout
    assert "messages 2 (test 0, stale 0)  releases 2  deals 3  grants 3" in done.stdout
    shown = [line for line in done.stdout.splitlines() if "NewReleaseMessage 4.3" in line]
    assert [line.split()[1] for line in shown] == ["a.xml", "b.xml"]
    assert "inserted 2" in shown[0] and "deleted 1" in shown[1]
    assert await reason(clean, AD, T1, "stream", "GB", JUNE) == "not_licensed"
    assert await reason(clean, SUB, T1, "stream", "GB", JUNE) == "granted"
    again = cli(pg_dsn, older, newer, "--json")
    report = orjson.loads(again.stdout)
    assert report["format"] == "ddex" and report["revision"] == before + 1
    assert report["counts"]["inserted"] == report["counts"]["deleted"] == 0
    assert [x["status"] for x in report["ddex"]["lines"]] == ["stale", "applied"]


async def test_a_bad_second_file_exits_2_and_lands_nothing(
    clean: PostgresStore, pg_dsn: str, tmp_path: Path
) -> None:
    good = write(tmp_path, "good.xml", album(created="2026-03-01T00:00:00Z"))
    broken = album(created="2026-04-01T00:00:00Z").replace(
        b"<TerritoryCode>GB", b"<TerritoryCode>UK"
    )
    bad = write(tmp_path, "bad.xml", broken)
    done = cli(pg_dsn, good, bad)
    assert done.returncode == 2
    assert "bad.xml:DealList/ReleaseDeal[1]/Deal[2]/DealTerms/TerritoryCode" in done.stdout
    assert "'UK' is not an ISO 3166-1 alpha-2 code" in done.stderr
    assert "nothing was imported" in done.stderr
    assert await count(clean) == 0 and await count(clean, "ddex_releases") == 0


async def test_hostile_xml_exits_2_with_the_message(
    clean: PostgresStore, pg_dsn: str, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    evil = write(
        tmp_path,
        "evil.xml",
        f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file://{secret}">]>'
        '<ern:NewReleaseMessage xmlns:ern="http://ddex.net/xml/ern/43">'
        "<MessageHeader><MessageId>&xxe;</MessageId></MessageHeader>"
        "</ern:NewReleaseMessage>".encode(),
    )
    done = cli(pg_dsn, evil)
    assert done.returncode == 2
    assert "evil.xml: has a DOCTYPE declaration; DTDs and entities are not allowed" in done.stderr
    assert "TOP-SECRET" not in done.stdout + done.stderr
    assert await count(clean, "imports") == 1  # on record, failed


async def test_the_format_from_the_markup_or_the_option(
    clean: PostgresStore, pg_dsn: str, tmp_path: Path
) -> None:
    sniffed = write(tmp_path, "deal-feed.txt", b"\xef\xbb\xbf" + ern())
    done = cli(pg_dsn, sniffed, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "dry run" in done.stdout and "NewReleaseMessage" in done.stdout
    unknown = write(tmp_path, "deal-feed.data", b"id,subject\n")
    done = cli(pg_dsn, unknown)
    assert done.returncode == 2 and "cannot tell the format of deal-feed.data" in done.stderr
    named = write(tmp_path, "deal-feed.json", ern())  # the option wins over the extension
    done = cli(pg_dsn, named, "--format", "ddex")
    assert done.returncode == 0, done.stderr
    assert await count(clean) == 1


async def test_what_the_command_refuses(clean: PostgresStore, pg_dsn: str, tmp_path: Path) -> None:
    xml = write(tmp_path, "a.xml", ern())
    ndjson = write(tmp_path, "a.ndjson", b'{"id":"x"}\n')
    mixed = cli(pg_dsn, xml, ndjson)
    assert mixed.returncode == 2 and "different formats" in mixed.stderr
    two = cli(pg_dsn, ndjson, ndjson)
    assert two.returncode == 2 and "only for DDEX messages" in two.stderr
    mapping = write(tmp_path, "m.toml", b'channels = ["x"]\n')
    wrong = cli(pg_dsn, ndjson, "--mapping", mapping)
    assert wrong.returncode == 2 and "--mapping applies to DDEX" in wrong.stderr
    replace = cli(pg_dsn, xml, "--replace-source", "acme")
    assert replace.returncode == 2 and "replace per release" in replace.stderr
    assert await count(clean) == 0


async def test_the_mapping_file_from_the_option_or_the_environment(
    clean: PostgresStore, pg_dsn: str, tmp_path: Path
) -> None:
    mapping = write(
        tmp_path,
        "mapping.toml",
        b'[subjects]\nSubscriptionModel = ["role:plan:premium"]\n',
    )
    message = write(tmp_path, "a.xml", ern())
    done = cli(pg_dsn, message, "--mapping", mapping)
    assert done.returncode == 0, done.stderr
    assert await reason(clean, "plan:premium", T1, "stream", "GB", JUNE) == "granted"
    bad = write(tmp_path, "bad.toml", b'[subjects]\nSubscriptionModell = ["role:x"]\n')
    env = env_for(pg_dsn) | {"ENTITLEMENTS_DDEX_MAPPING": str(bad)}
    done = command(env, "import", str(message))
    assert done.returncode == 2
    assert "bad.toml:subjects.SubscriptionModell" in done.stderr
    # the server refuses to start with it too, before anything else
    served = command(env, "serve", "--port", "0")
    assert served.returncode == 2 and "bad.toml" in served.stderr
    assert os.environ.get("ENTITLEMENTS_DDEX_MAPPING") is None
