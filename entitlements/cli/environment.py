"""What every command needs: settings, a database (configured or embedded), and a way
to run a coroutine that turns our errors into a message and the right exit code.

Exit codes (docs/design.md): 0 success, 1 runtime failure, 2 bad usage or bad input.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TypeVar

import typer

from entitlements.domain.values import text_problem
from entitlements.errors import EntitlementsError, InputError
from entitlements.settings import Settings

T = TypeVar("T")


def cli_actor() -> str:
    """Who a CLI change is recorded as (imports, key rotations): ``cli:<os user>``."""
    try:
        who = f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (containers)
        return "cli"
    # From $LOGNAME and friends: not UTF-8 there, Python hands it over with lone surrogates.
    return "cli" if text_problem(who) else who


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def load_settings(**overrides: object) -> Settings:
    try:
        base = Settings()
        values = {k: v for k, v in overrides.items() if v is not None}
        return base.model_copy(update=values) if values else base
    except ValueError as exc:
        raise fail(f"bad configuration: {exc}", 2) from None


@contextmanager
def database(settings: Settings) -> Iterator[Settings]:
    """Settings with a database: the configured one, or the embedded Postgres.

    The embedded server is started here, or reused when another process already
    runs it; this (parent) process uses it for as long as the command runs, and
    uvicorn workers get its URL through the environment. On the way out it is
    released: the last process using it stops it (entitlements.store.embedded).
    """
    if settings.database_url is not None:
        yield settings
        return
    from entitlements.store.embedded import EmbeddedPostgres

    where = settings.data_dir

    def announce(reused: bool) -> None:
        if reused:
            typer.echo(f"using the embedded Postgres already running in {where}", err=True)
        else:
            typer.echo(f"starting embedded Postgres in {where} ...", err=True)

    server = EmbeddedPostgres(where)
    with _exit_on_sigterm():
        try:
            dsn = server.start(announce=announce)
        except EntitlementsError as exc:
            raise fail(str(exc)) from None
        os.environ["ENTITLEMENTS_DATABASE_URL"] = dsn
        try:
            yield settings.model_copy(update={"database_url": dsn})
        finally:
            try:
                server.release()
            except EntitlementsError as exc:
                typer.secho(f"warning: {exc}", err=True, fg=typer.colors.YELLOW)


@contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """Make SIGTERM end the command through ``SystemExit``, so ``finally`` blocks run.

    uvicorn handles a SIGTERM by shutting down and then raising it again for the
    previous handler; with the default one the process would die on the spot and
    never release the embedded Postgres. A second SIGTERM during the clean-up is
    ignored (SIGKILL still works).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine, turning our errors into a message and the right exit code."""

    async def main() -> T:
        return await coro_factory()

    try:
        return asyncio.run(main())
    except InputError as exc:
        raise fail(str(exc), 2) from None
    except EntitlementsError as exc:
        raise fail(str(exc), 1) from None


__all__ = ["database", "fail", "load_settings", "run"]
