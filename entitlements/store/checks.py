"""The reads behind checks and listings: a resource's ancestors and the grants on them.

Each read is a single statement, so it sees one snapshot and reports the revision
that snapshot holds. The walks up the graph go ``MAX_DEPTH`` steps (depth 0 is the
resource): one step beyond any legal path, so finding anything at depth
``MAX_DEPTH`` means the walk was cut off (``too_deep``: the check fails closed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import asyncpg

from entitlements.domain.model import MAX_DEPTH, CheckData, Grant
from entitlements.store.changes import read_revision
from entitlements.store.pool import OnPool, translate_errors
from entitlements.store.records import GRANT_COLUMNS, grant_from_record

# One index probe per (ancestor, subject) pair, equality on both columns, kept a
# parameterized nested loop (OFFSET 0): the cost is bounded by ancestors times subjects,
# never by how many deals or purchases a resource has. Views (every subject that is
# not one user) read the range subject < 'user:' of the same index (schema.sql).
_ANCESTORS: Final = f"""
    WITH RECURSIVE anc(id, depth) AS (
        SELECT r COLLATE "C", 0 FROM unnest($1::text[]) AS r
        UNION
        SELECT p.parent, a.depth + 1
        FROM anc a JOIN resource_parents p ON p.child = a.id
        WHERE a.depth < {MAX_DEPTH}
    ), ids AS (SELECT DISTINCT id AS rid FROM anc)
    SELECT (SELECT value FROM ent_revision) AS revision,
           (SELECT array_agg(rid) FROM ids) AS ancestors,
           (SELECT max(depth) FROM anc) >= {MAX_DEPTH} AS too_deep,
           g.*
    FROM (SELECT 1) one
"""
_CHECK_SQL: Final = (
    _ANCESTORS
    + f"""
    LEFT JOIN LATERAL (
        SELECT x.* FROM ids CROSS JOIN unnest($2::text[]) AS s(subj)
        CROSS JOIN LATERAL (
            SELECT {GRANT_COLUMNS} FROM grants
            WHERE resource = ids.rid AND subject = s.subj OFFSET 0
        ) x
    ) g ON true
"""
)
_VIEW_SQL: Final = (
    _ANCESTORS
    + f"""
    LEFT JOIN LATERAL (
        SELECT x.* FROM ids CROSS JOIN LATERAL (
            SELECT {GRANT_COLUMNS} FROM grants
            WHERE resource = ids.rid AND subject < 'user:' OFFSET 0
        ) x
    ) g ON true
"""
)
_USER_GRANTS_SQL: Final = f"""
    SELECT (SELECT value FROM ent_revision) AS revision, NULL::text[] AS ancestors,
           false AS too_deep, g.*
    FROM (SELECT 1) one LEFT JOIN LATERAL (
        SELECT {GRANT_COLUMNS} FROM grants WHERE subject = $1
    ) g ON true
"""


def _many_sql(for_subjects: bool) -> str:
    probe = (
        f"""SELECT x.* FROM unnest($2::text[]) AS s(subj) CROSS JOIN LATERAL (
                SELECT {GRANT_COLUMNS} FROM grants
                WHERE resource = pairs.id AND subject = s.subj OFFSET 0) x"""
        if for_subjects
        else f"""SELECT {GRANT_COLUMNS} FROM grants
                WHERE resource = pairs.id AND subject < 'user:' OFFSET 0"""
    )
    return f"""
        WITH RECURSIVE anc(root, id, depth) AS (
            SELECT r COLLATE "C", r COLLATE "C", 0 FROM unnest($1::text[]) AS r
            UNION
            SELECT a.root, p.parent, a.depth + 1
            FROM anc a JOIN resource_parents p ON p.child = a.id
            WHERE a.depth < {MAX_DEPTH}
        ), pairs AS (SELECT DISTINCT root, id FROM anc)
        SELECT (SELECT value FROM ent_revision) AS revision,
               ARRAY(SELECT DISTINCT root FROM anc WHERE depth = {MAX_DEPTH}) AS too_deep,
               pairs.root, pairs.id AS ancestor, g.*
        FROM pairs LEFT JOIN LATERAL ({probe}) g ON true
        """


_MANY_FOR_SUBJECTS_SQL: Final = _many_sql(True)
_MANY_VIEWS_SQL: Final = _many_sql(False)

# The walk down stops MAX_DEPTH levels below a grant: what lies deeper is never a
# candidate (never listed, fail closed).
_LISTING_SQL: Final = f"""
    WITH RECURSIVE roots AS (
        SELECT DISTINCT resource AS id FROM grants
        WHERE subject = ANY($1::text[]) AND effect = 'allow' AND $2 = ANY(actions)
    ), tree(id, depth) AS (
        SELECT id, 0 FROM roots
        UNION
        SELECT p.child, t.depth + 1
        FROM tree t JOIN resource_parents p ON p.parent = t.id
        WHERE t.depth < {MAX_DEPTH}
    )
    SELECT DISTINCT id FROM tree
    WHERE ($3::text IS NULL OR split_part(id, ':', 1) = $3)
      AND ($4::text IS NULL OR id > $4)
    ORDER BY id LIMIT $5
"""


class PostgresCheckReads(OnPool):
    """What checks and listings read (the ``CheckReads`` port)."""

    # On the class, where the schema test and benchmarks/bench_checks.py EXPLAIN them.
    _CHECK_SQL: Final = _CHECK_SQL
    _VIEW_SQL: Final = _VIEW_SQL

    async def load_check(
        self, resource: str, subjects: Sequence[str], *, min_revision: int | None = None
    ) -> CheckData:
        """The resource's ancestors and every grant on them for these subjects, in one snapshot
        (``min_revision``: the primary holds every revision there is)."""
        async with translate_errors():
            rows = await self.pool.fetch(self._CHECK_SQL, [resource], list(subjects))
        return _check_data(rows)

    async def load_resource_view(self, resource: str) -> CheckData:
        """Ancestors and the grants on them for every subject that is not one user.

        This is what a resource contributes to any caller's check, so it is the
        unit the cache keeps per resource.
        """
        async with translate_errors():
            rows = await self.pool.fetch(self._VIEW_SQL, [resource])
        return _check_data(rows)

    async def load_user_grants(self, user_id: str, *, min_revision: int | None = None) -> CheckData:
        """Every grant whose subject is this one user (purchases, personal deals)."""
        async with translate_errors():
            rows = await self.pool.fetch(_USER_GRANTS_SQL, f"user:{user_id}")
        return _check_data(rows)

    async def load_checks(
        self,
        resources: Sequence[str],
        subjects: Sequence[str] | None,
        *,
        min_revision: int | None = None,
    ) -> tuple[int, dict[str, CheckData]]:
        """``load_check`` for many resources in one round trip (batch checks, listing).

        ``subjects=None`` reads every grant that is not one user's: the
        resource views the cache keeps.
        """
        unique = sorted(set(resources))
        async with translate_errors():
            if subjects is None:
                rows = await self.pool.fetch(_MANY_VIEWS_SQL, unique)
            else:
                rows = await self.pool.fetch(_MANY_FOR_SUBJECTS_SQL, unique, list(subjects))
            revision = int(rows[0]["revision"]) if rows else await read_revision(self.pool)
        too_deep = set(rows[0]["too_deep"]) if rows else set()
        ancestors: dict[str, set[str]] = {r: {r} for r in unique}
        grants: dict[str, list[Grant]] = {r: [] for r in unique}
        for row in rows:
            ancestors[row["root"]].add(row["ancestor"])
            if row["id"] is not None:
                grants[row["root"]].append(grant_from_record(row))
        return revision, {
            r: CheckData(revision, frozenset(ancestors[r]), tuple(grants[r]), r in too_deep)
            for r in unique
        }

    async def listing_candidates(
        self,
        subjects: Sequence[str],
        action: str,
        *,
        type_: str | None,
        after: str | None,
        limit: int,
    ) -> list[str]:
        """Resources that an allow grant of these subjects reaches (directly or by descent).

        Ordered by id after ``after``: a keyset page of candidates, each still
        to be checked (a deny, a window, a territory or a graph too deep to walk
        whole may rule it out).
        """
        async with translate_errors():
            rows = await self.pool.fetch(_LISTING_SQL, list(subjects), action, type_, after, limit)
        return [r["id"] for r in rows]


def _check_data(rows: Sequence[asyncpg.Record]) -> CheckData:
    first = rows[0]
    grants = tuple(grant_from_record(r) for r in rows if r["id"] is not None)
    return CheckData(
        int(first["revision"]), frozenset(first["ancestors"] or ()), grants, first["too_deep"]
    )


__all__ = ["PostgresCheckReads"]
