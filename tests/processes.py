"""Server processes that tests start and stop by PID, and nothing else.

Every long-running server a fixture starts is a :class:`ServerProcess`: one
child of the pytest process (no daemonizing, no wrapper), its output in a log
file in its own directory, stopped by signalling *its* PID and reaping it.
Three layers make sure none outlives the run:

1. fixtures stop their servers at teardown (which pytest runs on failures,
   timeouts and Ctrl-C too);
2. an ``atexit`` hook SIGKILLs any server still running when the interpreter
   exits (a fixture whose teardown could not run);
3. each server is started with a parent-death signal (Linux ``PR_SET_PDEATHSIG``),
   so even a SIGKILLed pytest takes its servers with it. The signal fires when
   the *thread* that started the child ends, so servers are only ever started
   from the main thread (the event loop's), never from a worker thread.

Postgres and PgBouncer refuse to run as root. When the tests run as root,
servers run as an unprivileged user (``postgres`` if it exists, else
``nobody``) in directories owned by that user; otherwise they run as the
current user.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from binaries import usable_by_others

__all__ = [
    "RunAs",
    "ServerProcess",
    "free_port",
    "free_port_pair",
    "make_owned_dir",
    "run_command",
    "server_user",
    "servers_tempdir",
    "stop_process",
    "wait_for",
    "wait_ready",
]

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RunAs:
    """An unprivileged OS user to run servers as (only when the tests run as root)."""

    name: str
    uid: int
    gid: int


def server_user() -> RunAs | None:
    """``None`` when not root (servers run as us); else ``postgres``, or ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return RunAs(name, entry.pw_uid, entry.pw_gid)
    raise RuntimeError("running as root, and no 'postgres' or 'nobody' user to run servers as")


_OWNER_FILE = ".owner-pid"


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_abandoned(root: Path, prefix: str) -> None:
    """Remove earlier runs' directories whose pytest process is gone (it was SIGKILLed,
    so its teardown never ran; its servers died with it). A directory without an
    owner file, or whose owner lives, is left alone."""
    for directory in root.glob(f"{prefix}*"):
        try:
            owner = int((directory / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _pid_exists(owner):
            shutil.rmtree(directory, ignore_errors=True)


def servers_tempdir(prefix: str) -> Path:
    """A fresh directory for one fixture's servers, enterable by the server user.

    pytest's own temporary root is private (0700, owned by us), so an
    unprivileged server user could not reach a data directory under it. This
    is a sibling under the system temp directory (``/tmp`` when ``TMPDIR`` is
    private), mode 0755, recording our PID; remove it with ``shutil.rmtree`` at
    teardown. Directories of earlier runs that were killed are removed here.
    """
    root = Path(tempfile.gettempdir())
    if server_user() is not None and not usable_by_others(root):
        root = Path("/tmp")
    _sweep_abandoned(root, prefix)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    path.chmod(0o755)
    (path / _OWNER_FILE).write_text(str(os.getpid()))
    return path


def make_owned_dir(path: Path, run_as: RunAs | None, mode: int = 0o700) -> Path:
    """Create ``path`` (mode ``mode``) owned by the server user."""
    path.mkdir(parents=True, exist_ok=True)
    if run_as is not None:
        os.chown(path, run_as.uid, run_as.gid)
    path.chmod(mode)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_pair(offset: int) -> int:
    """A free port ``p`` such that ``p + offset`` is free too (Redis Cluster's bus port)."""
    for _ in range(200):
        port = free_port()
        if port + offset <= 65535 and _bindable(port + offset):
            return port
    raise RuntimeError(f"no free port pair (p, p+{offset}) on 127.0.0.1")


def _child_setup(death_signal: int) -> Callable[[], None]:
    """What the child runs between fork and exec (after Popen has switched user)."""
    if not sys.platform.startswith("linux"):
        return lambda: None
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl

    def setup() -> None:
        # Credentials are already switched (Popen's user=/group= come first),
        # and a change of credentials would clear the parent-death signal.
        prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)

    return setup


def _child_env(run_as: RunAs | None) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    if run_as is not None:
        env["HOME"] = pwd.getpwuid(run_as.uid).pw_dir
        env["USER"] = run_as.name
    return env


def run_command(
    args: Sequence[str | os.PathLike[str]],
    *,
    run_as: RunAs | None,
    cwd: Path,
    timeout: float = 60.0,
) -> str:
    """Run a short command (``initdb``, ``pg_basebackup``, ``redis-cli --cluster create``).

    As the server user; returns its output; raises with the output when it fails.
    Blocking: call it through ``asyncio.to_thread`` from async code.
    """
    done = subprocess.run(
        [os.fspath(a) for a in args],
        cwd=cwd,
        env=_child_env(run_as),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        user=None if run_as is None else run_as.uid,
        group=None if run_as is None else run_as.gid,
        extra_groups=None if run_as is None else [],
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"{os.fspath(args[0])} exited with {done.returncode}:\n{output}")
    return output


_live: set[ServerProcess] = set()
_live_lock = threading.Lock()


class ServerProcess:
    """One long-running server, a direct child of this process, stopped by its PID.

    ``start`` launches it (again, after a stop: same command, same directory);
    ``stop`` signals it (``stop_signal`` by default), waits for it to exit and
    reaps it, escalating to SIGKILL after ``timeout``; ``kill`` is an abrupt
    SIGKILL (a crash). Output goes to ``<workdir>/<name>.log``.
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str | os.PathLike[str]],
        workdir: Path,
        *,
        run_as: RunAs | None,
        stop_signal: signal.Signals = signal.SIGTERM,
        death_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.args = [os.fspath(a) for a in args]
        self.workdir = workdir
        self.run_as = run_as
        self.stop_signal = stop_signal
        self.death_signal = death_signal
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<ServerProcess {self.name} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("start servers from the main thread (the parent-death signal)")
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                cwd=self.workdir,
                env=_child_env(self.run_as),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_child_setup(self.death_signal),  # see the module docstring
                process_group=0,  # a Ctrl-C at the terminal reaches pytest, which stops us
                user=None if self.run_as is None else self.run_as.uid,
                group=None if self.run_as is None else self.run_as.gid,
                extra_groups=None if self.run_as is None else [],
            )
        with _live_lock:
            _live.add(self)

    def send_signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the server's PID (nothing if it is not running)."""
        if self.running:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout: float) -> bool:
        """Block until it has exited (and is reaped), up to ``timeout``; did it?"""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        with _live_lock:
            _live.discard(self)
        return True

    def stop(self, sig: signal.Signals | None = None, timeout: float = 10.0) -> None:
        """Signal it (``stop_signal`` unless told), wait, SIGKILL after ``timeout``; reap it.

        Blocking (usually milliseconds); from async code that must keep serving
        load meanwhile, call it through ``asyncio.to_thread``.
        """
        if self.proc is None:
            return
        self.send_signal(sig or self.stop_signal)
        if not self.wait_exit(timeout):
            self.send_signal(signal.SIGKILL)
            self.wait_exit(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would; reaped."""
        self.stop(signal.SIGKILL)

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def exited_error(self) -> RuntimeError:
        code = None if self.proc is None else self.proc.poll()
        return RuntimeError(f"{self.name} exited with {code}; its log ends:\n{self.log_tail()}")


async def wait_for(
    check: Callable[[], Awaitable[bool]],
    what: str,
    *,
    timeout: float,
    interval: float = 0.02,
    alive: Sequence[ServerProcess] = (),
) -> float:
    """Poll ``check`` until it is true; return the seconds that took.

    Raises ``TimeoutError`` naming ``what`` after ``timeout``, or at once with the
    server's log when one of ``alive`` has exited meanwhile.
    """
    start = time.monotonic()
    while not await check():
        for server in alive:
            if not server.running:
                raise server.exited_error()
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - start


@atexit.register
def _kill_leftovers() -> None:
    with _live_lock:
        leftovers = list(_live)
    for server in leftovers:
        server.kill()


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; reaps it either way."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def wait_ready(
    url: str,
    proc: subprocess.Popen[Any],
    log: Callable[[], str],
    *,
    verify: Any = True,
    timeout: float = 60,
) -> Any:
    """Poll ``url/readyz`` until it answers 200 (that response is returned); fail with the
    tail of the server's log if the process exits or ``timeout`` passes first."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"serve exited: {log()[-2000:]}"
        try:
            response = httpx.get(f"{url}/readyz", timeout=1, verify=verify)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"serve never got ready: {log()[-2000:]}"
        time.sleep(0.1)
