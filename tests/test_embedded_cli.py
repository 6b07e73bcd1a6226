"""The embedded default shared by real processes, as a user runs them (issue 10).

``entitlements demo`` or ``serve`` serves on the embedded Postgres of a temporary
``ENTITLEMENTS_DATA_DIR`` (no ``ENTITLEMENTS_DATABASE_URL``), and other
``entitlements`` commands run next to it, each a real process:

- a ``token mint``, ``keys list`` or ``import`` reuses the running server, says
  so, and leaves it running: the demo still answers, ``/readyz`` stays 200 (they
  used to stop it on exit, for good);
- when the database goes away under ``serve`` and a later command brings it
  back, ``serve`` recovers by itself, and its log shows the outage as one line,
  not a traceback per reconnect attempt;
- a ``demo`` ended with SIGTERM, the last user of its server, stops it.

As root the embedded server runs as another user and must be able to enter every
parent of its data dir: these tests use a ``0755`` directory of their own in the
system temp dir (the pattern of test_embedded.py); any other user a pytest one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fault_support import free_port
from support import eventually
from test_import_helpers import write_ndjson

from entitlements.store.embedded import EmbeddedPostgres

ENTITLEMENTS = str(Path(sys.executable).with_name("entitlements"))
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
RECONNECT_LINE = "Failed to restore the pool connection floor"
CHECK = {"resource": "track:USRC17607839", "action": "stream", "territory": "JP"}


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh ENTITLEMENTS_DATA_DIR; whatever server is left in it is stopped afterwards."""
    if IS_ROOT:
        base = Path(tempfile.mkdtemp(prefix="entitlements-test-embedded-cli-"))
        base.chmod(0o755)
    else:
        base = tmp_path
    try:
        yield base / "data"
    finally:
        EmbeddedPostgres(base / "data", root_cluster_base=base / "root-base").stop()
        if IS_ROOT:
            shutil.rmtree(base, ignore_errors=True)


def env_for(data_dir: Path) -> dict[str, str]:
    """The embedded default: no DSN, nothing of the test session's own configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENTITLEMENTS_", "PG"))}
    env["ENTITLEMENTS_DATA_DIR"] = str(data_dir)
    return env


async def cli(data_dir: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [ENTITLEMENTS, *map(str, args)],
        env=env_for(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    client: httpx.AsyncClient
    log: Path

    async def ready(self) -> bool:
        try:
            return (await self.client.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    async def check(self, token: str) -> httpx.Response:
        return await self.client.post(
            "/v1/check", json=CHECK, headers={"Authorization": f"Bearer {token}"}
        )


@contextlib.asynccontextmanager
async def serving(command: str, data_dir: Path, logs: Path) -> AsyncIterator[Served]:
    """``entitlements <command>`` on a free port until the block ends, then SIGTERM."""
    port = free_port()
    log = logs / f"{command}.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            ENTITLEMENTS, command, "--port", str(port),
            env=env_for(data_dir), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=err,
        )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            served = Served(proc, client, log)

            async def up() -> bool:
                assert proc.returncode is None, log.read_text()
                return await served.ready()

            assert await eventually(up, timeout=60, interval=0.1), log.read_text()
            yield served
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def server_pid(data_dir: Path) -> int | None:
    """The postmaster of the data dir's cluster, if it runs."""
    pid_file = EmbeddedPostgres(data_dir).cluster_dir / "postmaster.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().split()[0])
    proc_stat = Path(f"/proc/{pid}/stat")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    if proc_stat.exists() and proc_stat.read_text().rpartition(")")[2].split()[0] == "Z":
        return None
    return pid


async def test_commands_run_while_the_demo_serves_leave_its_database_up(
    data_dir: Path, tmp_path: Path
) -> None:
    reusing = f"using the embedded Postgres already running in {data_dir}"
    async with serving("demo", data_dir, tmp_path) as demo:
        pid = server_pid(data_dir)
        assert pid is not None

        minted = await cli(data_dir, "token", "mint", "--sub", "alice", "--role", "plan:premium")
        assert minted.returncode == 0, minted.stderr
        assert reusing in minted.stderr
        assert "starting embedded Postgres" not in minted.stderr
        token = minted.stdout.strip()

        assert (await demo.client.get("/readyz")).status_code == 200
        checked = await demo.check(token)
        assert checked.status_code == 200, checked.text
        assert checked.json()["allowed"] is True  # the demo's premium deal, as advertised

        listed = await cli(data_dir, "keys", "list")
        assert listed.returncode == 0, listed.stderr
        assert reusing in listed.stderr
        feed = write_ndjson(tmp_path / "feed.ndjson", 3)
        imported = await cli(data_dir, "import", feed)
        assert imported.returncode == 0, imported.stderr
        assert reusing in imported.stderr

        await asyncio.sleep(0.3)  # give a wrongly stopped server time to be missed
        assert (await demo.client.get("/readyz")).status_code == 200
        assert (await demo.check(token)).status_code == 200
        assert server_pid(data_dir) == pid  # the same server throughout
        assert "Traceback" not in demo.log.read_text()
    # The demo was its server's last user: ended with SIGTERM, it stopped it.
    assert demo.proc.returncode is not None
    assert server_pid(data_dir) is None, demo.log.read_text()


async def test_serve_recovers_when_its_database_restarts(data_dir: Path, tmp_path: Path) -> None:
    async with serving("serve", data_dir, tmp_path) as serve:
        minted = await cli(data_dir, "token", "mint", "--sub", "ops", "--role", "plan:premium")
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.strip()
        assert (await serve.check(token)).status_code == 200

        # The database goes away under the running service (an operator stops it) ...
        await asyncio.to_thread(EmbeddedPostgres(data_dir).stop)
        down = await serve.client.get("/readyz")
        assert down.status_code == 503
        assert down.headers["content-type"].startswith("application/problem+json")
        await asyncio.sleep(1.5)  # the pool tries to reconnect, and fails, meanwhile

        # ... and a command run now starts it again, and leaves it to serve when done.
        listed = await cli(data_dir, "keys", "list")
        assert listed.returncode == 0, listed.stderr
        assert f"starting embedded Postgres in {data_dir}" in listed.stderr
        assert await eventually(serve.ready, timeout=15, interval=0.2), serve.log.read_text()
        checked = await serve.check(token)
        assert checked.status_code == 200, checked.text
        assert server_pid(data_dir) is not None

    log = serve.log.read_text()
    assert "Traceback" not in log, log
    lines = log.splitlines()
    reconnects = [i for i, line in enumerate(lines) if RECONNECT_LINE in line]
    # The outage is in the log, as one line per reported failure (asyncpg's pool notices
    # it at once: the server closes its connections), at most one per 10 s; the outage
    # here lasts 3-8 s.
    assert 1 <= len(reconnects) <= 2, log
    for i in reconnects:
        assert lines[i].count(RECONNECT_LINE) == 1
        assert i + 1 == len(lines) or not lines[i + 1].startswith((" ", "\t")), log
