"""DDEX ERN import throughput (10,000 releases / 100,000 tracks) next to NDJSON, one run.

    python benchmarks/bench_ddex.py [--dsn DSN] [--releases 10000] [--tracks 10]
        [--keep] [--out benchmarks/results/ddex.json]

What it does:

1. Creates (dropping it first if present) the database ``entitlements_bench_ddex``
   on the server of ``--dsn`` (default: ``$ENTITLEMENTS_BENCH_DATABASE_URL``, else
   ``postgresql://postgres@127.0.0.1:5432/postgres``), applies ``schema.sql`` and
   drops it at the end (``--keep`` keeps it).
2. Writes (not timed) a batch of ERN 4.3 NewReleaseMessages, one file per
   release as labels deliver them: ``--releases`` albums of ``--tracks`` sound
   recordings each (ISRC, titles, artists, durations: the usual descriptive
   metadata), three deals per album (a worldwide subscription deal for stream
   and offline, an ad-supported deal for worldwide minus DE with an end date, a
   pay-as-you-go download deal in a few territories) and a fourth deal for
   another shop's DistributionChannel (skipped). Each message has its own
   MessageCreatedDateTime. And the same grants and track links as one NDJSON
   file (grants, then ``{"kind": "resource"}`` records giving each track its
   album as a parent): what a team converting the messages itself would import.
3. Imports, end to end as a user runs it, each in a subprocess (wall time, the
   peak RSS of the import process via ``wait4``):
   - *DDEX*: ``entitlements import m-00001.xml … --json`` (every message, one
     import: one transaction, applied in MessageCreatedDateTime order) into empty
     tables: messages/s, deals/s, grants, track links;
   - *DDEX again*: the same messages (every grant unchanged, nothing written);
   - *NDJSON*: the same grants and links, into emptied tables.
4. The reader alone (no database): ``read_message`` over every file, to show
   how much of the DDEX import is XML parsing in Python.

It prints a markdown table and writes JSON with the machine's details (and the
load average, which matters on a shared 2-core box) to ``--out``. A smoke run:
``--releases 200 --out /tmp/ddex.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from bench_import import DEFAULT_DSN, LAUNCHER, load, with_database
from phases import error_of, report_failures, run_phase

from entitlements.ddex import read_message
from entitlements.store.postgres import PostgresStore

DB_NAME = "entitlements_bench_ddex"
SENDER = "PADPIDA2026010101A"
SHOP = "PADPIDA2026020202B"
OTHER_SHOP = "PADPIDA2026090909Z"
TERRITORIES = (("GB", "IE"), ("US", "CA"), ("DE", "AT", "CH"), ("FR",), ("JP",), ("BR", "AR"))
TABLES = (
    "grants, resource_parents, resources, changes, imports, ddex_releases,"
    " ddex_release_aliases, ddex_grants, ddex_track_releases"
)


def icpn(i: int) -> str:
    return f"06025{i:08d}"


def isrc(n: int) -> str:
    """The n-th track's ISRC (unique up to 7.4M tracks)."""
    return f"GBAYE{26 + n // 100_000:02d}{n % 100_000:05d}"


def message(i: int, tracks: int, created: datetime) -> str:
    """One album as an ERN 4.3 NewReleaseMessage."""
    recordings = []
    refs = []
    for t in range(tracks):
        ref = f"A{t + 1}"
        refs.append(ref)
        recordings.append(
            f"""    <SoundRecording>
      <ResourceReference>{ref}</ResourceReference>
      <Type>MusicalWorkSoundRecording</Type>
      <SoundRecordingEdition><ResourceId><ISRC>{isrc(i * tracks + t)}</ISRC></ResourceId>
        <PLine><Year>2026</Year><PLineText>(P) 2026 Acme Records</PLineText></PLine></SoundRecordingEdition>
      <DisplayTitleText>Track {t + 1} of album {i}</DisplayTitleText>
      <DisplayTitle><TitleText>Track {t + 1} of album {i}</TitleText></DisplayTitle>
      <DisplayArtistName>Artist {i % 997}</DisplayArtistName>
      <DisplayArtist><ArtistPartyReference>PArtist</ArtistPartyReference><DisplayArtistRole>MainArtist</DisplayArtistRole></DisplayArtist>
      <Duration>PT3M{t + 10}S</Duration>
      <ParentalWarningType>NotExplicit</ParentalWarningType>
    </SoundRecording>"""
        )
    items = "".join(
        f"<ResourceGroupContentItem><SequenceNumber>{n + 1}</SequenceNumber>"
        f"<ReleaseResourceReference>{r}</ReleaseResourceReference></ResourceGroupContentItem>"
        for n, r in enumerate(refs)
    )
    places = "".join(
        f"<TerritoryCode>{c}</TerritoryCode>" for c in TERRITORIES[i % len(TERRITORIES)]
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ern:NewReleaseMessage xmlns:ern="http://ddex.net/xml/ern/43" LanguageAndScriptCode="en" AvsVersionId="2024">
  <MessageHeader>
    <MessageId>ACME-{i:06d}</MessageId>
    <MessageSender><PartyId>{SENDER}</PartyId><PartyName><FullName>Acme Records</FullName></PartyName></MessageSender>
    <MessageRecipient><PartyId>{SHOP}</PartyId></MessageRecipient>
    <MessageCreatedDateTime>{created.strftime("%Y-%m-%dT%H:%M:%SZ")}</MessageCreatedDateTime>
  </MessageHeader>
  <PartyList>
    <Party><PartyReference>PArtist</PartyReference><PartyName><FullName>Artist {i % 997}</FullName></PartyName></Party>
    <Party><PartyReference>PLabel</PartyReference><PartyName><FullName>Acme Records</FullName></PartyName></Party>
  </PartyList>
  <ResourceList>
{chr(10).join(recordings)}
  </ResourceList>
  <ReleaseList>
    <Release>
      <ReleaseReference>R0</ReleaseReference>
      <ReleaseType>Album</ReleaseType>
      <ReleaseId><ICPN>{icpn(i)}</ICPN></ReleaseId>
      <DisplayTitleText>Album {i}</DisplayTitleText>
      <DisplayTitle><TitleText>Album {i}</TitleText></DisplayTitle>
      <DisplayArtistName>Artist {i % 997}</DisplayArtistName>
      <DisplayArtist><ArtistPartyReference>PArtist</ArtistPartyReference><DisplayArtistRole>MainArtist</DisplayArtistRole></DisplayArtist>
      <ReleaseLabelReference>PLabel</ReleaseLabelReference>
      <Genre><GenreText>Pop</GenreText></Genre>
      <ParentalWarningType>NotExplicit</ParentalWarningType>
      <ResourceGroup><ResourceGroup>{items}</ResourceGroup></ResourceGroup>
    </Release>
  </ReleaseList>
  <DealList>
    <ReleaseDeal>
      <DealReleaseReference>R0</DealReleaseReference>
      <Deal><DealTerms><TerritoryCode>Worldwide</TerritoryCode>
        <ValidityPeriod><StartDate>2026-03-06</StartDate></ValidityPeriod>
        <CommercialModelType>SubscriptionModel</CommercialModelType>
        <UseType>OnDemandStream</UseType><UseType>ConditionalDownload</UseType></DealTerms></Deal>
      <Deal><DealTerms><ExcludedTerritoryCode>DE</ExcludedTerritoryCode>
        <ValidityPeriod><StartDate>2026-03-06</StartDate><EndDate>2027-03-05</EndDate></ValidityPeriod>
        <CommercialModelType>AdvertisementSupportedModel</CommercialModelType>
        <UseType>OnDemandStream</UseType></DealTerms></Deal>
      <Deal><DealTerms>{places}
        <ValidityPeriod><StartDateTime>2026-03-06T00:00:00Z</StartDateTime></ValidityPeriod>
        <CommercialModelType>PayAsYouGoModel</CommercialModelType>
        <UseType>PermanentDownload</UseType>
        <PriceInformation PriceType="StandardRetailPrice"><PriceCode Namespace="{SHOP}">FrontLine</PriceCode></PriceInformation></DealTerms></Deal>
      <Deal><DealTerms><TerritoryCode>Worldwide</TerritoryCode>
        <ValidityPeriod><StartDate>2026-03-06</StartDate></ValidityPeriod>
        <CommercialModelType>SubscriptionModel</CommercialModelType>
        <UseType>OnDemandStream</UseType>
        <DistributionChannel><PartyId><DPID>{OTHER_SHOP}</DPID></PartyId></DistributionChannel></DealTerms></Deal>
    </ReleaseDeal>
  </DealList>
</ern:NewReleaseMessage>
"""


def write_files(folder: Path, releases: int, tracks: int) -> tuple[list[Path], Path]:
    """The messages, and the NDJSON of the grants and links they give (by the reader)."""
    start = datetime(2026, 3, 1, tzinfo=UTC)
    paths = []
    xml_dir = folder / "ern"
    xml_dir.mkdir()
    for i in range(releases):
        path = xml_dir / f"m-{i:06d}.xml"
        path.write_text(message(i, tracks, start + timedelta(seconds=i)), encoding="utf-8")
        paths.append(path)
    ndjson = folder / "same.ndjson"
    with ndjson.open("wb") as out:
        for path in paths:
            read = read_message(path)
            for release in read.releases:
                out.writelines(orjson.dumps(g) + b"\n" for g in release.grants)
                for track in release.tracks:
                    out.write(
                        orjson.dumps(
                            {"kind": "resource", "id": track, "parents": [release.resource]}
                        )
                        + b"\n"
                    )
    return paths, ndjson


def run_cli(dsn: str, *args: str) -> tuple[dict[str, Any], float, float]:
    """``entitlements import …`` in a subprocess: its report, wall seconds, peak RSS MB."""
    exe = str(Path(sys.executable).with_name("entitlements"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTITLEMENTS_")}
    env["ENTITLEMENTS_DATABASE_URL"] = dsn
    with tempfile.TemporaryDirectory() as tmp:
        rusage = Path(tmp) / "rusage.json"
        started = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-I",
                "-S",
                "-c",
                LAUNCHER,
                str(rusage),
                exe,
                "import",
                *args,
                "--json",
            ],
            env=env,
            capture_output=True,
            check=False,
        )
        seconds = time.perf_counter() - started
        code, peak_kb = json.loads(rusage.read_text())
    if code != 0:
        tail = done.stderr[-3000:].decode(errors="replace")
        raise RuntimeError(f"import failed ({code}): {done.stdout.decode()[:2000]}\n{tail}")
    return orjson.loads(done.stdout), seconds, peak_kb / 1024


def ddex_run(dsn: str, paths: list[Path]) -> dict[str, Any]:
    report, seconds, peak = run_cli(dsn, *map(str, paths))
    ddex = report["ddex"]
    return {
        "seconds": round(seconds, 3),
        "messages": ddex["messages"],
        "messages_per_s": round(ddex["messages"] / seconds),
        "deals": ddex["deals"],
        "deals_per_s": round(ddex["deals"] / seconds),
        "grants": ddex["grants"],
        "grants_per_s": round(ddex["grants"] / seconds),
        "links_added": ddex["links_added"],
        "skipped_deals": ddex["skipped_deals"],
        "peak_rss_mb": round(peak, 1),
        "counts": report["counts"],
        "revision": report["revision"],
    }


def ndjson_run(dsn: str, path: Path) -> dict[str, Any]:
    report, seconds, peak = run_cli(dsn, str(path))
    rows = report["counts"]["rows"]
    return {
        "seconds": round(seconds, 3),
        "rows": rows,
        "rows_per_s": round(rows / seconds),
        "peak_rss_mb": round(peak, 1),
        "counts": report["counts"],
    }


def parse_only(paths: list[Path]) -> dict[str, Any]:
    started = time.perf_counter()
    deals = grants = 0
    for path in paths:
        read = read_message(path)
        deals += read.deal_count
        grants += read.grant_count
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 3),
        "messages_per_s": round(len(paths) / seconds),
        "deals_per_s": round(deals / seconds),
        "grants": grants,
    }


async def prepare(admin: str) -> tuple[str, dict[str, str]]:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {DB_NAME}")
        server = {
            "version": await conn.fetchval("SHOW server_version"),
            "shared_buffers": await conn.fetchval("SHOW shared_buffers"),
            "synchronous_commit": await conn.fetchval("SHOW synchronous_commit"),
        }
    finally:
        await conn.close()
    dsn = with_database(admin, DB_NAME)
    store = await PostgresStore.open(dsn, min_size=1, max_size=1)
    await store.close()
    return dsn, server


async def reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"TRUNCATE {TABLES}; CHECKPOINT")
    finally:
        await conn.close()


async def drop(admin: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    finally:
        await conn.close()


def benchmark(admin: str, releases: int, tracks: int, keep: bool) -> dict[str, Any]:
    started = time.perf_counter()
    dsn, server = asyncio.run(prepare(admin))
    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "postgres": server,
            "asyncpg": asyncpg.__version__,
        },
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "releases": releases,
        "tracks": releases * tracks,
        "load_at_start": load(),
    }
    try:
        with tempfile.TemporaryDirectory(prefix="bench_ddex_") as tmp:
            t = time.perf_counter()
            paths, ndjson = write_files(Path(tmp), releases, tracks)
            result["files"] = {
                "generated_s": round(time.perf_counter() - t, 1),
                "messages": len(paths),
                "ern_mb": round(sum(p.stat().st_size for p in paths) / 1e6, 1),
                "ndjson_mb": round(ndjson.stat().st_size / 1e6, 1),
            }
            # Each phase that fails is reported (phases.py) and the others still run.
            runs: dict[str, Any] = {}
            run_phase(runs, "ddex_insert", lambda: ddex_run(dsn, paths) | {"load_before": load()})
            run_phase(
                runs, "ddex_unchanged", lambda: ddex_run(dsn, paths) | {"load_before": load()}
            )

            def ndjson_insert() -> dict[str, Any]:
                asyncio.run(reset(dsn))
                return ndjson_run(dsn, ndjson) | {"load_before": load()}

            run_phase(runs, "ndjson_insert", ndjson_insert)
            result["import"] = runs
            run_phase(result, "parse_only", lambda: parse_only(paths))
    finally:
        if not keep:
            asyncio.run(drop(admin))
    result["load_at_end"] = load()
    result["runtime_s"] = round(time.perf_counter() - started, 1)
    return result


def table(result: dict[str, Any]) -> str:
    runs = result["import"]
    files = result["files"]
    lines = [
        f"DDEX ERN 4.3 import: {result['releases']:,} releases (one message each),"
        f" {result['tracks']:,} tracks, {files['ern_mb']} MB of XML"
        f" (NDJSON of the same grants and links: {files['ndjson_mb']} MB) -"
        f" {result['machine']['cpu_count']} CPUs, Postgres {result['machine']['postgres']['version']},"
        f" load average at start {result['load_at_start']}",
        "",
        "| run | seconds | messages/s | deals/s | grants/s | rows/s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, name in (
        ("ddex_insert", "DDEX, every message in one import, into empty tables"),
        ("ddex_unchanged", "DDEX again (every grant and link unchanged)"),
    ):
        r = runs[key]
        if (error := error_of(r)) is not None:
            lines.append(f"| {name} | failed: {error} | - | - | - | - | - |")
            continue
        lines.append(
            f"| {name} | {r['seconds']:.2f} | {r['messages_per_s']:,} | {r['deals_per_s']:,}"
            f" | {r['grants_per_s']:,} | - | {r['peak_rss_mb']:.0f} |"
        )
    n = runs["ndjson_insert"]
    name = "NDJSON of the same grants and track links (converted by hand)"
    if (error := error_of(n)) is not None:
        lines.append(f"| {name} | failed: {error} | - | - | - | - | - |")
    else:
        lines.append(
            f"| {name} | {n['seconds']:.2f}"
            f" | - | - | - | {n['rows_per_s']:,} | {n['peak_rss_mb']:.0f} |"
        )
    p = result["parse_only"]
    if (error := error_of(p)) is not None:
        lines.append(
            f"| the DDEX reader alone, no database | failed: {error} | - | - | - | - | - |"
        )
    else:
        lines.append(
            f"| the DDEX reader alone, no database | {p['seconds']:.2f} | {p['messages_per_s']:,}"
            f" | {p['deals_per_s']:,} | - | - | - |"
        )
    d = runs["ddex_insert"]
    if error_of(d) or error_of(n):
        return "\n".join(lines)
    lines += [
        "",
        f"DDEX: {d['deals']:,} deals -> {d['grants']:,} grants and {d['links_added']:,} track"
        f" links (skipped: {d['skipped_deals']}); the DDEX import takes"
        f" {d['seconds'] / n['seconds']:.1f}x the NDJSON import of what it produces.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("ENTITLEMENTS_BENCH_DATABASE_URL", DEFAULT_DSN),
        help="a database on the server to create the benchmark database on",
    )
    parser.add_argument("--releases", type=int, default=10_000, help="messages (one album each)")
    parser.add_argument("--tracks", type=int, default=10, help="sound recordings per album")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/ddex.json"), help="JSON results"
    )
    args = parser.parse_args(argv)
    result = benchmark(args.dsn, args.releases, args.tracks, args.keep)
    print(table(result))
    print(f"\n(runtime {result['runtime_s']} s; load average at end {result['load_at_end']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report_failures({**result, **result["import"]})


if __name__ == "__main__":
    sys.exit(main())
