"""``entitlements import`` as a user runs it: a real process, real Postgres, exit codes, output.

Also the two properties only a real process can show: a SIGKILL halfway through a
1M-row import leaves nothing behind, and peak memory does not grow with the file.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_import_helpers import csv_text, grant_record, ndjson_lines, write_ndjson

from entitlements.store.postgres import PostgresStore

ENTITLEMENTS = str(Path(sys.executable).with_name("entitlements"))


def env_for(dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTITLEMENTS_")}
    env["ENTITLEMENTS_DATABASE_URL"] = dsn
    return env


def cli(dsn: str, *args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ENTITLEMENTS, "import", *map(str, args)],
        env=env_for(dsn),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def count(store: PostgresStore) -> int:
    return int(await store.pool.fetchval("SELECT count(*) FROM grants"))


# --- exit codes and output -------------------------------------------------------------


async def test_a_good_file_exits_0_with_a_summary(
    clean: PostgresStore, pg_dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "deals.csv"
    path.write_bytes(csv_text(grant_record(i) for i in range(50)))
    done = cli(pg_dsn, path)
    assert done.returncode == 0, done.stderr
    assert "committed at revision" in done.stdout
    assert "rows 50  inserted 50  updated 0  unchanged 0  deleted 0  rejected 0" in done.stdout
    assert await count(clean) == 50
    again = cli(pg_dsn, path, "--json")
    report = orjson.loads(again.stdout)
    assert report["counts"]["unchanged"] == 50 and report["created_by"].startswith("cli")


async def test_a_bad_file_exits_2_naming_the_line(
    clean: PostgresStore, pg_dsn: str, tmp_path: Path
) -> None:
    records = [grant_record(i) for i in range(20)]
    records[12] = records[12] | {"effect": "maybe"}
    path = tmp_path / "deals.ndjson"
    path.write_bytes(ndjson_lines(records))
    done = cli(pg_dsn, path)
    assert done.returncode == 2
    assert "line 13 effect: must be 'allow' or 'deny'" in done.stdout
    assert "nothing was imported" in done.stderr
    assert await count(clean) == 0
    skipped = cli(pg_dsn, path, "--skip-invalid")
    assert skipped.returncode == 0 and "rejected 1" in skipped.stdout
    assert await count(clean) == 19


async def test_dry_run_and_replace_source_flags(
    clean: PostgresStore, pg_dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "feed.jsonl"
    path.write_bytes(ndjson_lines(grant_record(i) for i in range(5)))
    done = cli(pg_dsn, path, "--dry-run", "--replace-source", "feed-a")
    assert done.returncode == 0 and "dry run" in done.stdout
    assert await count(clean) == 0
    done = cli(pg_dsn, path, "--replace-source", "feed-a")
    assert done.returncode == 0
    assert await clean.pool.fetchval("SELECT count(*) FROM grants WHERE source = 'feed-a'") == 5


async def test_usage_errors_exit_2(clean: PostgresStore, pg_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "deals.txt"
    path.write_bytes(ndjson_lines([grant_record(1)]))
    assert cli(pg_dsn, path).returncode == 2  # format unknown from the extension
    assert cli(pg_dsn, path, "--format", "xml").returncode == 2
    assert cli(pg_dsn, tmp_path / "missing.csv").returncode == 2
    done = cli(pg_dsn, path, "--format", "ndjson", "--replace-source", "no spaces please")
    assert done.returncode == 2 and "replace_source" in done.stderr
    assert cli(pg_dsn, path, "--format", "ndjson").returncode == 0


def test_a_database_failure_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "deals.ndjson"
    path.write_bytes(ndjson_lines([grant_record(1)]))
    done = cli("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2", path, timeout=60)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "error:" in done.stderr


async def test_progress_is_plain_lines_when_not_a_terminal(
    clean: PostgresStore, pg_dsn: str, tmp_path: Path
) -> None:
    path = write_ndjson(tmp_path / "g.ndjson", 60_000)
    done = cli(pg_dsn, path)
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("import: ")]
    assert lines and "rows read" in lines[0] and "rows/s" in lines[0]
    assert "\x1b[" not in done.stderr  # no terminal control sequences in a log


def run_on_a_terminal(dsn: str, path: Path) -> tuple[int, bytes, bytes]:
    """Run the CLI with stderr on a pseudo-terminal: exit code, what the terminal saw, stdout."""
    controller, terminal = pty.openpty()
    with subprocess.Popen(
        [ENTITLEMENTS, "import", str(path)],
        env=env_for(dsn) | {"COLUMNS": "120", "TERM": "xterm"},
        stdout=subprocess.PIPE,
        stderr=terminal,
    ) as proc:
        os.close(terminal)
        seen = b""
        try:
            while True:
                if select.select([controller], [], [], 0.2)[0]:
                    try:
                        chunk = os.read(controller, 65536)
                    except OSError:  # the child closed the terminal
                        break
                    if not chunk:
                        break
                    seen += chunk
                elif proc.poll() is not None:
                    break
        finally:
            os.close(controller)
        out = proc.communicate(timeout=60)[0]
    return proc.returncode, seen, out


async def test_progress_is_a_bar_on_a_terminal(
    clean: PostgresStore, pg_dsn: str, tmp_path: Path
) -> None:
    path = write_ndjson(tmp_path / "g.ndjson", 60_000)
    code, seen, out = run_on_a_terminal(pg_dsn, path)
    assert code == 0
    assert b"rows/s" in seen and b"importing" in seen
    assert b"committed" in out


# --- killed halfway, and memory ------------------------------------------------------------


@dataclass
class MillionRun:
    before: int
    after_kill: int
    killed_status: str
    rerun: dict[str, Any]
    rerun_peak_kb: int


# ru_maxrss of a direct child is useless here: exec keeps the high-water mark of the
# memory the child started with, and a vfork'ed child of pytest starts with pytest's.
# A tiny launcher in between spawns the import and reports the import's own peak.
LAUNCHER = (
    "import json, os, sys\n"
    "pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    json.dump([os.waitstatus_to_exitcode(status), usage.ru_maxrss], f)\n"
)


def run_measured(dsn: str, path: Path, tmp: Path) -> tuple[int, str, int]:
    """Run the CLI, returning exit code, stdout and the import process's own peak RSS (KiB)."""
    result = tmp / f"rusage-{path.stem}.json"
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            LAUNCHER,
            str(result),
            ENTITLEMENTS,
            "import",
            str(path),
            "--json",
        ],
        env=env_for(dsn),
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    code, peak = orjson.loads(result.read_bytes())
    return code, done.stdout, peak


def descendants(pid: int) -> list[str]:
    """The processes under ``pid``, at any depth (Linux: /proc/<pid>/task/<tid>/children)."""
    found: list[str] = []
    todo = [str(pid)]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids = (task / "children").read_text().split()
                found += kids
                todo += kids
    return found


def running(pid: str) -> bool:
    """Whether a process runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def kill_when_loading(dsn: str, path: Path, rows: int = 40_000) -> None:
    """Start an import and SIGKILL it once ``rows`` rows are merged (uncommitted)."""
    with subprocess.Popen(
        [ENTITLEMENTS, "import", str(path), "--processes", "2"],
        env=env_for(dsn),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        for line in proc.stderr:  # plain progress lines, about one a second
            loaded = line.partition(" rows read, ")[2].partition(" loaded")[0].replace(",", "")
            if loaded.isdigit() and int(loaded) >= rows:  # COPY and merges are under way
                break
            assert time.monotonic() < deadline, "the import never started loading"
        else:
            raise AssertionError("the import ended before it could be killed")
        # Read by worker processes (--processes 2), which the kernel kills when their
        # parent dies (PR_SET_PDEATHSIG): nothing of the import is left running.
        children = descendants(proc.pid)
        assert len(children) >= 2, children  # the readers (and multiprocessing's tracker)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while (alive := [c for c in children if running(c)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive, f"processes of the killed import still run: {alive}"


@pytest.fixture(scope="module")
def million(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ndjson(tmp_path_factory.mktemp("big") / "million.ndjson", 1_000_000)


@pytest.fixture(scope="module")
async def million_run(
    million: Path, pg_dsn: str, store: PostgresStore
) -> AsyncIterator[MillionRun]:
    """SIGKILL an import of 1M rows once it is merging, then run the same file again."""
    await store.pool.execute("TRUNCATE grants, changes, imports")
    seed = million.with_name("seed.ndjson")
    seed.write_bytes(ndjson_lines(grant_record(i, prefix="seed") for i in range(10)))
    assert cli(pg_dsn, seed).returncode == 0
    before = await count(store)

    kill_when_loading(pg_dsn, million)
    after_kill = await count(store)

    code, out, peak = run_measured(pg_dsn, million, million.parent)
    assert code == 0, out
    statuses = await store.pool.fetch("SELECT status FROM imports ORDER BY created_at")
    yield MillionRun(before, after_kill, statuses[1]["status"], orjson.loads(out), peak)
    await store.pool.execute("TRUNCATE grants, changes, imports")


def test_a_killed_import_leaves_nothing_and_the_next_run_succeeds(million_run: MillionRun) -> None:
    assert million_run.after_kill == million_run.before == 10
    assert million_run.killed_status == "failed"  # marked by the next run: nobody held its lock
    assert million_run.rerun["status"] == "committed"
    assert million_run.rerun["counts"]["inserted"] == 1_000_000


def test_peak_memory_does_not_grow_with_the_file(
    million_run: MillionRun, pg_dsn: str, tmp_path: Path
) -> None:
    small = write_ndjson(tmp_path / "small.ndjson", 100_000, prefix="m")
    code, out, small_peak = run_measured(pg_dsn, small, tmp_path)
    assert code == 0, out
    grown_mb = (million_run.rerun_peak_kb - small_peak) / 1024
    print(
        f"peak RSS: 100k rows {small_peak / 1024:.1f} MB, 1M rows {million_run.rerun_peak_kb / 1024:.1f} MB"
    )
    assert grown_mb < 50, f"1M rows peaked {grown_mb:.1f} MB above 100k rows"
