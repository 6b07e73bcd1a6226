"""DDEX ERN messages in Postgres: replace-per-release, purge and track links, in SQL.

``PostgresDdexWriter`` works inside one import's transaction (its connection, its
expected revision, its graph lock: ``PostgresImportSession.ddex``). The import
service decides which releases of which messages apply (the stale rule) and hands
them over in batches of ``ReleaseEntry`` s (``store.ddex_rows``); each batch is
applied set-based, whatever its size, in a fixed number of statements::

    known(keys)           which stored releases the batch's ids name (and when each
                          was last applied): the service's stale rule reads this
    apply(entries)        TEMP staging (COPY) ->
                          records for releases not seen before; records named by
                          several ids folded into one ->
                          track links: old (what the records listed) minus new
                          (what the messages list) removed, new ones added ->
                          track releases no release carries any more: dropped ->
                          grants the records had and the messages no longer
                          carry: deleted -> the messages' grants merged (inserted,
                          updated or unchanged) -> records updated

The tables (schema.sql, "DDEX ERN deal feeds"): ``ddex_releases`` (one record per
sender and release: its key, where its deals apply, the tracks it lists, the
``MessageCreatedDateTime`` last applied, live/purged/dropped),
``ddex_release_aliases`` (every id a sender named it by), ``ddex_grants`` (which
record each grant came from) and ``ddex_track_releases`` (which releases carried
each track release).

- **Counts come from SQL**, per message: a grant equal to the stored one is
  unchanged and never written; a message applied twice writes nothing, so the
  revision does not advance.
- Entries of one batch name different records (the service cuts batches so), so
  the order of the statements cannot change the outcome.
- Grants and resources are written at the import's expected revision (corrected
  at ``bump`` if another write took it); the change feed gets every resource whose
  grants or parents changed. Every new track link is checked with the rest of the
  import's graph at the end (``graph_problems``: cycles, ``MAX_DEPTH``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from entitlements.store.ddex_rows import AppliedBatch, KnownRelease, ReleaseEntry
from entitlements.store.import_connection import ImportConnection
from entitlements.store.import_rows import copy_text

# A grant's columns after id, in the order copy_text renders a GrantRow.
_DATA_COLUMNS: Final = (
    "subject",
    "resource",
    "actions",
    "territories",
    "exclude_territories",
    "valid_from",
    "valid_until",
    "effect",
    "attributes",
    "source",
)
_DATA: Final = ", ".join(_DATA_COLUMNS)
_G_COLUMNS: Final = ("id", *_DATA_COLUMNS, "eno")
_E_COLUMNS: Final = (
    "eno",
    "mno",
    "kind",
    "sender",
    "key",
    "aliases",
    "created",
    "message_id",
    "resource",
    "tracks",
    "track_release",
    "rid",
    "merged",
    "albums",
    "album_records",
    "carried",
)


def _columns(alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in _DATA_COLUMNS)


# The change-feed entry of a grant, as store.changes.grant_changes makes it.
_KEY_SQL: Final = (
    "CASE WHEN starts_with(subject, 'user:') THEN 'user ' || substr(subject, 6)"
    " ELSE 'resource ' || resource END"
)

# TEMP tables: private to the import's session, gone with its transaction.
# ddex_e: the batch's entries (eno: index in the batch; mno: message number);
# ddex_g: their grants, typed like grants (COPY text parses), by entry.
_STAGING_SQL: Final = """
CREATE TEMP TABLE ddex_e (
    eno int PRIMARY KEY, mno int NOT NULL, kind text NOT NULL, sender text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL, aliases text[] COLLATE "C" NOT NULL,
    created timestamptz NOT NULL, message_id text NOT NULL, resource text COLLATE "C",
    tracks text[] COLLATE "C" NOT NULL, track_release boolean NOT NULL, rid bigint,
    merged bigint[] NOT NULL, albums int[] NOT NULL, album_records bigint[] NOT NULL,
    carried bigint[] NOT NULL
) ON COMMIT DROP;
CREATE TEMP TABLE ddex_g (
    id text COLLATE "C", subject text COLLATE "C", resource text COLLATE "C", actions text[],
    territories text[], exclude_territories text[], valid_from timestamptz,
    valid_until timestamptz, effect text, attributes jsonb, source text COLLATE "C", eno int
) ON COMMIT DROP;
CREATE TEMP TABLE ddex_old_links (child text COLLATE "C", parent text COLLATE "C", mno int)
    ON COMMIT DROP;
CREATE TEMP TABLE ddex_new_links (child text COLLATE "C", parent text COLLATE "C", mno int)
    ON COMMIT DROP;
CREATE TEMP TABLE ddex_touched (child text COLLATE "C", mno int, added boolean) ON COMMIT DROP;
CREATE TEMP TABLE ddex_dropped (track_release_id bigint, mno int, created timestamptz)
    ON COMMIT DROP;
"""
_TRUNCATE_SQL: Final = (
    "TRUNCATE ddex_e, ddex_g, ddex_old_links, ddex_new_links, ddex_touched, ddex_dropped"
)

_KNOWN_SQL: Final = """
SELECT a.sender, a.alias, r.id, r.message_created
FROM unnest($1::text[], $2::text[]) AS k(sender, alias)
JOIN ddex_release_aliases a ON a.sender = k.sender AND a.alias = k.alias
JOIN ddex_releases r ON r.id = a.release_id
"""

# Releases not seen before get a record (its fields are set with the others' at the end).
_NEW_RECORDS_SQL: Final = """
WITH made AS (
    INSERT INTO ddex_releases (sender, release_key, state, message_created, message_id)
    SELECT sender, key, 'live', created, message_id FROM ddex_e WHERE rid IS NULL ORDER BY eno
    RETURNING id, sender, release_key
)
UPDATE ddex_e e SET rid = made.id FROM made
WHERE e.rid IS NULL AND e.sender = made.sender AND e.key = made.release_key
"""

# The track links the records had (folded ones too), and those the messages give.
_OLD_LINKS_SQL: Final = """
INSERT INTO ddex_old_links (child, parent, mno)
SELECT DISTINCT t.child, r.resource, e.mno
FROM ddex_e e
CROSS JOIN LATERAL unnest(e.merged || e.rid) AS x(id)
JOIN ddex_releases r ON r.id = x.id
CROSS JOIN LATERAL unnest(r.tracks) AS t(child)
WHERE r.resource IS NOT NULL
"""
_NEW_LINKS_SQL: Final = """
INSERT INTO ddex_new_links (child, parent, mno)
SELECT DISTINCT t.child, e.resource, e.mno
FROM ddex_e e CROSS JOIN LATERAL unnest(e.tracks) AS t(child)
WHERE e.kind = 'new' AND e.resource IS NOT NULL
"""

# Records named by several ids that were apart until now become one (the first).
_FOLD_SQL: Final = (
    """UPDATE ddex_grants l SET release_id = m.rid
       FROM (SELECT rid, unnest(merged) AS old FROM ddex_e) m WHERE l.release_id = m.old""",
    """UPDATE ddex_release_aliases a SET release_id = m.rid
       FROM (SELECT rid, unnest(merged) AS old FROM ddex_e) m WHERE a.release_id = m.old""",
    """INSERT INTO ddex_track_releases (release_id, track_release_id)
       SELECT coalesce(a.rid, t.release_id), coalesce(b.rid, t.track_release_id)
       FROM ddex_track_releases t
       LEFT JOIN (SELECT rid, unnest(merged) AS old FROM ddex_e) a ON a.old = t.release_id
       LEFT JOIN (SELECT rid, unnest(merged) AS old FROM ddex_e) b ON b.old = t.track_release_id
       WHERE a.old IS NOT NULL OR b.old IS NOT NULL
       ON CONFLICT DO NOTHING""",
    "DELETE FROM ddex_releases WHERE id IN (SELECT unnest(merged) FROM ddex_e)",
)

# Links no message lists any more (a purged release lists none), unless another
# sender's record of the same release still lists the track ...
_REMOVE_LINKS_SQL: Final = """
WITH gone AS (
    SELECT child, parent, min(mno) AS mno FROM ddex_old_links o
    WHERE NOT EXISTS (
        SELECT 1 FROM ddex_new_links n WHERE n.child = o.child AND n.parent = o.parent)
      AND NOT EXISTS (
        SELECT 1 FROM ddex_releases r
        WHERE r.resource = o.parent AND o.child = ANY(r.tracks)
          AND NOT EXISTS (SELECT 1 FROM ddex_e e WHERE r.id = e.rid OR r.id = ANY(e.merged)))
    GROUP BY child, parent
), del AS (
    DELETE FROM resource_parents p USING gone g
    WHERE p.child = g.child AND p.parent = g.parent
    RETURNING p.child, g.mno
)
INSERT INTO ddex_touched (child, mno, added) SELECT child, mno, false FROM del
"""
# ... and the new ones, with the resources they join (a track on several releases
# keeps every link: only this release's own are replaced).
_ADD_LINKS_SQL: Final = (
    """INSERT INTO resources (id, type, revision)
       SELECT x, split_part(x, ':', 1), $1
       FROM (SELECT child FROM ddex_new_links UNION SELECT parent FROM ddex_new_links) s(x)
       ORDER BY x ON CONFLICT (id) DO NOTHING""",
    """WITH fresh AS (
           SELECT child, parent, min(mno) AS mno FROM ddex_new_links GROUP BY child, parent
       ), added AS (
           INSERT INTO resource_parents (child, parent)
           SELECT child, parent FROM fresh ORDER BY child, parent
           ON CONFLICT DO NOTHING RETURNING child, parent
       )
       INSERT INTO ddex_touched (child, mno, added)
       SELECT a.child, f.mno, true FROM added a JOIN fresh f USING (child, parent)""",
)
# The resources whose parents changed: their revision, the graph check, the counts.
_TOUCHED_SQL: Final = (
    """INSERT INTO imp_rchg (id, line)
       SELECT child, min(mno) FROM ddex_touched WHERE added GROUP BY child""",
    """UPDATE resources r SET revision = $1, updated_at = now()
       FROM (SELECT DISTINCT child FROM ddex_touched) t WHERE r.id = t.child""",
)
_TOUCHED_COUNTS_SQL: Final = """
SELECT mno, count(*) FILTER (WHERE added) AS added, count(*) FILTER (WHERE NOT added) AS removed
FROM ddex_touched GROUP BY mno
"""
_TOUCHED_KEYS_SQL: Final = (
    "SELECT ARRAY(SELECT DISTINCT 'resource ' || child FROM ddex_touched LIMIT $1)"
)

# Track releases: the releases whose messages carry them (itself, when none lists it) ...
_CARRY_SQL: Final = """
INSERT INTO ddex_track_releases (release_id, track_release_id)
SELECT DISTINCT x.album, e.rid
FROM ddex_e e
CROSS JOIN LATERAL (
    SELECT a.rid FROM ddex_e a WHERE a.eno = ANY(e.albums)
    UNION SELECT unnest(e.album_records)
    UNION SELECT e.rid WHERE cardinality(e.albums) + cardinality(e.album_records) = 0
) AS x(album)
WHERE e.kind = 'new' AND e.track_release
ORDER BY 1, 2
ON CONFLICT DO NOTHING
"""
# ... a release's message that no longer carries one lets go of it (a purge of all) ...
_LET_GO_SQL: Final = """
WITH gone AS (
    DELETE FROM ddex_track_releases m USING ddex_e a
    WHERE m.release_id = a.rid AND m.track_release_id <> a.rid
      AND NOT m.track_release_id = ANY(a.carried)
      AND NOT EXISTS (
          SELECT 1 FROM ddex_e c
          WHERE c.rid = m.track_release_id AND c.mno = a.mno AND a.eno = ANY(c.albums))
    RETURNING m.track_release_id, a.mno, a.created
)
INSERT INTO ddex_dropped (track_release_id, mno, created)
SELECT track_release_id, min(mno), max(created) FROM gone GROUP BY track_release_id
"""
# ... and one that no release carries any more is dropped: its grants go below, and
# a message older than the one that let go of it is stale for it.
_DROP_SQL: Final = (
    """DELETE FROM ddex_dropped d WHERE EXISTS (
           SELECT 1 FROM ddex_track_releases m WHERE m.track_release_id = d.track_release_id)""",
    """UPDATE ddex_releases r SET state = 'dropped', updated_at = now(),
           message_created = greatest(r.message_created, d.created)
       FROM ddex_dropped d WHERE r.id = d.track_release_id""",
)

# The grants a record had that its message no longer carries, and a dropped track
# release's: deleted, with their links.
_DELETE_GRANTS_SQL: Final = f"""
WITH linked AS (
    SELECT l.grant_id, e.mno FROM ddex_e e JOIN ddex_grants l ON l.release_id = e.rid
    WHERE NOT EXISTS (SELECT 1 FROM ddex_g g WHERE g.id = l.grant_id AND g.eno = e.eno)
    UNION ALL
    SELECT l.grant_id, d.mno FROM ddex_dropped d
    JOIN ddex_grants l ON l.release_id = d.track_release_id
), unlinked AS (
    DELETE FROM ddex_grants l USING linked x WHERE l.grant_id = x.grant_id
), del AS (
    DELETE FROM grants g USING linked x WHERE g.id = x.grant_id
    RETURNING g.subject, g.resource, x.mno
), per AS (
    SELECT mno, count(*) AS n FROM del GROUP BY mno
)
SELECT ARRAY(SELECT mno FROM per ORDER BY mno) AS mnos,
       ARRAY(SELECT n FROM per ORDER BY mno) AS deleted,
       ARRAY(SELECT DISTINCT {_KEY_SQL} FROM del LIMIT $1) AS keys
"""

# The messages' grants: a grant equal to the stored one is unchanged and never written.
_MERGE_GRANTS_SQL: Final = f"""
WITH cur AS MATERIALIZED (
    SELECT n.id, {_columns("n")}, e.mno, g.subject AS old_subject, g.resource AS old_resource,
           g.id IS NOT NULL
           AND ({_columns("g")}) IS NOT DISTINCT FROM ({_columns("n")}) AS same
    FROM ddex_g n
    JOIN ddex_e e ON e.eno = n.eno
    LEFT JOIN LATERAL (SELECT * FROM grants WHERE grants.id = n.id LIMIT 1) g ON true
), up AS (
    INSERT INTO grants AS t (id, {_DATA}, revision)
    SELECT id, {_DATA}, $1 FROM cur WHERE NOT same ORDER BY id
    ON CONFLICT (id) DO UPDATE SET
        {", ".join(f"{c} = EXCLUDED.{c}" for c in _DATA_COLUMNS)},
        revision = EXCLUDED.revision, updated_at = now()
    RETURNING t.id, t.subject, t.resource, t.xmax = 0 AS inserted
), touched AS (
    SELECT subject, resource FROM up
    UNION
    SELECT old_subject, old_resource FROM cur WHERE NOT same AND old_subject IS NOT NULL
), per AS (
    SELECT c.mno, count(*) FILTER (WHERE u.inserted) AS i, count(*) FILTER (WHERE NOT u.inserted) AS u
    FROM up u JOIN cur c ON c.id = u.id GROUP BY c.mno
)
SELECT ARRAY(SELECT mno FROM per ORDER BY mno) AS mnos,
       ARRAY(SELECT i FROM per ORDER BY mno) AS inserted,
       ARRAY(SELECT u FROM per ORDER BY mno) AS updated,
       ARRAY(SELECT DISTINCT {_KEY_SQL} FROM touched LIMIT $2) AS keys
"""
_LINK_GRANTS_SQL: Final = """
INSERT INTO ddex_grants (grant_id, release_id)
SELECT g.id, e.rid FROM ddex_g g JOIN ddex_e e ON e.eno = g.eno ORDER BY g.id
ON CONFLICT (grant_id) DO UPDATE SET release_id = EXCLUDED.release_id
WHERE ddex_grants.release_id <> EXCLUDED.release_id
"""

# The records: what the last message applied said (written only when it differs).
_RECORDS_SQL: Final = (
    """WITH v AS (
           SELECT rid, key,
                  CASE WHEN kind = 'new' THEN resource END AS resource,
                  CASE WHEN kind = 'new' THEN tracks ELSE '{}' END AS tracks,
                  CASE WHEN kind = 'new' THEN 'live' ELSE 'purged' END AS state,
                  created, message_id
           FROM ddex_e
       )
       UPDATE ddex_releases r SET release_key = v.key, resource = v.resource,
           tracks = v.tracks, state = v.state, message_created = v.created,
           message_id = v.message_id, updated_at = now()
       FROM v
       WHERE r.id = v.rid AND (r.release_key, r.resource, r.tracks, r.state, r.message_created,
           r.message_id) IS DISTINCT FROM (v.key, v.resource, v.tracks, v.state, v.created,
           v.message_id)""",
    """INSERT INTO ddex_release_aliases (sender, alias, release_id)
       SELECT e.sender, a.alias, e.rid FROM ddex_e e CROSS JOIN LATERAL unnest(e.aliases) a(alias)
       ORDER BY 1, 2 ON CONFLICT (sender, alias) DO NOTHING""",
)


def _rows(status: str) -> int:
    """The row count of a command status (``INSERT 0 12``, ``DELETE 3``)."""
    return int(status.rsplit(" ", 1)[1])


class PostgresDdexWriter:
    """Applies DDEX release entries inside one import's transaction (``db``), writing at
    the import's expected ``revision``; ``lock_graph`` takes the graph lock before the
    first link is written."""

    def __init__(
        self, db: ImportConnection, revision: int, lock_graph: Callable[[], Awaitable[None]]
    ) -> None:
        self.db = db
        self.revision = revision
        self.lock_graph = lock_graph
        self._staged = False

    async def known(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], KnownRelease]:
        """The stored releases these (sender, id) pairs name."""
        if not keys:
            return {}
        rows = await self.db.fetch(_KNOWN_SQL, [k[0] for k in keys], [k[1] for k in keys])
        return {(r[0], r[1]): KnownRelease(int(r[2]), r[3]) for r in rows}

    async def apply(self, entries: Sequence[ReleaseEntry], key_limit: int) -> AppliedBatch:
        """Apply a batch (entries naming different records); what changed, by message.
        ``key_limit``: how many change-feed entries to return at most, per kind of change."""
        result = AppliedBatch()
        if not entries:
            return result
        db = self.db
        await self._stage(entries)
        if any(not e.records for e in entries):
            await db.execute(_NEW_RECORDS_SQL)
        old = _rows(await db.execute(_OLD_LINKS_SQL))
        new = _rows(await db.execute(_NEW_LINKS_SQL))
        if any(len(e.records) > 1 for e in entries):
            for sql in _FOLD_SQL:
                await db.execute(sql)
        if old or new:
            await self._links(old, new, result, key_limit)
        if any(e.track_release for e in entries):
            await db.execute(_CARRY_SQL)
        if _rows(await db.execute(_LET_GO_SQL)):
            for sql in _DROP_SQL:
                await db.execute(sql)
        deleted = await db.fetchrow(_DELETE_GRANTS_SQL, key_limit)
        for mno, n in zip(deleted["mnos"], deleted["deleted"], strict=True):
            result.of(mno).deleted += n
        result.keys.extend(deleted["keys"])
        if any(e.grants for e in entries):
            merged = await db.fetchrow(_MERGE_GRANTS_SQL, self.revision, key_limit)
            for mno, i, u in zip(
                merged["mnos"], merged["inserted"], merged["updated"], strict=True
            ):
                result.of(mno).inserted += i
                result.of(mno).updated += u
            result.keys.extend(merged["keys"])
            await db.execute(_LINK_GRANTS_SQL)
        for sql in _RECORDS_SQL:
            await db.execute(sql)
        return result

    async def _stage(self, entries: Sequence[ReleaseEntry]) -> None:
        db = self.db
        if not self._staged:
            await db.execute(_STAGING_SQL)
            self._staged = True
        else:
            await db.execute(_TRUNCATE_SQL)
        rows: list[tuple[Any, ...]] = []
        lines: list[str] = []
        for eno, e in enumerate(entries):
            rows.append(
                (
                    eno,
                    e.message,
                    e.kind,
                    e.sender,
                    e.key,
                    list(e.aliases),
                    e.created,
                    e.message_id,
                    e.resource,
                    list(e.tracks),
                    e.track_release,
                    e.records[0] if e.records else None,
                    list(e.records[1:]),
                    list(e.albums),
                    list(e.album_records),
                    list(e.carried),
                )
            )
            tail = f"\t{eno}\n"
            lines.extend(copy_text(row, tail) for row in e.grants)
        await db.copy("ddex_e", rows, _E_COLUMNS)
        if lines:
            await db.copy_text("ddex_g", lines, _G_COLUMNS)
        # TEMP tables have no statistics until asked: the joins below need them.
        await db.execute("ANALYZE ddex_e, ddex_g")

    async def _links(self, old: int, new: int, result: AppliedBatch, key_limit: int) -> None:
        db = self.db
        await self.lock_graph()
        if old:
            await db.execute(_REMOVE_LINKS_SQL)
        if new:
            await db.execute(_ADD_LINKS_SQL[0], self.revision)
            await db.execute(_ADD_LINKS_SQL[1])
        await db.execute(_TOUCHED_SQL[0])
        await db.execute(_TOUCHED_SQL[1], self.revision)
        for row in await db.fetch(_TOUCHED_COUNTS_SQL):
            changes = result.of(row["mno"])
            changes.links_added += row["added"]
            changes.links_removed += row["removed"]
        result.keys.extend(await db.fetchval(_TOUCHED_KEYS_SQL, key_limit))


__all__ = ["PostgresDdexWriter"]
