"""The resource graph's limits in SQL: no cycle, no path over ``MAX_DEPTH`` levels.

``MAX_DEPTH`` (domain.model) counts levels: a path has at most MAX_DEPTH resources,
so a resource has at most MAX_DEPTH - 1 ancestors above it in a row. A write that
adds edges is checked here before it lands (``check_graph_write``; an import checks
its whole graph at once, ``store.imports``); a graph already too deep (written
before the limit counted the levels below a resource, or by hand) is found at
start-up (``warn_if_graph_too_deep``) and its checks fail closed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final, Protocol

import asyncpg

from entitlements.domain.model import MAX_DEPTH
from entitlements.errors import FieldError, InvalidInputError, StoreUnavailableError

log = logging.getLogger("entitlements")

# Walk up from the new parents and down from the child, one row per (resource, depth):
# the work is bounded by resources times MAX_DEPTH, never by the number of paths.
# Meeting the child above its new parents is a cycle. Each walk stops at MAX_DEPTH
# steps, which is already too many: the longest path through the child's new edges
# has above + 1 + below levels.
_GRAPH_WRITE_SQL: Final = f"""
WITH RECURSIVE up(id, depth) AS (
    SELECT p COLLATE "C", 1 FROM unnest($1::text[]) AS p
    UNION
    SELECT rp.parent, u.depth + 1
    FROM up u JOIN resource_parents rp ON rp.child = u.id
    WHERE u.depth < {MAX_DEPTH} AND u.id <> $2
), down(id, depth) AS (
    SELECT $2 COLLATE "C", 0
    UNION
    SELECT rp.child, d.depth + 1
    FROM down d JOIN resource_parents rp ON rp.parent = d.id
    WHERE d.depth < {MAX_DEPTH}
)
SELECT bool_or(id = $2) AS cycle, max(depth) AS above, (SELECT max(depth) FROM down) AS below
FROM up
"""

# A resource lies too deep when a parent of it has MAX_DEPTH - 1 levels above it. On
# that chain every resource but the root and the last has a parent and a child, and
# so does each one's parent on the chain ("middle" edges: in a label/release/track
# catalogue there are none, and the walk ends at once). So levels are counted along
# middle edges only, layer k holding the resources with at least k levels above
# (a cycle keeps the layers full); what hangs under layer MAX_DEPTH - 1 is too deep.
TOO_DEEP_SQL: Final = f"""
WITH RECURSIVE mid AS MATERIALIZED (
    SELECT e.child, e.parent FROM resource_parents e
    WHERE EXISTS (SELECT 1 FROM resource_parents d WHERE d.parent = e.child)
      AND EXISTS (SELECT 1 FROM resource_parents u WHERE u.child = e.parent)
), layer(id, k) AS (
    SELECT DISTINCT parent, 1 FROM mid
    UNION
    SELECT m.child, l.k + 1 FROM layer l JOIN mid m ON m.parent = l.id
    WHERE l.k < {MAX_DEPTH - 1}
), deep AS (
    SELECT DISTINCT rp.child AS id
    FROM layer l JOIN resource_parents rp ON rp.parent = l.id
    WHERE l.k = {MAX_DEPTH - 1}
)
SELECT (SELECT count(*) FROM deep) AS n, ARRAY(SELECT id FROM deep ORDER BY id LIMIT $1) AS sample
"""


def depth_refusal(above: int, below: int) -> str | None:
    """Why a resource with ``above`` levels of ancestors and ``below`` levels of
    descendants breaks the depth limit, or None if it does not. (A count that reached
    a walk's limit, ``MAX_DEPTH``, is a lower bound.)"""
    levels = above + 1 + below
    if levels <= MAX_DEPTH:
        return None
    count = str(levels) if max(above, below) < MAX_DEPTH else f"at least {levels}"
    return (
        f"the resource graph may be at most {MAX_DEPTH} levels deep; with these parents"
        f" a path through this resource would have {count} levels ({above} above it,"
        f" {below} below it)"
    )


async def check_graph_write(conn: asyncpg.Connection, child: str, parents: Sequence[str]) -> None:
    """Refuse parents that would close a cycle or make any path longer than ``MAX_DEPTH``
    levels, counting the levels above the parents and the subtree below ``child``."""
    if not parents:
        return  # no new edge: no path gets longer
    row = await conn.fetchrow(_GRAPH_WRITE_SQL, list(parents), child)
    if row["cycle"]:
        raise InvalidInputError(
            FieldError(
                "parents", f"would create a cycle: {child} is already an ancestor of a parent"
            )
        )
    refusal = depth_refusal(row["above"], row["below"])
    if refusal is not None:
        raise InvalidInputError(FieldError("parents", refusal))


class DepthScan(Protocol):
    async def too_deep_resources(
        self, limit: int = 20, *, timeout: float | None = None
    ) -> tuple[int, list[str]]: ...


GRAPH_CHECK_TASK: Final = "entitlements-graph-check"
"""The name of the start-up task running ``warn_if_graph_too_deep``."""


async def warn_if_graph_too_deep(store: DepthScan, limit: int = 20) -> None:
    """At start-up: log one warning naming resources whose graph is already deeper than
    ``MAX_DEPTH`` (written before writes counted the levels below a resource, or with
    SQL). Their checks are denied until the graph is repaired. Never raises: it runs
    as a background task (``GRAPH_CHECK_TASK``), off the start-up path, since the
    scan reads every edge once."""
    try:
        count, sample = await store.too_deep_resources(limit, timeout=120.0)
    except Exception as exc:  # a background task must survive anything
        log.warning(
            "could not look for a resource graph deeper than %d levels: %s",
            MAX_DEPTH,
            exc if isinstance(exc, StoreUnavailableError) else type(exc).__name__,
        )
        return
    if count:
        more = f" (and {count - len(sample)} more)" if count > len(sample) else ""
        log.warning(
            "%d resource(s) lie more than %d levels deep in the resource graph: %s%s."
            " Checks on them are denied until the graph is repaired (PUT /v1/resources/{id}"
            " with fewer parents, or an import of their resources)",
            count,
            MAX_DEPTH,
            ", ".join(sample),
            more,
        )


__all__ = [
    "GRAPH_CHECK_TASK",
    "TOO_DEEP_SQL",
    "check_graph_write",
    "depth_refusal",
    "warn_if_graph_too_deep",
]
