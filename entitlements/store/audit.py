"""The audit of changes in Postgres (issue 15): ``audit_log``, written inside each change's
own transaction (``record_audit``) and read newest first (the ``AuditLog`` port).
"""

from __future__ import annotations

from typing import Any, Final

import asyncpg
import orjson

from entitlements.store.pool import OnPool, translate_errors
from entitlements.store.results import AuditEntry

_INSERT_SQL: Final = """
INSERT INTO audit_log (actor, action, resource, grant_id, before, after, detail)
VALUES ($1, $2, $3, $4, $5::text::jsonb, $6::text::jsonb, $7::text::jsonb)"""

MAX_AUDITED_ROWS: Final = 1000
"""An import's audit entry holds the before and after of at most this many changed grants
(its report counts them all; ``detail.audited`` says how many it holds)."""

AUDIT_STAGING_SQL: Final = """
CREATE TEMP TABLE imp_audit (id text COLLATE "C" PRIMARY KEY, before jsonb, after jsonb)
    ON COMMIT DROP"""
"""Where an import collects the before and after of the grants it changes."""


def audit_changed_sql(columns: tuple[str, ...]) -> str:
    """Collect the stored grants a staged batch (``imp_g``) is about to change, before and
    after, up to ``$1`` of them (run before the batch's merge, in its transaction)."""
    old = ", ".join(f"'{c}', g.{c}" for c in columns)
    new = ", ".join(f"'{c}', n.{c}" for c in columns)
    return f"""
INSERT INTO imp_audit (id, before, after)
SELECT n.id, jsonb_build_object('id', g.id, {old}), jsonb_build_object('id', n.id, {new})
FROM imp_g n JOIN grants g ON g.id = n.id
WHERE n.ok AND ({", ".join(f"g.{c}" for c in columns)})
      IS DISTINCT FROM ({", ".join(f"n.{c}" for c in columns)})
ORDER BY n.id LIMIT $1
ON CONFLICT (id) DO NOTHING"""


IMPORT_AUDIT_SQL: Final = """
INSERT INTO audit_log (actor, action, before, after, detail)
SELECT created_by, 'import',
       (SELECT jsonb_object_agg(id, before) FROM imp_audit),
       (SELECT jsonb_object_agg(id, after) FROM imp_audit),
       $2::text::jsonb || jsonb_build_object('audited', (SELECT count(*) FROM imp_audit))
FROM imports WHERE id = $1"""
"""An import's one entry, by whoever started it, in the import's transaction: its report
(``detail``) and, keyed by grant id, the grants it changed before and after (at most
``MAX_AUDITED_ROWS`` of them: ``detail.audited``)."""


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


async def record_audit(
    conn: asyncpg.Connection,
    actor: str,
    action: str,
    *,
    resource: str | None = None,
    grant: str | None = None,
    before: Any = None,
    after: Any = None,
    detail: Any = None,
) -> None:
    """One audit entry, on ``conn`` (in the transaction of the change it records)."""
    await conn.execute(
        _INSERT_SQL,
        actor,
        action,
        resource,
        grant,
        _json(before),
        _json(after),
        _json(detail),
    )


class PostgresAuditLog(OnPool):
    """Reads the audit log (the ``AuditLog`` port)."""

    async def audit_entries(
        self,
        *,
        actor: str | None = None,
        resource: str | None = None,
        grant: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Entries newest first, keyset-paginated by id (``before_id``: older than it)."""
        conditions = ["id < $1"]
        args: list[Any] = [before_id if before_id is not None else 2**63 - 1, limit]
        for column, value in (("actor", actor), ("resource", resource), ("grant_id", grant)):
            if value is not None:
                args.append(value)
                n = len(args)
                conditions.append(
                    f"(grant_id = ${n} OR (action = 'import' AND after ? ${n}))"
                    if column == "grant_id"
                    else f"{column} = ${n}"
                )
        async with translate_errors():
            rows = await self.pool.fetch(
                f"""SELECT id, at, actor, action, resource, grant_id, before::text AS before,
                           after::text AS after, detail::text AS detail
                    FROM audit_log WHERE {" AND ".join(conditions)}
                    ORDER BY id DESC LIMIT $2""",
                *args,
            )
        return [
            AuditEntry(
                id=r["id"],
                at=r["at"],
                actor=r["actor"],
                action=r["action"],
                resource=r["resource"],
                grant=r["grant_id"],
                before=None if r["before"] is None else orjson.loads(r["before"]),
                after=None if r["after"] is None else orjson.loads(r["after"]),
                detail=None if r["detail"] is None else orjson.loads(r["detail"]),
            )
            for r in rows
        ]


__all__ = [
    "AUDIT_STAGING_SQL",
    "IMPORT_AUDIT_SQL",
    "MAX_AUDITED_ROWS",
    "PostgresAuditLog",
    "audit_changed_sql",
    "record_audit",
]
