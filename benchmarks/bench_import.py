"""Bulk import end to end (1M grants) next to a raw COPY of the same rows, one run.

    python benchmarks/bench_import.py [--dsn DSN] [--rows 1000000] [--formats ndjson,csv]
        [--processes 1]
        [--keep] [--out benchmarks/results/import.json]

What it does:

1. Creates (dropping it first if present) the database ``entitlements_bench_import``
   on the server of ``--dsn`` (default: ``$ENTITLEMENTS_BENCH_DATABASE_URL``, else
   ``postgresql://postgres@127.0.0.1:5432/postgres``), applies ``schema.sql`` and
   drops it at the end (``--keep`` keeps it).
2. Writes ``--rows`` generated grants (label-feed shaped: role and ``*``
   subjects, some user purchases, territory lists, exclusions, windows,
   attributes, takedowns) as NDJSON and CSV files (not timed).
3. The floor, on this machine, in this run — the same rows into a table
   without indexes:
   - *raw COPY, binary*: asyncpg ``copy_records_to_table`` of the rows already
     built as Python tuples (the client stack the import uses, minus parsing and
     validation);
   - *raw COPY, text*: ``COPY ... FROM STDIN`` of a pre-rendered text-format file
     (Postgres parses; almost no Python).
   And what Postgres alone needs to take the rows into a table like ``grants``
   (the same columns, constraints and indexes; empty), the floor of any import
   that keeps the table indexed and serving:
   - *raw COPY, text, into an indexed copy of grants*.
4. The import, end to end, as a user runs it: ``entitlements import FILE --json``
   in a subprocess (its wall time and the peak RSS of it and its worker
   processes, via ``wait4``) into the empty ``grants`` table (every row
   inserted), the same with ``--processes N`` (read by N worker processes;
   ``--processes``, default 1),
   then the same file again (every row unchanged: nothing written), then CSV
   into an emptied table.
5. The Python ceiling: the reader and validator alone over the NDJSON file (no
   database), to show how much of the import is per-row Python.

It prints a markdown table and writes JSON with the machine's details (and the
load average, which matters on a shared 2-core box) to ``--out``.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from phases import error_of, report_failures, run_phase

from entitlements.domain.model import grant_from_mapping
from entitlements.service.import_formats import make_reader
from entitlements.service.import_run import ImportRun
from entitlements.service.imports import ImportLimits, ImportOptions, ImportReport
from entitlements.store.import_rows import GrantRows
from entitlements.store.postgres import PostgresStore

DB_NAME = "entitlements_bench_import"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
TERRITORIES = (["GB", "IE"], ["*"], ["US", "CA"], ["DE", "AT", "CH"], ["FR"], ["JP"], ["BR", "AR"])
FLOOR_COLUMNS = [
    "id",
    "subject",
    "resource",
    "actions",
    "territories",
    "exclude_territories",
    "valid_from",
    "valid_until",
    "effect",
    "attributes",
    "source",
]


def record(i: int) -> dict[str, Any]:
    """The i-th grant of a label feed (deterministic)."""
    r: dict[str, Any] = {
        "id": f"deal-{i:08d}",
        "subject": ("role:plan:premium", "role:plan:free", "*", "role:plan:family")[i % 4]
        if i % 11
        else f"user:u{i % 50_000}",
        "resource": f"track:USRC{i:08d}",
        "actions": ["stream"] if i % 3 else ["stream", "download"],
        "territories": TERRITORIES[i % 7],
        "source": "label-feed",
    }
    if i % 10 == 0:
        r["territories"], r["exclude_territories"] = ["*"], ["DE", "FR"]
    if i % 10 in (1, 2):
        r["valid_from"] = "2026-01-01T00:00:00Z"
    if i % 10 == 1:
        r["valid_until"] = "2027-01-01T00:00:00Z"
    if i % 10 == 3:
        r["attributes"] = {"quality": "hifi", "model": "subscription"}
    if i % 50 == 4:
        r["effect"] = "deny"
    return r


def csv_line(r: dict[str, Any]) -> str:
    attributes = r.get("attributes")
    cells = [
        r["id"],
        r["subject"],
        r["resource"],
        ";".join(r["actions"]),
        ";".join(r["territories"]),
        ";".join(r.get("exclude_territories", ())),
        r.get("valid_from", ""),
        r.get("valid_until", ""),
        r.get("effect", ""),
        '"' + orjson.dumps(attributes).decode().replace('"', '""') + '"' if attributes else "",
        r["source"],
    ]
    return ",".join(cells) + "\n"


def copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, list):
        return "{" + ",".join(value) + "}"
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def floor_row(r: dict[str, Any]) -> tuple[Any, ...]:
    """The staged row of a record, built without parsing or validation (for the floor)."""
    attributes = r.get("attributes")
    return (
        r["id"],
        r["subject"],
        r["resource"],
        sorted(r["actions"]),
        sorted(r["territories"]),
        sorted(r.get("exclude_territories", ())),
        datetime.fromisoformat(r["valid_from"]) if "valid_from" in r else None,
        datetime.fromisoformat(r["valid_until"]) if "valid_until" in r else None,
        r.get("effect", "allow"),
        orjson.dumps(attributes).decode() if attributes else None,
        r["source"],
    )


def write_files(folder: Path, rows: int) -> dict[str, Path]:
    paths = {
        "ndjson": folder / "grants.ndjson",
        "csv": folder / "grants.csv",
        "copy": folder / "grants.copy",
    }
    header = ",".join(FLOOR_COLUMNS) + "\n"
    with (
        paths["ndjson"].open("wb") as nd,
        paths["csv"].open("w", encoding="utf-8") as cs,
        paths["copy"].open("w", encoding="utf-8") as cp,
    ):
        cs.write(header)
        for lo in range(0, rows, 50_000):
            block = [record(i) for i in range(lo, min(lo + 50_000, rows))]
            nd.write(b"".join(orjson.dumps(r) + b"\n" for r in block))
            cs.write("".join(csv_line(r) for r in block))
            cp.write(
                "".join(
                    "\t".join(
                        copy_text(v.isoformat() if isinstance(v, datetime) else v)
                        for v in floor_row(r)
                    )
                    + "\n"
                    for r in block
                )
            )
    return paths


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ru_maxrss of a direct child would be wrong: exec keeps the high-water mark of the
# memory the child started with (a vfork'ed child of this process starts with ours,
# tuples of the floor included). A tiny launcher in between reports the import's own.
LAUNCHER = (
    "import json, os, sys\n"
    "pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    json.dump([os.waitstatus_to_exitcode(status), usage.ru_maxrss], f)\n"
)


def run_cli(dsn: str, path: Path, *args: str) -> dict[str, Any]:
    """``entitlements import`` in a subprocess: wall seconds, its own peak RSS, its report."""
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
                str(path),
                "--json",
                *args,
            ],
            env=env,
            capture_output=True,
            check=False,
        )
        seconds = time.perf_counter() - started
        code, peak_kb = json.loads(rusage.read_text())
    out = done.stdout
    if code != 0:
        tail = done.stderr[-3000:].decode(errors="replace")
        raise RuntimeError(f"import failed ({code}): {out.decode()[:2000]}\n{tail}")
    report = orjson.loads(out)
    return {
        "seconds": round(seconds, 3),
        "rows_per_s": round(report["counts"]["rows"] / seconds),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "counts": report["counts"],
        "revision": report["revision"],
    }


def parse_only(path: Path) -> dict[str, Any]:
    """Reader + validator + COPY payloads, no database: the per-row Python cost."""
    report = ImportReport(
        id="bench",
        status="running",
        format="ndjson",
        kind="grant",
        source=None,
        dry_run=True,
        skip_invalid=False,
        created_by="bench",
        started_at=datetime.now(UTC),
    )
    run = ImportRun(ImportOptions(format="ndjson"), ImportLimits(), report)
    reader = make_reader("ndjson", run)
    started = time.perf_counter()
    with path.open("rb") as f:
        while chunk := f.read(1 << 18):
            reader.feed(chunk)
            if run.batch_ready():
                run.grants.prepare()  # what the writer is handed (ids, COPY payload)
                run.grants = GrantRows()
    reader.finish()
    seconds = time.perf_counter() - started
    validate_only = time.perf_counter()
    with path.open("rb") as f:
        for n, line in enumerate(f):
            if n >= 100_000:
                break
            grant_from_mapping(orjson.loads(line))
    per_row_us = (time.perf_counter() - validate_only) / 100_000 * 1e6
    return {
        "seconds": round(seconds, 3),
        "rows_per_s": round(reader.records / seconds),
        "grant_from_mapping_us_per_row": round(per_row_us, 2),
    }


async def floors(dsn: str, paths: dict[str, Path], rows: int) -> dict[str, Any]:
    ddl = """(id text, subject text, resource text, actions text[], territories text[],
              exclude_territories text[], valid_from timestamptz, valid_until timestamptz,
              effect text, attributes text, source text)"""
    built = time.perf_counter()
    tuples = [floor_row(record(i)) for i in range(rows)]
    build_seconds = time.perf_counter() - built
    conn = await asyncpg.connect(dsn)
    out: dict[str, Any] = {}
    try:
        await conn.execute(f"DROP TABLE IF EXISTS floor_binary; CREATE TABLE floor_binary {ddl}")
        await conn.execute(f"DROP TABLE IF EXISTS floor_text; CREATE TABLE floor_text {ddl}")
        await conn.execute("CHECKPOINT")
        load_before = load()
        started = time.perf_counter()
        await conn.copy_records_to_table(
            "floor_binary", records=tuples, columns=FLOOR_COLUMNS, timeout=3600
        )
        seconds = time.perf_counter() - started
        out["raw_copy_binary"] = {
            "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds),
            "load_before": load_before,
            "tuples_built_s": round(build_seconds, 2),
        }
        del tuples
        await conn.execute("CHECKPOINT")
        load_before = load()
        started = time.perf_counter()
        await conn.copy_to_table(
            "floor_text", source=paths["copy"], columns=FLOOR_COLUMNS, timeout=3600
        )
        seconds = time.perf_counter() - started
        out["raw_copy_text"] = {
            "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds),
            "load_before": load_before,
        }
        await conn.execute(
            """DROP TABLE IF EXISTS floor_indexed;
               CREATE TABLE floor_indexed (LIKE grants INCLUDING ALL);
               ALTER TABLE floor_indexed ALTER revision SET DEFAULT 0;
               CHECKPOINT"""
        )
        load_before = load()
        started = time.perf_counter()
        await conn.copy_to_table(
            "floor_indexed", source=paths["copy"], columns=FLOOR_COLUMNS, timeout=3600
        )
        seconds = time.perf_counter() - started
        out["raw_copy_indexed"] = {
            "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds),
            "load_before": load_before,
            "indexes": await conn.fetchval(
                "SELECT count(*) FROM pg_indexes WHERE tablename = 'floor_indexed'"
            ),
        }
        await conn.execute(
            "DROP TABLE floor_binary; DROP TABLE floor_text; DROP TABLE floor_indexed; CHECKPOINT"
        )
    finally:
        await conn.close()
    return out


async def reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE grants, changes, imports; CHECKPOINT")
    finally:
        await conn.close()


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


async def drop(admin: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    finally:
        await conn.close()


def benchmark(
    admin: str, rows: int, formats: list[str], keep: bool, processes: int = 1
) -> dict[str, Any]:
    started = time.perf_counter()
    dsn, server = asyncio.run(prepare(admin))
    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "postgres": server,
            "asyncpg": asyncpg.__version__,
            "orjson": orjson.__version__,
        },
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rows": rows,
        "load_at_start": load(),
    }
    try:
        with tempfile.TemporaryDirectory(prefix="bench_import_") as tmp:
            t = time.perf_counter()
            paths = write_files(Path(tmp), rows)
            result["files"] = {
                "generated_s": round(time.perf_counter() - t, 1),
                "ndjson_mb": round(paths["ndjson"].stat().st_size / 1e6, 1),
                "csv_mb": round(paths["csv"].stat().st_size / 1e6, 1),
            }
            # Each phase that fails is reported (phases.py) and the others still run.
            found: dict[str, Any] = {}
            if run_phase(found, "floors", lambda: asyncio.run(floors(dsn, paths, rows))):
                result.update(found["floors"])
            else:
                for name in ("raw_copy_text", "raw_copy_binary", "raw_copy_indexed"):
                    result[name] = found["floors"]
            runs: dict[str, Any] = {}

            def cli(path: Path, *args: str, empty_first: bool = True) -> dict[str, Any]:
                if empty_first:
                    asyncio.run(reset(dsn))
                before = load()
                return run_cli(dsn, path, *args) | {"load_before": before}

            for fmt in formats:
                run_phase(runs, f"{fmt}_insert", lambda fmt=fmt: cli(paths[fmt]))
                if fmt == "ndjson":
                    run_phase(
                        runs,
                        "ndjson_insert_workers",
                        lambda: cli(paths["ndjson"], "--processes", str(processes)),
                    )
                    run_phase(
                        runs, f"{fmt}_unchanged", lambda: cli(paths["ndjson"], empty_first=False)
                    )
            result["import"] = runs
            run_phase(result, "parse_only", lambda: parse_only(paths["ndjson"]))
    finally:
        if not keep:
            asyncio.run(drop(admin))
    done = [r for r in result.get("import", {}).values() if not error_of(r)]
    first = result.get("import", {}).get("ndjson_insert") or (done[0] if done else None)

    def times(floor: str) -> float | None:
        if first is None or error_of(first) or error_of(result.get(floor)):
            return None
        return round(first["seconds"] / result[floor]["seconds"], 2)

    result["targets"] = {
        "rows_per_s_at_least": 150_000,
        "rows_per_s": None if first is None or error_of(first) else first["rows_per_s"],
        "times_raw_copy_at_most": 3.0,
        "times_raw_copy_binary": times("raw_copy_binary"),
        "times_raw_copy_text": times("raw_copy_text"),
        "times_raw_copy_indexed": times("raw_copy_indexed"),
    }
    result["load_at_end"] = load()
    result["runtime_s"] = round(time.perf_counter() - started, 1)
    return result


def table(result: dict[str, Any]) -> str:
    text_floor = result["raw_copy_text"].get("seconds")
    binary_floor = result["raw_copy_binary"].get("seconds")
    lines = [
        f"Bulk import, {result['rows']:,} grants - {result['machine']['cpu_count']} CPUs,"
        f" Postgres {result['machine']['postgres']['version']},"
        f" load average at start {result['load_at_start']}",
        "",
        "| run | seconds | rows/s | vs text COPY | vs binary COPY | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def line(name: str, r: dict[str, Any]) -> None:
        if (error := error_of(r)) is not None:
            lines.append(f"| {name} | failed: {error} | — | — | — | — |")
            return
        peak = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-"
        vs_text = f"{r['seconds'] / text_floor:.1f}x" if text_floor else "—"
        vs_binary = f"{r['seconds'] / binary_floor:.1f}x" if binary_floor else "—"
        lines.append(
            f"| {name} | {r['seconds']:.2f} | {r['rows_per_s']:,} | {vs_text}"
            f" | {vs_binary} | {peak} |"
        )

    line("raw COPY, text (server-side parse, unindexed table)", result["raw_copy_text"])
    line("raw COPY, binary (asyncpg, prebuilt tuples, unindexed table)", result["raw_copy_binary"])
    indexed = result["raw_copy_indexed"]
    line(
        f"raw COPY, text, into an empty copy of grants ({indexed.get('indexes', '?')} indexes):"
        " Postgres alone",
        indexed,
    )
    names = {
        "ndjson_insert": "import NDJSON into empty grants (all inserted)",
        "ndjson_insert_workers": "the same, read by worker processes (--processes N)",
        "ndjson_unchanged": "import NDJSON again (all unchanged)",
        "csv_insert": "import CSV into empty grants (all inserted)",
    }
    for key, r in result["import"].items():
        line(names.get(key, key), r)
    parse = result["parse_only"]
    line(
        f"parse + validate only, no database (grant_from_mapping alone"
        f" {parse.get('grant_from_mapping_us_per_row', '?')} us/row)",
        parse,
    )
    t = result["targets"]
    if None in (t["rows_per_s"], t["times_raw_copy_binary"], t["times_raw_copy_text"]):
        lines += ["", "Targets: not judged (a phase they need failed)."]
        return "\n".join(lines)
    met = "met" if t["rows_per_s"] >= t["rows_per_s_at_least"] else "NOT met"
    at_most = t["times_raw_copy_at_most"]

    def within(times: float) -> str:
        return f"{times}x, {'met' if times <= at_most else 'NOT met'}"

    indexed_vs_text = round(indexed["seconds"] / text_floor, 2)
    lines += [
        "",
        f"Targets: >= {t['rows_per_s_at_least']:,} rows/s: {met} ({t['rows_per_s']:,})."
        f" Within {at_most:.0f}x of a raw COPY: of the binary COPY"
        f" {within(t['times_raw_copy_binary'])}; of the text COPY"
        f" {within(t['times_raw_copy_text'])} (Postgres alone into the indexed table is"
        f" {indexed_vs_text}x the text COPY; the import is {t['times_raw_copy_indexed']}x that).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("ENTITLEMENTS_BENCH_DATABASE_URL", DEFAULT_DSN),
        help="a database on the server to create the benchmark database on",
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--formats", default="ndjson,csv", help="comma-separated: ndjson,csv")
    parser.add_argument(
        "--processes", type=int, default=1, help="reader processes for the second NDJSON run"
    )
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/import.json"), help="JSON results"
    )
    args = parser.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    result = benchmark(args.dsn, args.rows, formats, args.keep, args.processes)
    print(table(result))
    print(f"\n(runtime {result['runtime_s']} s; load average at end {result['load_at_end']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report_failures({**result, **result.get("import", {})})


if __name__ == "__main__":
    sys.exit(main())
