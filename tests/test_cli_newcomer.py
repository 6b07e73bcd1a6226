"""What a newcomer reads from the CLI: its help, and an import's plain progress lines."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import orjson
import pytest
from test_import_cli import ENTITLEMENTS, cli, env_for
from test_import_helpers import grant_record, write_ndjson

from entitlements.cli.importing import plain_progress
from entitlements.service.import_report import Progress
from entitlements.store.postgres import PostgresStore

COMMANDS = [
    [],
    ["serve"],
    ["demo"],
    ["import"],
    ["token"],
    ["token", "mint"],
    ["keys"],
    ["keys", "rotate"],
    ["keys", "list"],
]


def help_of(*command: str) -> str:
    done = subprocess.run(
        [ENTITLEMENTS, *command, "--help"],
        env=env_for("postgresql://unused@127.0.0.1:1/none"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "entitlements")
def test_help_has_no_type_placeholders(command: list[str]) -> None:
    text = help_of(*command)
    assert not re.search(r"<(bool|int|str|float|Path|list\[[^]]*\]|int range)>", text), text
    # a flag takes no value: nothing between its name and its help
    for flag in ("--help", "--dry-run", "--skip-invalid", "--json"):
        for line in text.splitlines():
            if line.strip().startswith(flag + " "):
                assert re.match(rf"\s*{flag}\s{{2,}}\S", line), line


def flat(text: str) -> str:
    return " ".join(text.split())  # click wraps at 80 columns


def test_help_reads_like_click() -> None:
    demo = flat(help_of("demo"))
    assert "Usage: entitlements demo [OPTIONS]" in demo
    assert "--port PORT" in demo and "[default: 8000; env var: ENTITLEMENTS_PORT]" in demo
    assert "--host HOST" in demo and "[default: 127.0.0.1; env var: ENTITLEMENTS_HOST]" in demo
    assert "[default: 1; env var: ENTITLEMENTS_WORKERS]" in flat(help_of("serve"))
    imp = flat(help_of("import"))
    assert "Usage: entitlements import [OPTIONS] FILE..." in imp
    assert "--kind [grant|resource]" in imp and "[default: grant]" in imp
    assert "--processes N" in imp and "--replace-source NAME" in imp
    mint = flat(help_of("token", "mint"))
    assert "--role ROLE" in mint and "--ttl DURATION" in mint and "[default: 15m]" in mint


def test_plain_progress_counts_and_sizes() -> None:
    p = Progress(rows=10, bytes=1130, loaded=9, elapsed=1.0, rejected=1, done=True)
    assert plain_progress(p, 1130, 10.0) == (
        "import: 10 rows read, 9 loaded, 1 rejected, 1.1 of 1.1 kB, 10 rows/s"
    )
    small = Progress(rows=1, bytes=120, loaded=1, elapsed=1.0)
    assert "120 of 120 B" in plain_progress(small, 120, 1.0)
    big = Progress(rows=1, bytes=12_500_000, loaded=1, elapsed=1.0)
    assert "12.5 of 25.0 MB" in plain_progress(big, 25_000_000, 1.0)


async def test_plain_progress_agrees_with_the_report(
    clean: PostgresStore, pg_dsn: str, tmp_path: Path
) -> None:
    """Not a terminal: the last progress line gives the report's rows, loaded and rejected."""
    path = write_ndjson(tmp_path / "deals.ndjson", 9)
    bad = dict(grant_record(99), territories=["UK"])
    with path.open("ab") as f:
        f.write(orjson.dumps(bad) + b"\n")
    done = cli(pg_dsn, path, "--skip-invalid", "--json")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    counts = report["counts"]
    assert (counts["rows"], counts["inserted"], counts["rejected"]) == (10, 9, 1)
    lines = [line for line in done.stderr.splitlines() if line.startswith("import: ")]
    assert lines, done.stderr
    size = path.stat().st_size
    assert lines[-1].startswith(
        f"import: 10 rows read, 9 loaded, 1 rejected, {size / 1e3:.1f} of {size / 1e3:.1f} kB,"
    ), lines[-1]


def test_the_service_never_resolves_the_sdk_from_an_index() -> None:
    """`entitlements-client` is on no index: the service must not name it as a dependency
    (pip would look it up there: dependency confusion); the README installs it from ./client."""
    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    names = [
        re.split(r"[\s\[<>=!~;@]", dep, maxsplit=1)[0].lower().replace("_", "-")
        for dep in project["dependencies"]
        + [d for extra in project["optional-dependencies"].values() for d in extra]
    ]
    assert "entitlements-client" not in names
    readme = (root / "README.md").read_text()
    assert 'pip install -e ./client -e ".[test]"' in readme
    assert "pip install entitlements-client" not in readme


def test_without_the_sdk_the_service_says_how_to_install_it() -> None:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-S", "-c", "import entitlements"],  # -S: no site-packages, no SDK
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "pip install -e ./client -e ." in done.stderr
