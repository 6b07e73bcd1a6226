"""An HTTP upload is streamed end to end: the server's memory does not grow with the body.

The real thing: ``entitlements serve`` in a process of its own, a token minted with
``entitlements token mint``, bodies sent chunked from a generator (no Content-Length,
nothing of them in the test's memory at once), the server's peak RSS read from
``/proc/<pid>/status`` (VmHWM).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from processes import stop_process, wait_ready
from sdk_support import free_port
from test_import_cli import ENTITLEMENTS, env_for
from test_import_helpers import grant_record, ndjson_lines

from entitlements.store.postgres import PostgresStore

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="reads the peak RSS from /proc (Linux)"),
]

BLOCK = 10_000


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def body(rows: int, prefix: str) -> Iterator[bytes]:
    for lo in range(0, rows, BLOCK):
        yield ndjson_lines(grant_record(i, prefix=prefix) for i in range(lo, min(lo + BLOCK, rows)))


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, token: str) -> None:
        self.proc, self.url, self.token = proc, url, token

    def upload(self, rows: int, prefix: str) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/v1/imports",
            content=body(rows, prefix),
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/x-ndjson",
            },
            timeout=300,
        )
        assert response.status_code == 200, response.text[:2000]
        report: dict[str, Any] = response.json()
        return report


@pytest.fixture
def server(clean: PostgresStore, pg_dsn: str, tmp_path: Path) -> Iterator[Server]:
    env = env_for(pg_dsn)
    minted = subprocess.run(
        [ENTITLEMENTS, "token", "mint", "--sub", "ops", "--scope", "entitlements:import"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [ENTITLEMENTS, "serve", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_ready(url, proc, log.read_text)
        yield Server(proc, url, minted.stdout.strip())
    finally:
        stop_process(proc)


def test_an_upload_of_1m_rows_needs_no_more_server_memory_than_100k(server: Server) -> None:
    small = server.upload(100_000, "small")
    assert small["status"] == "committed" and small["counts"]["inserted"] == 100_000
    after_small = peak_rss_mb(server.proc.pid)

    big = server.upload(1_000_000, "big")
    assert big["status"] == "committed" and big["counts"]["inserted"] == 1_000_000
    after_big = peak_rss_mb(server.proc.pid)

    assert after_big - after_small < 50, (
        f"server peak RSS: {after_small:.0f} MB after 100k rows, {after_big:.0f} MB after 1M"
    )
