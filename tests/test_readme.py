"""The READMEs are tested: every shell block runs, as pasted, against a fresh demo.

``tests/readme_runner.py`` holds the convention (also at the top of README.md). The demo
is ``entitlements demo`` on the embedded Postgres, in a new data directory, with no
``ENTITLEMENTS_DATABASE_URL`` or ``ENTITLEMENTS_REDIS_URL``: what a newcomer runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from processes import free_port, servers_tempdir
from readme_runner import (
    demo_exports,
    environment,
    mismatches,
    run_block,
    shell_blocks,
    shown_pairs,
    visible,
)

ROOT = Path(__file__).resolve().parent.parent
READMES = [ROOT / "README.md", ROOT / "client" / "README.md"]
BINDIR = Path(sys.executable).parent


@dataclass
class Demo:
    port: int
    workdir: Path
    env: dict[str, str]
    output: str


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    """``entitlements demo --port <free>`` on a fresh embedded Postgres, as a newcomer starts it."""
    workdir = servers_tempdir("entitlements-readme-")
    port = free_port()
    env = environment(os.environ, BINDIR, ENTITLEMENTS_DATA_DIR=str(workdir / "data"))
    log = workdir / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BINDIR / "entitlements"), "demo", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            text = log.read_text(errors="replace")
            if "API docs:" in text:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                        break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"entitlements demo did not come up:\n{text[-3000:]}")
            time.sleep(0.2)
        yield Demo(port, workdir, env, text)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_demo_prints_every_token_the_readmes_use(demo: Demo) -> None:
    exported = demo_exports(demo.output)
    assert set(exported) >= {"ALICE", "BOB", "OPS", "SERVICE"}
    used = set()
    for readme in READMES:
        for block in shell_blocks(readme):
            if block.skip is None:
                used |= {
                    name
                    for name in ("ALICE", "BOB", "OPS", "SERVICE", "FULFILMENT_SERVICE")
                    if f"${name}" in block.source
                }
    assert used <= set(exported), f"the READMEs use {sorted(used - set(exported))}"
    # bob's two lines: GB (granted) and JP (territory), as the demo's comment says
    bob_lines = [line for line in demo.output.splitlines() if "Bearer $BOB" in line]
    assert any('"territory":"GB"' in line for line in bob_lines)
    assert any('"territory":"JP"' in line for line in bob_lines)


def test_every_readme_shell_block_runs_as_pasted(demo: Demo, tmp_path: Path) -> None:
    """Each block exits 0 and prints what its ``# {…}`` comments show, in README order."""
    cwd = tmp_path / "checkout"
    cwd.mkdir()
    for name in ("docs", "client"):  # the blocks' relative paths, without writing to the repo
        (cwd / name).symlink_to(ROOT / name)
    player = free_port()
    env = {
        **demo.env,
        **demo_exports(demo.output),
        "PLAYER_PORT": str(player),
        "ENTITLEMENTS_URL": f"http://127.0.0.1:{demo.port}",
    }
    substitutions = {
        "127.0.0.1:8000": f"127.0.0.1:{demo.port}",
        "127.0.0.1:8080": f"127.0.0.1:{player}",
    }
    sessions: list[int] = []
    ran = 0
    try:
        for readme in READMES:
            blocks = shell_blocks(readme)
            assert blocks, f"no shell blocks found in {readme}"
            for block in blocks:
                if block.skip is not None:
                    continue
                outcome = run_block(
                    block,
                    cwd=cwd,
                    env=env,
                    state=tmp_path / "state.sh",
                    substitutions=substitutions,
                    sessions=sessions,
                )
                ran += 1
                assert outcome.returncode == 0 and not outcome.problems, (
                    f"{block.where}: exit {outcome.returncode}\n"
                    + "".join(f"  {p}\n" for p in outcome.problems)
                    + f"--- block ---\n{block.source}--- stdout ---\n{visible(outcome.stdout)}\n"
                    f"--- stderr ---\n{outcome.stderr[-3000:]}"
                )
    finally:
        for session in sessions:  # the example player, left running in the background
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(session, signal.SIGTERM)
    assert ran >= 8


def test_skipped_blocks_say_why() -> None:
    for readme in READMES:
        for block in shell_blocks(readme):
            if block.skip is not None:
                assert block.skip != "marked", f"{block.where}: a skip without a reason"


def test_shown_answers_are_matched_key_by_key() -> None:
    shown = '{"allowed":true,"reason":"granted","grant":"ddex:release:1:…","revision":19,"x":"..."}'
    assert shown_pairs(shown) == [
        ("allowed", True),
        ("reason", "granted"),
        ("grant", "ddex:release:1:…"),
        ("revision", 19),
    ]
    actual = {"allowed": True, "reason": "granted", "grant": "ddex:release:1:abc", "revision": 19}
    assert mismatches(shown, actual) == []
    assert mismatches('{"allowed":false}', actual) == ['"allowed": false shown, got true']
    assert mismatches('{"counts":{"rows":2}}', {"counts": {"rows": 2}}) == []
    assert mismatches('{"ancestors":["a","b"]}', {"ancestors": ["a", "b"]}) == []
    assert mismatches('{"revision":1}', {"revision": True}) != []
