"""The Postgres store: one pool, and every Postgres adapter the API process needs on it.

The statements live with their concept (see ``entitlements.store``):
``checks`` (the reads behind checks and listings), ``grants`` (the catalogue),
``changes`` (revision and change log), ``graph`` (the graph's limits),
``imports``, ``keys`` and ``tokens``. ``PostgresStore`` opens the pool, applies
the schema and is all of ``checks``, ``grants`` and ``changes`` at once (the
``CheckReads``, ``Catalog`` and ``ChangeFeed`` ports); its methods are theirs,
so a call costs nothing more than on the concept's own class.

The other names here are re-exported for callers that import them from this
module; new code imports them from the module that owns them.
"""

from __future__ import annotations

from entitlements.domain.model import (
    MAX_DEPTH,
    Change,
    CheckData,
    grant_row,
    resource_type,
)
from entitlements.store import schema
from entitlements.store.audit import PostgresAuditLog
from entitlements.store.changes import (
    PRUNE_BATCH,
    PostgresChangeLog,
    bump_revision,
    grant_changes,
    read_revision,
)
from entitlements.store.checks import PostgresCheckReads
from entitlements.store.grants import PostgresCatalog
from entitlements.store.graph import (
    GRAPH_CHECK_TASK,
    check_graph_write,
    depth_refusal,
    warn_if_graph_too_deep,
)
from entitlements.store.pool import open_pool, translate_errors
from entitlements.store.records import grant_from_record
from entitlements.store.results import MAX_CHANGE_KEYS, ChangePage, WriteResult


class PostgresStore(PostgresCheckReads, PostgresCatalog, PostgresChangeLog, PostgresAuditLog):
    """Grants, resources, revisions and the change log in Postgres, on one pool."""

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        timeout: float = 5.0,
        apply_schema: bool = True,
        pooled: bool = False,
        application_name: str | None = None,
    ) -> PostgresStore:
        """Connect, and apply ``schema.sql`` (idempotent) unless told not to (``pooled``:
        ``dsn`` is a transaction-mode pooler, see ``store.pool``)."""
        pool = await open_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            pooled=pooled,
            application_name=application_name,
        )
        store = cls(pool)
        if apply_schema:
            async with translate_errors():
                await schema.apply_schema(pool)
        return store

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> int:
        """The current revision: Postgres answers (readiness)."""
        async with translate_errors():
            return await read_revision(self.pool)


__all__ = [
    "GRAPH_CHECK_TASK",
    "MAX_CHANGE_KEYS",
    "MAX_DEPTH",
    "PRUNE_BATCH",
    "Change",
    "ChangePage",
    "CheckData",
    "PostgresStore",
    "WriteResult",
    "bump_revision",
    "check_graph_write",
    "depth_refusal",
    "grant_changes",
    "grant_from_record",
    "grant_row",
    "resource_type",
    "translate_errors",
    "warn_if_graph_too_deep",
]
