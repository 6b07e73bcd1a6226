"""Uncached entitlement checks against Postgres: 100k grants vs 1M grants, one run.

    python benchmarks/bench_checks.py [--dsn DSN] [--tracks 100000] [--grants 1000000]
        [--seconds 10] [--concurrency 50] [--pool 10] [--out benchmarks/results/checks.json]

What it does, in one process:

1. Creates (dropping it first if present) the database ``entitlements_bench`` on
   the server of ``--dsn`` (default: ``$ENTITLEMENTS_BENCH_DATABASE_URL``, else
   ``postgresql://postgres@127.0.0.1:5432/postgres``), applies ``schema.sql``
   through ``PostgresStore.open`` and drops the database at the end (``--keep``
   keeps it).
2. Loads a music catalogue with asyncpg COPY straight into the schema's tables:
   ~200 labels, ~10k releases (each under one label), ``--tracks`` tracks (each
   on one release, ~5% also on a compilation), label deals per plan role
   (``plan:premium``/``plan:free``/``plan:family``; worldwide, some with
   exclusions, some regional, some windowed, some expired or not yet open),
   release deals (windowed premium exclusives, territory promos, territorial
   takedowns), track takedowns, and per-user purchases on tracks (Zipf-skewed
   towards hits) so the grant count is exactly ``--phase1-grants``.
   Then ``VACUUM (ANALYZE)`` (ANALYZE for the planner; VACUUM so hint bits and
   the visibility map are set before measuring, and autovacuum does not start
   in the middle of a measurement).
3. Phase 1: measures. Phase 2: COPYs more purchases until the grant count is
   exactly ``--grants``, VACUUM (ANALYZE), measures again. Purchases are
   COPYed with the grants table's secondary indexes dropped; re-applying
   ``schema.sql`` rebuilds them (as a bulk loader would), so both phases
   measure freshly built indexes.

Each phase measures the real service path,
``CheckService(StoreGrantSource(store), store).check(CheckRequest(...))`` — the
uncached baseline a cache must beat:

- sequential latency (one check after another): p50/p90/p99/max in µs, also
  split by request kind (own purchase / hot track / uniform track);
- throughput: ``--concurrency`` tasks sharing a pool of ``--pool`` connections
  for ``--seconds``: checks/s and p50/p99 as the caller sees it (pool wait
  included);
- ``EXPLAIN (ANALYZE, BUFFERS)`` of the check SQL for the same hot track and the
  same cold track in both phases, under the plan the prepared statement settles
  on (``plan_cache_mode = auto``) and under forced custom and generic plans:
  shared buffers touched must not grow with the catalogue;
- which plans the pool's prepared statements actually used
  (``pg_prepared_statements.generic_plans/custom_plans``).

It prints markdown tables (with a 1M/100k ratio row) and writes JSON with the
machine's details and every figure to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import math
import os
import platform
import random
import sys
import time
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from phases import error_of, report_failures, run_phase_async

from entitlements.service.checks import CheckRequest, CheckService, StoreGrantSource
from entitlements.store.postgres import PostgresStore
from entitlements.store.schema import schema_sql

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "entitlements_bench"

N_LABELS = 200
N_RELEASES = 10_000
SECOND_RELEASE_SHARE = 0.05  # tracks also on a compilation
RELEASE_DEAL_SHARE = 0.30  # releases with a release-level deal
TAKEDOWN_SHARE = 0.005  # tracks with a takedown deny
PURCHASE_ZIPF_S = 0.9  # purchases per track, by popularity rank
CHECK_ZIPF_S = 1.0  # checks per track, by popularity rank (streams are skewed)

ROLE_MIX: tuple[tuple[tuple[str, ...], int], ...] = (
    (("plan:premium",), 50),
    (("plan:free",), 30),
    (("plan:family",), 12),
    ((), 8),  # no plan: purchases only
)
# Where listeners are (rough shares of a global streaming service).
TERRITORY_MIX: tuple[tuple[str, int], ...] = (
    ("US", 30), ("GB", 9), ("DE", 8), ("FR", 6), ("JP", 6), ("BR", 6), ("MX", 4),
    ("CA", 4), ("IN", 3), ("AU", 3), ("ES", 3), ("IT", 3), ("NL", 2), ("SE", 2),
    ("PL", 2), ("KR", 2), ("TR", 1), ("AR", 1), ("ZA", 1), ("NG", 1), ("ID", 1),
    ("PH", 1), ("RU", 1), ("IE", 1),
)  # fmt: skip
REGIONS: tuple[tuple[str, ...], ...] = (
    ("US", "CA"),
    ("GB", "IE"),
    ("DE", "AT", "CH"),
    ("FR", "BE", "LU"),
    ("JP",),
    ("BR", "AR", "MX", "CL", "CO"),
    ("US", "CA", "GB", "IE", "AU", "NZ"),
)
EXCLUSIONS: tuple[tuple[str, ...], ...] = (
    ("CN", "RU"),
    ("DE", "FR"),
    ("KP", "IR", "SY", "CU"),
    ("JP",),
)
BOTH = ["download", "stream"]
STREAM = ["stream"]
WORLD = ["*"]
DEAL_COLUMNS = (
    "id", "subject", "resource", "actions", "territories", "exclude_territories",
    "valid_from", "valid_until", "effect", "attributes", "source", "revision",
)  # fmt: skip
PURCHASE_COLUMNS = (
    "id", "subject", "resource", "actions", "territories", "valid_from", "attributes",
    "source", "revision",
)  # fmt: skip


# --- identifiers ----------------------------------------------------------------


def label_id(i: int) -> str:
    return f"label:lbl-{i:04d}"


def release_id(i: int) -> str:
    return f"release:0196{i:09d}"  # UPC-like, 13 digits


def track_id(i: int) -> str:
    return f"track:QMDA7{i:07d}"  # ISRC-like, 12 characters


def user_of(n: int) -> str:
    return f"u{n}"


# --- the catalogue ----------------------------------------------------------------


@dataclass(slots=True)
class Catalogue:
    """Labels, releases, tracks, the deals on them, and the purchase stream (all seeded)."""

    n_tracks: int
    n_users: int
    release_label: list[int]
    track_releases: list[tuple[int, ...]]
    hot: list[int]  # popularity rank -> track index
    check_cum: list[float]  # cumulative Zipf weights over ranks, for check requests
    deals: list[tuple[Any, ...]]  # rows in DEAL_COLUMNS order
    purchase_user: array[int]
    purchase_track: array[int]
    times: list[datetime]  # purchase instants to pick from
    now: datetime


def zipf_cum(n: int, s: float) -> list[float]:
    return list(itertools.accumulate(1.0 / (k**s) for k in range(1, n + 1)))


def build_catalogue(n_tracks: int, n_grants: int, seed: int) -> Catalogue:
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    # Majors have many releases: label of a release is skewed towards low numbers.
    release_label = [int(N_LABELS * rng.random() ** 2) for _ in range(N_RELEASES)]
    track_releases: list[tuple[int, ...]] = []
    for i in range(n_tracks):
        first = i * N_RELEASES // n_tracks  # ~10 tracks per release, in album order
        if rng.random() < SECOND_RELEASE_SHARE:
            other = rng.randrange(N_RELEASES)
            track_releases.append((first, other) if other != first else (first,))
        else:
            track_releases.append((first,))
    hot = list(range(n_tracks))
    rng.shuffle(hot)
    deals = make_deals(rng, now, release_label, n_tracks)
    n_purchases = n_grants - len(deals)
    if n_purchases < 0:
        raise SystemExit(f"--grants {n_grants} is below the {len(deals)} deals of the catalogue")
    n_users = max(1000, n_grants // 8)
    purchase_cum = zipf_cum(n_tracks, PURCHASE_ZIPF_S)
    ranks = rng.choices(range(n_tracks), cum_weights=purchase_cum, k=n_purchases)
    purchase_track = array("l", (hot[r] for r in ranks))
    # Heavy buyers: user numbers skewed towards low ids.
    purchase_user = array("l", (int(n_users * rng.random() ** 1.5) for _ in range(n_purchases)))
    times = [now - timedelta(seconds=rng.randrange(3 * 365 * 86400)) for _ in range(4096)]
    return Catalogue(
        n_tracks=n_tracks,
        n_users=n_users,
        release_label=release_label,
        track_releases=track_releases,
        hot=hot,
        check_cum=zipf_cum(n_tracks, CHECK_ZIPF_S),
        deals=deals,
        purchase_user=purchase_user,
        purchase_track=purchase_track,
        times=times,
        now=now,
    )


def make_deals(
    rng: random.Random, now: datetime, release_label: Sequence[int], n_tracks: int
) -> list[tuple[Any, ...]]:
    """Label deals per plan, release deals and track takedowns, in DEAL_COLUMNS order."""
    day = timedelta(days=1)
    sub = orjson.dumps({"model": "subscription", "quality": "lossless"}).decode()
    ads = orjson.dumps({"model": "ad-supported", "quality": "standard"}).decode()
    out: list[tuple[Any, ...]] = []
    for lab in range(N_LABELS):
        res, src = label_id(lab), f"feed-lbl-{lab:04d}"
        excl = list(rng.choice(EXCLUSIONS)) if rng.random() < 0.2 else []
        out.append(
            (f"deal-{lab}-premium", "role:plan:premium", res, BOTH, WORLD, excl,
             None, None, "allow", sub, src, 1)
        )  # fmt: skip
        if rng.random() < 0.9:  # a tenth of the labels keep off the free tier
            terr = sorted(rng.choice(REGIONS)) if rng.random() < 0.2 else WORLD
            excl = list(rng.choice(EXCLUSIONS)) if terr == WORLD and rng.random() < 0.25 else []
            out.append(
                (f"deal-{lab}-free", "role:plan:free", res, STREAM, terr, excl,
                 None, None, "allow", ads, src, 1)
            )  # fmt: skip
        if rng.random() < 0.7:
            u = rng.random()
            if u < 0.1:  # expired
                start, end = now - 400 * day, now - rng.randrange(1, 60) * day
            elif u < 0.2:  # not yet open
                start, end = now + rng.randrange(1, 60) * day, now + 400 * day
            elif u < 0.6:  # open, ends within the year
                start, end = now - rng.randrange(1, 300) * day, now + rng.randrange(1, 300) * day
            else:
                start, end = now - rng.randrange(1, 900) * day, None
            out.append(
                (f"deal-{lab}-family", "role:plan:family", res, BOTH, WORLD, [],
                 start, end, "allow", sub, src, 1)
            )  # fmt: skip
    for rel in range(len(release_label)):
        if rng.random() >= RELEASE_DEAL_SHARE:
            continue
        res, src = release_id(rel), f"feed-lbl-{release_label[rel]:04d}"
        u = rng.random()
        if u < 0.5:  # premium window on a new release
            start = now - rng.randrange(0, 30) * day
            out.append(
                (f"rel-{rel}-window", "role:plan:premium", res, BOTH, WORLD, [],
                 start, start + 60 * day, "allow", sub, src, 1)
            )  # fmt: skip
        elif u < 0.9:  # regional promo for anyone with a token
            start = now - rng.randrange(-20, 40) * day
            out.append(
                (f"rel-{rel}-promo", "*", res, STREAM, sorted(rng.choice(REGIONS)), [],
                 start, start + 45 * day, "allow", ads, src, 1)
            )  # fmt: skip
        else:  # territorial takedown of a whole release
            out.append(
                (f"rel-{rel}-takedown", "*", res, BOTH, sorted(rng.choice(REGIONS)), [],
                 None, None, "deny", None, "takedowns", 1)
            )  # fmt: skip
    for t in rng.sample(range(n_tracks), int(n_tracks * TAKEDOWN_SHARE)):
        terr = WORLD if rng.random() < 0.5 else sorted(rng.choice(REGIONS))
        out.append(
            (f"takedown-{t}", "*", track_id(t), BOTH, terr, [],
             now - rng.randrange(1, 500) * day, None, "deny", None, "takedowns", 1)
        )  # fmt: skip
    return out


def purchase_rows(
    cat: Catalogue, start: int, stop: int, revision: int
) -> Iterator[tuple[Any, ...]]:
    times, ntimes = cat.times, len(cat.times)
    for n in range(start, stop):
        yield (
            f"purchase-{n:08d}",
            f"user:{user_of(cat.purchase_user[n])}",
            track_id(cat.purchase_track[n]),
            BOTH,
            WORLD,
            times[n % ntimes],
            None,
            "store-purchases",
            revision,
        )


# --- loading ----------------------------------------------------------------------


def db_dsn(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def recreate_database(admin_dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {BENCH_DB}")
    finally:
        await conn.close()


async def drop_database(admin_dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    finally:
        await conn.close()


async def load_catalogue(conn: asyncpg.Connection, cat: Catalogue) -> dict[str, Any]:
    """Resources, parent edges and deals (revision 1)."""
    t0 = time.perf_counter()
    resources = itertools.chain(
        ((label_id(i), "label", 1) for i in range(N_LABELS)),
        ((release_id(i), "release", 1) for i in range(N_RELEASES)),
        ((track_id(i), "track", 1) for i in range(cat.n_tracks)),
    )
    await conn.copy_records_to_table(
        "resources", records=resources, columns=("id", "type", "revision")
    )
    edges = itertools.chain(
        ((release_id(r), label_id(lab)) for r, lab in enumerate(cat.release_label)),
        ((track_id(t), release_id(r)) for t, rels in enumerate(cat.track_releases) for r in rels),
    )
    await conn.copy_records_to_table("resource_parents", records=edges, columns=("child", "parent"))
    await conn.copy_records_to_table("grants", records=cat.deals, columns=DEAL_COLUMNS)
    await set_revision(conn, 1)
    n_edges = N_RELEASES + sum(len(r) for r in cat.track_releases)
    return {
        "resources": N_LABELS + N_RELEASES + cat.n_tracks,
        "edges": n_edges,
        "deals": len(cat.deals),
        "seconds": round(time.perf_counter() - t0, 2),
    }


_SECONDARY_INDEXES = """
    SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE i.indrelid = $1::regclass
      AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
    ORDER BY 1
"""


async def load_purchases(
    conn: asyncpg.Connection, cat: Catalogue, start: int, stop: int, revision: int
) -> dict[str, Any]:
    """COPY purchases in one transaction, the way a bulk loader does it.

    The grants table's secondary indexes are dropped for the COPY and rebuilt
    by re-applying ``schema.sql`` (so they are exactly the schema's); the
    primary key stays. Maintaining two (text, text) B-trees row by row made
    the 1M load take ~30 s instead of a few seconds.
    """
    async with conn.transaction():
        indexes = [r[0] for r in await conn.fetch(_SECONDARY_INDEXES, "grants")]
        for name in indexes:
            await conn.execute(f'DROP INDEX "{name}"')
        t0 = time.perf_counter()
        await conn.copy_records_to_table(
            "grants", records=purchase_rows(cat, start, stop, revision), columns=PURCHASE_COLUMNS
        )
        copy_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        await conn.execute(schema_sql())
        index_s = time.perf_counter() - t1
        rebuilt = [r[0] for r in await conn.fetch(_SECONDARY_INDEXES, "grants")]
        if set(indexes) - set(rebuilt):
            raise RuntimeError(f"schema.sql did not recreate {sorted(set(indexes) - set(rebuilt))}")
    await set_revision(conn, revision)
    return {
        "purchases": stop - start,
        "copy_seconds": round(copy_s, 2),
        "rows_per_second": round((stop - start) / copy_s) if copy_s > 0 else None,
        "index_rebuild_seconds": round(index_s, 2),
        "indexes_rebuilt": rebuilt,
    }


async def set_revision(conn: asyncpg.Connection, revision: int) -> None:
    """A bulk load is one revision whose change is 'all' (too much to list)."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO changes (revision, kind, key) VALUES ($1, 'all', '*')"
            " ON CONFLICT DO NOTHING",
            revision,
        )
        await conn.execute("UPDATE ent_revision SET value = $1", revision)


async def vacuum_analyze(conn: asyncpg.Connection) -> float:
    t0 = time.perf_counter()
    for table in ("resources", "resource_parents", "grants", "ent_revision", "changes"):
        await conn.execute(f"VACUUM (ANALYZE) {table}")
    return round(time.perf_counter() - t0, 2)


async def table_stats(conn: asyncpg.Connection) -> dict[str, Any]:
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM grants) AS grants,
                  (SELECT count(*) FROM grants WHERE subject LIKE 'user:%') AS purchases,
                  (SELECT count(*) FROM resources WHERE type = 'track') AS tracks,
                  (SELECT count(*) FROM resource_parents) AS edges,
                  (SELECT value FROM ent_revision) AS revision,
                  pg_total_relation_size('grants') AS grants_bytes,
                  pg_relation_size('grants_resource_subject') AS idx_resource_subject_bytes,
                  pg_relation_size('grants_subject') AS idx_subject_bytes,
                  pg_database_size(current_database()) AS database_bytes"""
    )
    return dict(row)


# --- requests -------------------------------------------------------------------------


def make_requests(
    cat: Catalogue, n_purchases: int, n: int, rng: random.Random
) -> list[tuple[str, CheckRequest]]:
    """Realistic checks, tagged by kind: own purchase 10%, hot (Zipf) track 45%, uniform 45%."""
    roles, role_w = zip(*ROLE_MIX, strict=True)
    terrs, terr_w = zip(*TERRITORY_MIX, strict=True)
    role_cum = list(itertools.accumulate(role_w))
    terr_cum = list(itertools.accumulate(terr_w))
    out: list[tuple[str, CheckRequest]] = []
    for _ in range(n):
        u = rng.random()
        if u < 0.10 and n_purchases:
            p = rng.randrange(n_purchases)
            kind, user, track = "owned", cat.purchase_user[p], cat.purchase_track[p]
        else:
            if u < 0.55:
                kind = "hot"
                track = cat.hot[rng.choices(range(cat.n_tracks), cum_weights=cat.check_cum)[0]]
            else:
                kind, track = "uniform", rng.randrange(cat.n_tracks)
            # Half the callers are buyers (skewed like the purchases), half never bought.
            if rng.random() < 0.5:
                user = int(cat.n_users * rng.random() ** 1.5)
            else:
                user = cat.n_users + rng.randrange(cat.n_users)
        req = CheckRequest(
            user=user_of(user),
            roles=rng.choices(roles, cum_weights=role_cum)[0],
            resource=track_id(track),
            action="stream" if rng.random() < 0.85 else "download",
            territory=rng.choices(terrs, cum_weights=terr_cum)[0],
        )
        out.append((kind, req))
    return out


# --- measuring ----------------------------------------------------------------------


def summary(ns: Sequence[int]) -> dict[str, Any]:
    """Percentiles (nearest rank) in µs."""
    if not ns:
        return {"n": 0}
    s = sorted(ns)

    def pct(q: float) -> float:
        return round(s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))] / 1000, 1)

    return {
        "n": len(s),
        "p50_us": pct(0.50),
        "p90_us": pct(0.90),
        "p99_us": pct(0.99),
        "max_us": round(s[-1] / 1000, 1),
        "mean_us": round(sum(s) / len(s) / 1000, 1),
    }


async def run_sequential(
    service: CheckService, reqs: Sequence[tuple[str, CheckRequest]], n: int
) -> dict[str, Any]:
    lat: list[int] = []
    by_kind: dict[str, list[int]] = {}
    reasons: Counter[str] = Counter()
    clock = time.perf_counter_ns
    for i in range(n):
        kind, req = reqs[i % len(reqs)]
        t0 = clock()
        decision = await service.check(req)
        dt = clock() - t0
        lat.append(dt)
        by_kind.setdefault(kind, []).append(dt)
        reasons[decision.reason] += 1
    return {
        **summary(lat),
        "by_kind": {k: summary(v) for k, v in sorted(by_kind.items())},
        "reasons": dict(reasons.most_common()),
    }


async def run_load(
    service: CheckService,
    reqs: Sequence[tuple[str, CheckRequest]],
    seconds: float,
    concurrency: int,
) -> dict[str, Any]:
    lat: list[int] = []
    clock = time.perf_counter_ns
    deadline = time.perf_counter() + seconds
    errors: Counter[str] = Counter()

    async def worker(offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            req = reqs[i % len(reqs)][1]
            i += concurrency
            t0 = clock()
            try:
                await service.check(req)
            except Exception as exc:  # counted, not fatal: a benchmark reports errors
                errors[type(exc).__name__] += 1
                continue
            lat.append(clock() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {
        **summary(lat),
        "seconds": round(elapsed, 2),
        "concurrency": concurrency,
        "checks_per_s": round(len(lat) / elapsed, 1),
        "errors": dict(errors),
    }


def sql_text_array(items: Sequence[str]) -> str:
    inner = ", ".join("'" + s.replace("'", "''") + "'" for s in items)
    return f"ARRAY[{inner}]::text[]"


def _plan_numbers(plan_json: Any) -> dict[str, Any]:
    doc = json.loads(plan_json) if isinstance(plan_json, str) else plan_json
    top = doc[0]
    plan = top["Plan"]
    planning = top.get("Planning", {})
    return {
        "shared_hit": plan.get("Shared Hit Blocks", 0),
        "shared_read": plan.get("Shared Read Blocks", 0),
        "shared_total": plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0),
        "planning_shared_hit": planning.get("Shared Hit Blocks", 0),
        "execution_ms": top.get("Execution Time"),
        "planning_ms": top.get("Planning Time"),
        "rows": plan.get("Actual Rows"),
    }


async def explain_check(
    conn: asyncpg.Connection, sql: str, arrays: Sequence[Sequence[str]]
) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of a store SQL statement taking text[] parameters.

    It runs as a prepared statement, as asyncpg runs it: ``auto`` is the plan
    such a statement settles on after its first executions (Postgres compares
    custom and generic plans after five runs); the forced modes show both
    candidates.
    """
    types = ", ".join("text[]" for _ in arrays)
    args = ", ".join(sql_text_array(a) for a in arrays)
    out: dict[str, Any] = {}
    await conn.execute(f"PREPARE bench_check({types}) AS {sql}")
    try:
        for mode in ("auto", "force_custom_plan", "force_generic_plan"):
            await conn.execute(f"SET plan_cache_mode = {mode}")
            for _ in range(8):  # past the five custom plans, and the pages are warm
                await conn.execute(f"EXECUTE bench_check({args})")
            plan_json = await conn.fetchval(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE bench_check({args})"
            )
            text_rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_check({args})")
            out[mode] = {**_plan_numbers(plan_json), "plan": [r[0] for r in text_rows]}
    finally:
        await conn.execute("RESET plan_cache_mode")
        await conn.execute("DEALLOCATE bench_check")
    return out


async def explain_probe(
    conn: asyncpg.Connection, resource: str, subjects: Sequence[str]
) -> dict[str, Any]:
    """The check SQL for one resource and caller; how many grants sit on that resource."""
    on_resource = await conn.fetchval("SELECT count(*) FROM grants WHERE resource = $1", resource)
    return {
        "resource": resource,
        "subjects": list(subjects),
        "grants_on_resource": on_resource,
        **await explain_check(conn, PostgresStore._CHECK_SQL, [[resource], subjects]),
    }


async def pool_plan_usage(store: PostgresStore, size: int) -> list[dict[str, Any]]:
    """Custom vs generic plans used by the pool's prepared check statements (PG 14+)."""
    conns: list[Any] = []
    rows: list[dict[str, Any]] = []
    try:
        for _ in range(size):
            conns.append(await store.pool.acquire(timeout=5))
        for c in conns:
            with contextlib.suppress(asyncpg.PostgresError):
                for r in await c.fetch(
                    "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
                    " WHERE statement LIKE '%WITH RECURSIVE anc(id, depth)%'"
                    " AND statement NOT LIKE '%pg_prepared_statements%'"
                ):
                    rows.append({"generic_plans": r[1], "custom_plans": r[2]})
    finally:
        for c in conns:
            await store.pool.release(c)
    return rows


def human(n: int) -> str:
    """100000 -> '100k', 1000000 -> '1M' (the phase names)."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= size and n % (size // 10) == 0:
            return f"{n / size:g}{suffix}"
    return f"{n:,}"


def log(start: float, message: str) -> None:
    print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)


async def measure_phase(
    name: str,
    store: PostgresStore,
    conn: asyncpg.Connection,
    cat: Catalogue,
    n_purchases: int,
    probes: dict[str, tuple[str, list[str]]],
    args: argparse.Namespace,
    start: float,
) -> dict[str, Any]:
    service = CheckService(StoreGrantSource(store), store)
    rng = random.Random(args.seed + 1000)  # same request stream shape in both phases
    reqs = make_requests(cat, n_purchases, 50_000, rng)
    stats = await table_stats(conn)
    # Other work on the box skews latency: record how busy it was.
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    log(start, f"{name}: {stats['grants']:,} grants; warming up")
    await run_sequential(service, reqs[-2000:], 500)
    await run_load(service, reqs[-5000:], args.warmup, args.concurrency)
    gc.collect()
    log(start, f"{name}: sequential ({args.seq_checks} checks)")
    seq = await run_sequential(service, reqs, args.seq_checks)
    log(start, f"{name}: load ({args.concurrency} tasks, {args.seconds} s)")
    load = await run_load(service, reqs, args.seconds, args.concurrency)
    plans = await pool_plan_usage(store, args.pool)
    log(start, f"{name}: EXPLAIN")
    explain = {k: await explain_probe(conn, res, subj) for k, (res, subj) in probes.items()}
    # What the cache's per-resource unit (load_resource_view) costs on the hottest track.
    hot_resource = probes["hot_track"][0]
    resource_view = await explain_check(conn, PostgresStore._VIEW_SQL, [[hot_resource]])
    return {
        "phase": name,
        "loadavg_before": loadavg_before,
        "stats": stats,
        "sequential": seq,
        "load": load,
        "pool_plans": {
            "statements": len(plans),
            "generic_plans": sum(p["generic_plans"] for p in plans),
            "custom_plans": sum(p["custom_plans"] for p in plans),
        },
        "explain": explain,
        "explain_resource_view_hot_track": {"resource": hot_resource, **resource_view},
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    if args.grants < args.phase1_grants:
        raise SystemExit("--grants must be at least --phase1-grants")
    bench_dsn = db_dsn(args.dsn, BENCH_DB)
    log(start, "generating the catalogue")
    cat = build_catalogue(args.tracks, args.grants, args.seed)
    n_deals = len(cat.deals)
    p1 = args.phase1_grants - n_deals
    if p1 < 0:
        raise SystemExit(f"--phase1-grants is below the {n_deals} deals of the catalogue")
    p2 = args.grants - n_deals
    # EXPLAIN probes, the same in both phases: the hottest track (most purchases)
    # with one of its buyers on premium, and a cold track with a non-buyer on free.
    hot_track = cat.hot[0]
    buyer = next(cat.purchase_user[n] for n in range(p1) if cat.purchase_track[n] == hot_track)
    cold_track = cat.hot[-1]
    probes = {
        "hot_track": (
            track_id(hot_track),
            sorted(["*", "role:plan:premium", f"user:{user_of(buyer)}"]),
        ),
        "cold_track": (
            track_id(cold_track),
            sorted(["*", "role:plan:free", f"user:{user_of(cat.n_users * 2 - 1)}"]),
        ),
    }
    log(start, f"creating database {BENCH_DB}")
    await recreate_database(args.dsn)
    result: dict[str, Any] = {}
    try:
        store = await PostgresStore.open(bench_dsn, min_size=args.pool, max_size=args.pool)
        conn = await asyncpg.connect(bench_dsn)  # no command timeout: bulk loads
        try:
            server = await conn.fetchval("SELECT version()")
            settings = {
                r[0]: r[1]
                for r in await conn.fetch(
                    "SELECT name, current_setting(name) FROM pg_settings WHERE name IN"
                    " ('shared_buffers', 'effective_cache_size', 'random_page_cost',"
                    " 'work_mem', 'jit', 'plan_cache_mode', 'max_connections')"
                )
            }
            log(start, "loading resources and deals")
            catalogue_load = await load_catalogue(conn, cat)
            log(start, f"phase 1: COPY {p1:,} purchases")
            load1 = await load_purchases(conn, cat, 0, p1, 2)
            load1["vacuum_analyze_seconds"] = await vacuum_analyze(conn)
            # A measuring phase that fails is reported (phases.py); the next still runs.
            done: dict[str, Any] = {}
            name1 = human(args.phase1_grants)
            await run_phase_async(
                done, name1, lambda: measure_phase(name1, store, conn, cat, p1, probes, args, start)
            )
            phase1 = {"phase": name1, **done[name1], "copy": load1}
            phases = [phase1]
            if p2 > p1:
                log(start, f"phase 2: COPY {p2 - p1:,} more purchases")
                load2 = await load_purchases(conn, cat, p1, p2, 3)
                load2["vacuum_analyze_seconds"] = await vacuum_analyze(conn)
                name2 = human(args.grants)
                await run_phase_async(
                    done,
                    name2,
                    lambda: measure_phase(name2, store, conn, cat, p2, probes, args, start),
                )
                phases.append({"phase": name2, **done[name2], "copy": load2})
        finally:
            await conn.close()
            await store.close()
        result = {
            "benchmark": "checks",
            "path": "CheckService(StoreGrantSource(PostgresStore)).check (uncached)",
            "machine": {
                "platform": platform.platform(),
                "machine": platform.machine(),
                "python": platform.python_version(),
                "implementation": platform.python_implementation(),
                "cpu_count": os.cpu_count(),
                "asyncpg": asyncpg.__version__,
                "event_loop": args.loop,
                "postgres": server,
                "postgres_settings": settings,
            },
            "params": {
                "tracks": args.tracks,
                "grants": args.grants,
                "phase1_grants": args.phase1_grants,
                "labels": N_LABELS,
                "releases": N_RELEASES,
                "users": cat.n_users,
                "seconds": args.seconds,
                "concurrency": args.concurrency,
                "pool": args.pool,
                "seq_checks": args.seq_checks,
                "warmup_s": args.warmup,
                "seed": args.seed,
                "purchase_zipf_s": PURCHASE_ZIPF_S,
                "check_zipf_s": CHECK_ZIPF_S,
            },
            "catalogue_load": catalogue_load,
            "phases": phases,
        }
        if len(phases) == 2 and not any(error_of(ph) for ph in phases):
            result["ratio"] = {
                "of": f"{phases[1]['phase']}/{phases[0]['phase']}",
                **ratios(phases[0], phases[1]),
            }
    finally:
        if args.keep:
            log(start, f"kept database {BENCH_DB}: {bench_dsn}")
        else:
            await drop_database(args.dsn)
    result["runtime_s"] = round(time.perf_counter() - start, 1)
    return result


def ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | None]:
    def r(x: float | None, y: float | None) -> float | None:
        return round(y / x, 2) if x and y is not None else None

    out = {
        "grants": r(a["stats"]["grants"], b["stats"]["grants"]),
        "tracks": r(a["stats"]["tracks"], b["stats"]["tracks"]),
        "seq_p50": r(a["sequential"]["p50_us"], b["sequential"]["p50_us"]),
        "seq_p99": r(a["sequential"]["p99_us"], b["sequential"]["p99_us"]),
        "checks_per_s": r(a["load"]["checks_per_s"], b["load"]["checks_per_s"]),
        "load_p50": r(a["load"]["p50_us"], b["load"]["p50_us"]),
        "load_p99": r(a["load"]["p99_us"], b["load"]["p99_us"]),
    }
    for probe in a["explain"]:
        out[f"buffers_{probe}"] = r(
            a["explain"][probe]["auto"]["shared_total"], b["explain"][probe]["auto"]["shared_total"]
        )
    return out


# --- output ---------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    m = result["machine"]
    pg = m["postgres"].split(" on ")[0]
    prm = result["params"]
    lines = [
        f"Uncached checks (CheckService -> StoreGrantSource -> Postgres) — Python {m['python']}, "
        f"{m['cpu_count']} CPUs, {pg}, pool {prm['pool']}, {prm['concurrency']} tasks "
        f"x {prm['seconds']} s, {prm['seq_checks']} sequential checks",
        "",
        "| phase | grants | tracks | seq p50 µs | seq p99 µs | checks/s | p50 µs under load "
        "| p99 µs under load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ph in result["phases"]:
        if error_of(ph):
            lines.append(f"| {ph['phase']} | failed: {error_of(ph)} | — | — | — | — | — | — |")
    measured = [ph for ph in result["phases"] if not error_of(ph)]
    for ph in measured:
        s, q, ld = ph["stats"], ph["sequential"], ph["load"]
        lines.append(
            f"| {ph['phase']} | {s['grants']:,} | {s['tracks']:,} | {q['p50_us']:.0f} "
            f"| {q['p99_us']:.0f} | {ld['checks_per_s']:,.0f} | {ld['p50_us']:.0f} "
            f"| {ld['p99_us']:.0f} |"
        )
    rt = result.get("ratio")
    if rt:
        lines.append(
            f"| ratio {rt['of']} | {rt['grants']:.1f}x | {rt['tracks']:.1f}x | {rt['seq_p50']:.2f}x "
            f"| {rt['seq_p99']:.2f}x | {rt['checks_per_s']:.2f}x | {rt['load_p50']:.2f}x "
            f"| {rt['load_p99']:.2f}x |"
        )
    lines += [
        "",
        "Sequential p50 / p99 µs by request kind, and decisions",
        "",
        "| phase | own purchase | hot track (Zipf) | uniform track | reasons |",
        "|---|---:|---:|---:|---|",
    ]
    for ph in measured:
        k = ph["sequential"]["by_kind"]
        cells = [
            f"{k[x]['p50_us']:.0f} / {k[x]['p99_us']:.0f}" if x in k else "-"
            for x in ("owned", "hot", "uniform")
        ]
        reasons = ", ".join(f"{r} {n}" for r, n in ph["sequential"]["reasons"].items())
        lines.append(f"| {ph['phase']} | {' | '.join(cells)} | {reasons} |")
    lines += [
        "",
        "EXPLAIN (ANALYZE, BUFFERS) of the check SQL: shared buffers hit+read (execution ms; "
        "planning ms)",
        "",
        "| phase | probe | grants on the track | auto (what the pool uses) | custom plan "
        "| generic plan |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for ph in measured:
        for probe, ex in ph["explain"].items():
            cells = [
                f"{ex[mode]['shared_total']} ({ex[mode]['execution_ms']:.3f}; "
                f"{ex[mode]['planning_ms']:.3f})"
                for mode in ("auto", "force_custom_plan", "force_generic_plan")
            ]
            lines.append(
                f"| {ph['phase']} | {probe} | {ex['grants_on_resource']:,} | {' | '.join(cells)} |"
            )
        rv = ph["explain_resource_view_hot_track"]
        cells = [
            f"{rv[mode]['shared_total']} ({rv[mode]['execution_ms']:.3f}; "
            f"{rv[mode]['planning_ms']:.3f})"
            for mode in ("auto", "force_custom_plan", "force_generic_plan")
        ]
        lines.append(
            f"| {ph['phase']} | load_resource_view, hot track | "
            f"{ph['explain']['hot_track']['grants_on_resource']:,} | {' | '.join(cells)} |"
        )
    lines.append("")
    for ph in measured:
        pp, cp = ph["pool_plans"], ph["copy"]
        lines.append(
            f"- {ph['phase']}: pool's prepared check statements used {pp['generic_plans']} generic "
            f"and {pp['custom_plans']} custom plans; COPY {cp['purchases']:,} purchases in "
            f"{cp['copy_seconds']} s ({cp['rows_per_second']:,} rows/s), index rebuild "
            f"{cp['index_rebuild_seconds']} s, VACUUM ANALYZE "
            f"{cp['vacuum_analyze_seconds']} s; grants table {ph['stats']['grants_bytes'] / 2**20:.0f} MiB;"
            f" load average before measuring {ph['loadavg_before'][0]}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("ENTITLEMENTS_BENCH_DATABASE_URL", DEFAULT_DSN),
        help="a Postgres server to create the benchmark database on",
    )
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--grants", type=int, default=1_000_000, help="grants in the last phase")
    parser.add_argument("--phase1-grants", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="load duration per phase")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--pool", type=int, default=10, help="Postgres pool size")
    parser.add_argument("--seq-checks", type=int, default=5000, help="sequential checks per phase")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of load before measuring"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/checks.json"))
    args = parser.parse_args(argv)
    loop_factory = None
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            args.loop = "asyncio"
        else:
            loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(run(args))
    print(table(result))
    print(f"\n(runtime {result['runtime_s']} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return report_failures({ph["phase"]: ph for ph in result["phases"]})


if __name__ == "__main__":
    raise SystemExit(main())
