"""The connection pool: opening it, and turning connection failures into our errors.

Every Postgres adapter of ``entitlements.store`` works on one ``asyncpg.Pool``
opened here (``open_pool``) and wraps its statements in ``translate_errors``, so
the layers above see ``StoreUnavailableError`` and never an asyncpg exception.

PgBouncer (transaction pooling) in front (``pooled=True``, from
``ENTITLEMENTS_DATABASE_POOLER=pgbouncer``): nothing here relies on the state of one
server session between transactions. Every lock is transaction-scoped
(``store.locks``), every ``SET`` is ``SET LOCAL``, LISTEN runs on a direct connection
(``ENTITLEMENTS_DATABASE_LISTEN_URL``, ``store.follower``), and a pooled connection
prepares no named statement: asyncpg's statement cache is off
(``statement_cache_size=0``), so ``fetch``/``execute`` with arguments and the
``copy_*`` introspection use the *unnamed* statement, whose Parse/Describe/Flush and
Bind/Execute/Sync end in one Sync, inside one PgBouncer transaction. Nothing here uses
what still names a statement with the cache off (``Connection.cursor()``,
``prepare(name=...)``). The ``plan_cache_mode`` startup parameter is not sent
through a pooler (PgBouncer 1.18 refuses unknown startup parameters); set it on the
role instead (``ALTER ROLE ... SET plan_cache_mode = force_generic_plan``) if wanted.
PgBouncer >= 1.21 with ``max_prepared_statements > 0`` tracks named protocol-level
prepared statements per client and re-prepares them on whichever server connection
the client gets; there the statement cache may stay on (see docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

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


def connection_options(pooled: bool, application_name: str | None = None) -> dict[str, Any]:
    """asyncpg connection arguments: no named prepared statements through a pooler."""
    settings: dict[str, str] = {}
    if application_name is not None:
        settings["application_name"] = application_name  # PgBouncer passes this one on
    if pooled:
        return {"statement_cache_size": 0, "server_settings": settings}
    # The check reads are planned in ~0.2 ms and run in ~0.08 ms; their generic
    # plan is the good one, so plan once per connection, not per check. Every
    # query here is written to have a good generic plan (no "$1 IS NULL OR").
    settings["plan_cache_mode"] = "force_generic_plan"
    return {"server_settings": settings}


async def connect(
    dsn: str, *, pooled: bool = False, timeout: float = 5.0, application_name: str | None = None
) -> asyncpg.Connection:
    """One connection outside the pool (an import's own, a LISTEN), pooler-safe when
    ``pooled``."""
    conn: asyncpg.Connection = await asyncpg.connect(
        dsn, timeout=timeout, **connection_options(pooled, application_name)
    )
    return conn


async def open_pool(
    dsn: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    timeout: float = 5.0,
    pooled: bool = False,
    application_name: str | None = None,
) -> asyncpg.Pool:
    """A pool of connections that decode ``jsonb`` with orjson; ``StoreUnavailableError``
    when Postgres cannot be reached."""
    quiet_reconnect_failures()
    options = connection_options(pooled, application_name)
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
            **options,
        )
    except UNAVAILABLE as exc:
        raise StoreUnavailableError(f"cannot connect to Postgres: {type(exc).__name__}") from exc
    return pool


class OnPool:
    """The base of every Postgres adapter here: it works on one pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool


__all__ = [
    "UNAVAILABLE",
    "OnPool",
    "connect",
    "connection_options",
    "open_pool",
    "translate_errors",
]
