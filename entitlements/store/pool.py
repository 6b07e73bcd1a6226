"""The connection pool: opening it, and turning connection failures into our errors.

Every Postgres adapter of ``entitlements.store`` works on one ``asyncpg.Pool``
opened here (``open_pool``) and wraps its statements in ``translate_errors``, so
the layers above see ``StoreUnavailableError`` and never an asyncpg exception.

PgBouncer (transaction pooling) in front: nothing here relies on the state of one
server session between transactions. The connection settings below are startup
parameters (PgBouncer must pass them on or ignore them: ``ignore_startup_parameters``),
and asyncpg's prepared statements need PgBouncer's ``max_prepared_statements``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import orjson

from entitlements.errors import StoreUnavailableError
from entitlements.store.reconnect_log import quiet_reconnect_failures

UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)
"""Connection-level failures: Postgres is down, restarting or unreachable."""


@contextlib.asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Turn connection-level asyncpg failures into ``StoreUnavailableError``."""
    try:
        yield
    except UNAVAILABLE as exc:
        raise StoreUnavailableError() from exc


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def open_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 10, timeout: float = 5.0
) -> asyncpg.Pool:
    """A pool of connections that decode ``jsonb`` with orjson; ``StoreUnavailableError``
    when Postgres cannot be reached."""
    quiet_reconnect_failures()
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            command_timeout=timeout,
            timeout=timeout,
            init=_init_connection,
            # A restarted Postgres leaves dead sockets in the pool; recycle idle ones.
            max_inactive_connection_lifetime=60.0,
            # The check reads are planned in ~0.2 ms and run in ~0.08 ms; their generic
            # plan is the good one, so plan once per connection, not per check. Every
            # query here is written to have a good generic plan (no "$1 IS NULL OR").
            server_settings={"plan_cache_mode": "force_generic_plan"},
        )
    except UNAVAILABLE as exc:
        raise StoreUnavailableError(f"cannot connect to Postgres: {type(exc).__name__}") from exc
    return pool


class OnPool:
    """The base of every Postgres adapter here: it works on one pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool


__all__ = ["UNAVAILABLE", "OnPool", "open_pool", "translate_errors"]
