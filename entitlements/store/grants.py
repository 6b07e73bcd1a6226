"""The catalogue in Postgres: grants and resources, written and read one at a time.

Each write is one transaction that bumps the revision last (``store.changes``);
writing what is already stored changes nothing and keeps the revision.
"""

from __future__ import annotations

from typing import Any, Final

from entitlements.domain.grant import grant_json
from entitlements.domain.model import Grant, Resource, grant_row
from entitlements.errors import NotFoundError
from entitlements.store.audit import record_audit
from entitlements.store.changes import REVISION_SQL, bump_revision, grant_changes
from entitlements.store.graph import TOO_DEEP_SQL, check_graph_write
from entitlements.store.locks import AdvisoryLock
from entitlements.store.pool import OnPool, translate_errors
from entitlements.store.records import GRANT_COLUMNS, grant_from_record
from entitlements.store.results import WriteResult

_PUT_GRANT_SQL: Final = f"""
INSERT INTO grants ({GRANT_COLUMNS}, revision)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0)
ON CONFLICT (id) DO UPDATE SET
  subject = EXCLUDED.subject, resource = EXCLUDED.resource,
  actions = EXCLUDED.actions, territories = EXCLUDED.territories,
  exclude_territories = EXCLUDED.exclude_territories,
  valid_from = EXCLUDED.valid_from, valid_until = EXCLUDED.valid_until,
  effect = EXCLUDED.effect, attributes = EXCLUDED.attributes,
  source = EXCLUDED.source, updated_at = now()"""


class PostgresCatalog(OnPool):
    """Grants and resources (the ``Catalog`` port)."""

    # --- grants -----------------------------------------------------------

    async def put_grant(self, grant: Grant, *, actor: str = "unknown") -> WriteResult:
        """Create or replace a grant; an identical grant changes nothing (no new revision).
        A change is audited under ``actor``, with the grant before and after."""
        async with translate_errors(), self.pool.acquire() as conn, conn.transaction():
            old = await conn.fetchrow(
                f"SELECT {GRANT_COLUMNS} FROM grants WHERE id = $1 FOR UPDATE", grant.id
            )
            previous = grant_from_record(old) if old is not None else None
            if previous == grant:
                return WriteResult(await conn.fetchval(REVISION_SQL), False)
            await conn.execute(_PUT_GRANT_SQL, *grant_row(grant))
            await record_audit(
                conn,
                actor,
                "grant.put",
                resource=grant.resource,
                grant=grant.id,
                before=grant_json(previous) if previous is not None else None,
                after=grant_json(grant),
            )
            touched = [grant] + ([previous] if previous is not None else [])
            revision = await bump_revision(conn, grant_changes(touched))
            await conn.execute("UPDATE grants SET revision = $2 WHERE id = $1", grant.id, revision)
            return WriteResult(revision, True, created=previous is None)

    async def get_grant(self, grant_id: str) -> Grant:
        async with translate_errors():
            row = await self.pool.fetchrow(
                f"SELECT {GRANT_COLUMNS} FROM grants WHERE id = $1", grant_id
            )
        if row is None:
            raise NotFoundError(f"no grant {grant_id!r}")
        return grant_from_record(row)

    async def delete_grant(self, grant_id: str, *, actor: str = "unknown") -> int:
        async with translate_errors(), self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"DELETE FROM grants WHERE id = $1 RETURNING {GRANT_COLUMNS}", grant_id
            )
            if row is None:
                raise NotFoundError(f"no grant {grant_id!r}")
            deleted = grant_from_record(row)
            await record_audit(
                conn,
                actor,
                "grant.delete",
                resource=deleted.resource,
                grant=grant_id,
                before=grant_json(deleted),
            )
            return await bump_revision(conn, grant_changes([deleted]))

    async def list_grants(
        self,
        *,
        resource: str | None = None,
        subject: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[Grant]:
        """Grants filtered by resource and/or subject, ordered by id, keyset-paginated."""
        # Only the filters given appear in the SQL, so each shape has a good generic plan.
        conditions = ["id > $1"]
        args: list[Any] = [after or "", limit]
        for column, value in (("resource", resource), ("subject", subject)):
            if value is not None:
                args.append(value)
                conditions.append(f"{column} = ${len(args)}")
        async with translate_errors():
            rows = await self.pool.fetch(
                f"""SELECT {GRANT_COLUMNS} FROM grants WHERE {" AND ".join(conditions)}
                    ORDER BY id LIMIT $2""",
                *args,
            )
        return [grant_from_record(r) for r in rows]

    # --- resources --------------------------------------------------------

    async def put_resource(self, resource: Resource, *, actor: str = "unknown") -> WriteResult:
        """Declare a resource and set its parents (auto-declaring unknown parents).

        Refuses a parent that would close a cycle or make any path of the graph
        longer than ``MAX_DEPTH`` levels, the subtree below the resource included.
        Graph writes are serialized by an advisory lock so two concurrent writes
        cannot build a cycle or too long a path between them. A change is audited
        under ``actor``, with the parents before and after.
        """
        async with translate_errors(), self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", AdvisoryLock.GRAPH)
            current = await conn.fetch(
                "SELECT parent FROM resource_parents WHERE child = $1 ORDER BY parent", resource.id
            )
            exists = await conn.fetchval("SELECT 1 FROM resources WHERE id = $1", resource.id)
            if exists and tuple(r["parent"] for r in current) == resource.parents:
                return WriteResult(await conn.fetchval(REVISION_SQL), False)
            await check_graph_write(conn, resource.id, resource.parents)
            ids = [resource.id, *resource.parents]
            await conn.execute(
                """INSERT INTO resources (id, type, revision)
                   SELECT r, split_part(r, ':', 1), 0 FROM unnest($1::text[]) AS r
                   ON CONFLICT (id) DO NOTHING""",
                ids,
            )
            await conn.execute("DELETE FROM resource_parents WHERE child = $1", resource.id)
            await conn.execute(
                """INSERT INTO resource_parents (child, parent)
                   SELECT $1, p FROM unnest($2::text[]) AS p""",
                resource.id,
                list(resource.parents),
            )
            await record_audit(
                conn,
                actor,
                "resource.put",
                resource=resource.id,
                before={"parents": [r["parent"] for r in current]} if exists else None,
                after={"parents": list(resource.parents)},
            )
            revision = await bump_revision(conn, [("resource", resource.id)])
            await conn.execute(
                "UPDATE resources SET revision = $2, updated_at = now() WHERE id = $1",
                resource.id,
                revision,
            )
            return WriteResult(revision, True, created=not exists)

    async def get_resource(self, resource_id: str) -> Resource:
        async with translate_errors():
            rows = await self.pool.fetch(
                """SELECT r.id, p.parent FROM resources r
                   LEFT JOIN resource_parents p ON p.child = r.id
                   WHERE r.id = $1 ORDER BY p.parent""",
                resource_id,
            )
        if not rows:
            raise NotFoundError(f"no resource {resource_id!r}")
        return Resource(
            id=resource_id, parents=tuple(r["parent"] for r in rows if r["parent"] is not None)
        )

    async def too_deep_resources(
        self, limit: int = 20, *, timeout: float | None = None
    ) -> tuple[int, list[str]]:
        """How many resources lie more than ``MAX_DEPTH`` levels deep (checks on them
        fail closed), and the first ``limit`` of them by id."""
        async with translate_errors():
            row = await self.pool.fetchrow(TOO_DEEP_SQL, limit, timeout=timeout)
        return int(row["n"]), list(row["sample"])


__all__ = ["PostgresCatalog", "WriteResult"]
