"""The connection of one import's transaction, every statement with the import's timeout.

The pool's statement timeout suits API calls, not merging a million rows or the
COMMIT that flushes them: ``store.import_writer`` and ``store.ddex`` write an
import's rows through this.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg


class ImportConnection:
    """The import's connection, every statement with the import's long timeout (the pool's
    suits API calls, not merging a million rows or the COMMIT that flushes them)."""

    def __init__(self, conn: asyncpg.Connection, timeout: float) -> None:
        self.conn = conn
        self.timeout = timeout

    async def execute(self, sql: str, *args: Any) -> str:
        status: str = await self.conn.execute(sql, *args, timeout=self.timeout)
        return status

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(sql, *args, timeout=self.timeout))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record:
        return await self.conn.fetchrow(sql, *args, timeout=self.timeout)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchval(sql, *args, timeout=self.timeout)

    async def copy(
        self, table: str, rows: Sequence[tuple[Any, ...]], columns: Sequence[str]
    ) -> None:
        await self.conn.copy_records_to_table(
            table, records=rows, columns=columns, timeout=self.timeout
        )

    async def copy_text(self, table: str, lines: list[str], columns: Sequence[str]) -> None:
        """COPY lines already in Postgres' text format (cheaper to build than binary tuples)."""
        await self.copy_payload(table, "".join(lines).encode(), columns)

    async def copy_payload(self, table: str, payload: bytes, columns: Sequence[str]) -> None:
        """COPY a payload of lines in Postgres' text format."""

        async def source() -> AsyncIterator[bytes]:
            yield payload

        await self.conn.copy_to_table(
            table, source=source(), columns=columns, format="text", timeout=self.timeout
        )


__all__ = ["ImportConnection"]
