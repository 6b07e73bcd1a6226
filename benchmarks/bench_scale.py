"""Past one machine (issue 16): connections per host, replica routing, PgBouncer, one run.

    python benchmarks/bench_scale.py [--dsn ADMIN_DSN] [--tracks 20000] [--seconds 5]
        [--workers 4] [--concurrency 32] [--smoke] [--out benchmarks/results/scale.json]

What it does:

1. Creates the database ``entitlements_bench_scale`` (dropped first if present, and
   at the end unless ``--keep``) on the server of ``--dsn`` (default
   ``$ENTITLEMENTS_BENCH_DATABASE_URL``, else ``postgresql://postgres@127.0.0.1:5432/postgres``)
   with ``--tracks`` tracks under 1 % as many releases, each release granted to a
   premium plan, and a real PgBouncer (the OS package, transaction pooling,
   ``default_pool_size=20``) in front of it (``tests/pgbouncer_server.py``).
2. **Postgres connections per host** with ``entitlements serve --workers N``
   (default 4), each configuration after a burst of concurrent uncached checks (so
   the pools have grown as under load), counted by Postgres itself
   (``pg_stat_activity`` rows of the database, by ``application_name``):
   (a) *before*: every worker follows the change feed itself (``ENTITLEMENTS_FEED_SHARE=false``),
   (b) *after*: one follower per host (the default),
   (c) *after, pooled*: (b) with ``ENTITLEMENTS_DATABASE_URL`` pointing at PgBouncer
       and LISTEN on ``ENTITLEMENTS_DATABASE_LISTEN_URL``: Postgres sees PgBouncer's
       server connections plus one LISTEN.
3. **Per-check cost of replica routing**, in process: ``ReplicaRouter.pick`` alone
   (the decision every read makes), and an uncached check read through the router
   vs straight from the primary's store, back to back, one at a time. The "replica"
   is the primary itself under another pool (the machine has one Postgres): this
   measures the router's overhead, not what a replica adds. A 2-core box cannot
   show replica throughput gains (docs/scaling.md: a calculation).
4. **Cold-check throughput, PgBouncer vs direct**: ``--concurrency`` tasks in one
   process run uncached checks (``CheckService.check`` with the cache off, each a
   different track: one Postgres read each) for ``--seconds``, once through a pool
   of 10 straight to Postgres and once through a pool of 10 to PgBouncer.

``--smoke`` shrinks everything (500 tracks, 1 s phases, a short burst; still
``--workers`` workers) to prove the script runs, and writes
``benchmarks/results/scale-smoke.json`` unless ``--out`` says otherwise. It prints
a markdown table and writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
from bench_http import Server, free_port  # noqa: E402 - the server helpers
from pgbouncer_server import PgBouncer  # noqa: E402 - the real PgBouncer of the tests

from entitlements.service.checks import CheckRequest, CheckService, StoreGrantSource  # noqa: E402
from entitlements.store.postgres import PostgresStore  # noqa: E402
from entitlements.store.replicas import ReplicaRouter  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "entitlements_bench_scale"
PREMIUM = "role:plan:premium"
DEFAULT_OUT = Path("benchmarks/results/scale.json")
SMOKE_OUT = Path("benchmarks/results/scale-smoke.json")


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def create_database(admin_dsn: str, tracks: int) -> str:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{BENCH_DB}"')
    finally:
        await admin.close()
    dsn = with_database(admin_dsn, BENCH_DB)
    store = await PostgresStore.open(dsn, min_size=1, max_size=2)
    releases = max(1, tracks // 100)
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO resources (id, type, revision)
               SELECT 'release:r' || i, 'release', 1 FROM generate_series(1, $1) i
               UNION ALL
               SELECT 'track:t' || i, 'track', 1 FROM generate_series(1, $2) i""",
            releases,
            tracks,
        )
        await conn.execute(
            """INSERT INTO resource_parents (child, parent)
               SELECT 'track:t' || i, 'release:r' || (1 + i % $1) FROM generate_series(1, $2) i""",
            releases,
            tracks,
        )
        await conn.execute(
            """INSERT INTO grants (id, subject, resource, actions, territories, revision)
               SELECT 'deal' || i, $2, 'release:r' || i, '{stream}', '{*}', 1
               FROM generate_series(1, $1) i""",
            releases,
            PREMIUM,
        )
    async with store.pool.acquire() as conn:
        await conn.execute("VACUUM (ANALYZE) grants, resources, resource_parents")
    await store.close()
    return dsn


async def drop_database(admin_dsn: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    finally:
        await admin.close()


# --- 2. connections per host ------------------------------------------------------------


async def backends(admin_dsn: str) -> dict[str, int]:
    """Client backends on the benchmark database, by application_name."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        rows = await conn.fetch(
            """SELECT coalesce(nullif(application_name, ''), '(none)') AS app, count(*) AS n
               FROM pg_stat_activity
               WHERE datname = $1 AND backend_type = 'client backend'
                 AND pid <> pg_backend_pid()
               GROUP BY 1 ORDER BY 1""",
            BENCH_DB,
        )
        return {r["app"]: int(r["n"]) for r in rows}
    finally:
        await conn.close()


def burst(base: str, token: str, tracks: int, requests: int, concurrency: int) -> None:
    """Concurrent checks of distinct tracks (uncached server): every worker's pool grows."""

    async def go() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            sem = asyncio.Semaphore(concurrency)

            async def one(i: int) -> None:
                async with sem:
                    r = await client.post(
                        "/v1/check",
                        json={"resource": f"track:t{1 + i % tracks}", "action": "stream",
                              "territory": "GB"},
                        headers={"Authorization": f"Bearer {token}"},
                    )  # fmt: skip
                    r.raise_for_status()

            await asyncio.gather(*(one(i) for i in range(requests)))

    asyncio.run(go())


def mint(env: dict[str, str]) -> str:
    import subprocess

    from bench_http import entitlements_cli

    out = subprocess.run(
        [*entitlements_cli(), "token", "mint", "--sub", "bench", "--role", "plan:premium"],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def connections_phase(
    admin_dsn: str, dsn: str, bouncer: PgBouncer, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    base_env = {
        **os.environ,
        "ENTITLEMENTS_DATABASE_URL": dsn,
        "ENTITLEMENTS_CACHE_SIZE": "0",
        "ENTITLEMENTS_LOG_LEVEL": "warning",
    }
    base_env.pop("ENTITLEMENTS_FEED_SOCKET", None)
    token = mint(base_env)
    configs = {
        "before: a follower per worker": {"ENTITLEMENTS_FEED_SHARE": "false"},
        "after: one follower per host": {},
        "after, through PgBouncer": {
            "ENTITLEMENTS_DATABASE_URL": bouncer.dsn_for(dsn),
            "ENTITLEMENTS_DATABASE_POOLER": "pgbouncer",
            "ENTITLEMENTS_DATABASE_LISTEN_URL": dsn,
        },
    }
    out: dict[str, Any] = {}
    for name, extra in configs.items():
        env = {**base_env, **extra}
        server = Server(env, free_port(), args.workers, work / "server.log")
        try:
            server.start()
            burst(server.base, token, args.tracks, args.burst, args.concurrency)
            time.sleep(1.5)  # LISTEN connections settle; a new leader takes over if needed
            counts = asyncio.run(backends(admin_dsn))
        finally:
            server.stop()
        out[name] = {
            "workers": args.workers,
            "by_application": counts,
            "postgres_backends": sum(counts.values()),
            "listen": counts.get("entitlements-listen", 0),
        }
    return out


# --- 3. replica routing -----------------------------------------------------------------


async def routing_phase(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    store = await PostgresStore.open(dsn, min_size=2, max_size=4, apply_schema=False)
    router = ReplicaRouter(store, [dsn], staleness=5.0, probe_interval=0.5, pool_max_size=4)
    await router.start()
    try:
        assert router.pick(None) is not None, "the stand-in replica is not in use"
        n = 200_000 if not args.smoke else 20_000
        t0 = time.perf_counter()
        for _ in range(n):
            router.pick(None)
        pick_us = (time.perf_counter() - t0) / n * 1e6
        reads = 2000 if not args.smoke else 200
        subjects = [PREMIUM, "user:bench"]
        timings: dict[str, list[float]] = {"primary": [], "router": []}
        for i in range(reads):
            resource = f"track:t{1 + i % args.tracks}"
            for name, reads_from in (("primary", store), ("router", router)):
                t = time.perf_counter()
                await reads_from.load_check(resource, subjects)
                timings[name].append(time.perf_counter() - t)
        med = {k: sorted(v)[len(v) // 2] * 1e6 for k, v in timings.items()}
        return {
            "pick_us": round(pick_us, 3),
            "read_primary_p50_us": round(med["primary"], 1),
            "read_router_p50_us": round(med["router"], 1),
            "routing_cost_us": round(med["router"] - med["primary"], 1),
            "reads_each": reads,
            "replica_reads": router.replicas[0].reads_served,
        }
    finally:
        await router.close()
        await store.close()


# --- 4. cold checks: PgBouncer vs direct ---------------------------------------------------


async def cold_phase(
    dsn: str, pooled: bool, args: argparse.Namespace, offset: int
) -> dict[str, Any]:
    store = await PostgresStore.open(
        dsn, min_size=10, max_size=10, apply_schema=False, pooled=pooled
    )
    checks = CheckService(StoreGrantSource(store), store)
    done = 0
    stop = time.perf_counter() + args.seconds
    latencies: list[float] = []

    async def worker(k: int) -> None:
        nonlocal done
        i = offset + k
        while time.perf_counter() < stop:
            resource = f"track:t{1 + i % args.tracks}"
            t = time.perf_counter()
            decision = await checks.check(
                CheckRequest("bench", ("plan:premium",), resource, "stream", "GB")
            )
            latencies.append(time.perf_counter() - t)
            assert decision.allowed
            done += 1
            i += args.concurrency

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(args.concurrency)))
    elapsed = time.perf_counter() - t0
    await store.close()
    latencies.sort()
    return {
        "checks_per_s": round(done / elapsed),
        "p50_ms": round(latencies[len(latencies) // 2] * 1e3, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1e3, 2),
        "checks": done,
    }


# --- run -------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    dsn = asyncio.run(create_database(args.dsn, args.tracks))
    bouncer = PgBouncer(args.dsn, {"default_pool_size": "20"})
    asyncio.run(bouncer.start())
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        conns = connections_phase(args.dsn, dsn, bouncer, args, work)
        routing = asyncio.run(routing_phase(dsn, args))
        direct = asyncio.run(cold_phase(dsn, False, args, 0))
        pooled = asyncio.run(cold_phase(bouncer.dsn_for(dsn), True, args, 1))
    finally:
        asyncio.run(bouncer.close())
        if not args.keep:
            asyncio.run(drop_database(args.dsn))
    return {
        "benchmark": "scale",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "pgbouncer": ".".join(map(str, bouncer.version)),
        },
        "settings": {
            "tracks": args.tracks,
            "workers": args.workers,
            "seconds": args.seconds,
            "concurrency": args.concurrency,
            "burst": args.burst,
        },
        "connections_per_host": conns,
        "replica_routing": routing,
        "cold_checks": {"direct": direct, "pgbouncer": pooled},
        "elapsed_s": round(time.time() - started, 1),
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"## bench_scale ({'smoke' if result['smoke'] else 'full'},"
        f" {result['machine']['cpus']} CPUs, PgBouncer {result['machine']['pgbouncer']})",
        "",
        "| Postgres connections per host | workers | backends | of which LISTEN |",
        "|---|---:|---:|---:|",
    ]
    for name, c in result["connections_per_host"].items():
        lines.append(f"| {name} | {c['workers']} | {c['postgres_backends']} | {c['listen']} |")
    r = result["replica_routing"]
    lines += [
        "",
        "| replica routing | µs |",
        "|---|---:|",
        f"| `pick()` per read | {r['pick_us']} |",
        f"| uncached read, primary store (p50) | {r['read_primary_p50_us']} |",
        f"| uncached read, through the router (p50) | {r['read_router_p50_us']} |",
        f"| routing cost per check | {r['routing_cost_us']} |",
        "",
        "| cold checks (cache off) | checks/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
    ]
    for name, c in result["cold_checks"].items():
        lines.append(f"| {name} | {c['checks_per_s']} | {c['p50_ms']} | {c['p99_ms']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("ENTITLEMENTS_BENCH_DATABASE_URL", DEFAULT_DSN),
        help="a Postgres server to create the benchmark database on (admin DSN)",
    )
    parser.add_argument("--tracks", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per cold-check phase")
    parser.add_argument("--workers", type=int, default=4, help="uvicorn workers")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--burst", type=int, default=2000, help="checks before counting")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: prove it runs")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.smoke:
        args.tracks, args.seconds, args.burst = 500, 1.0, 200
        args.concurrency = min(args.concurrency, 8)
        if args.out == DEFAULT_OUT:
            args.out = SMOKE_OUT  # never mistaken for a full run's figures
    result = run(args)
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
