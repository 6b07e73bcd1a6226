"""The SDK's cost per request: warm, cold, and what coalescing saves. One run.

    python benchmarks/bench_sdk.py [--dsn DSN] [--out benchmarks/results/sdk.json] [--quick | --smoke]

What it does:

1. Creates (dropping it first if present) the database ``entitlements_bench_sdk``
   on the server of ``--dsn`` (default ``$ENTITLEMENTS_BENCH_DATABASE_URL``, else
   ``postgresql://postgres@127.0.0.1:5432/postgres``) and starts the real service
   on it: ``uvicorn --factory entitlements.api.asgi:app`` in a subprocess on a
   free loopback port. Both are removed at the end.
2. Loads a label with a premium deal, a release and 1,000 tracks under it, and
   mints EdDSA access tokens with the service's own signing key.
3. Measures, in this process, through ``Entitlements`` (sync) and
   ``AsyncEntitlements`` talking HTTP to that service:

   - **warm** ``authorize``: token seen before, decision cached — p50/p99 and
     ops/s — next to one plain PyJWT ``jwt.decode`` of the same token (the floor
     for an SDK that verifies every request and caches nothing) and to our
     verifier's remembered-token lookup alone;
   - **cold** ``authorize``: a token never seen (full verification) and a
     question not cached (one ``POST /v1/check`` to the service); and a cache
     miss with a remembered token (the service round trip alone);
   - **coalescing**: 1,000 concurrent ``authorize`` calls for different tracks
     (asyncio tasks), with the default coalescing vs. ``max_batch=1`` (one
     request per check): HTTP requests sent and wall time.

It prints a markdown table and writes JSON with the machine's details to ``--out``.
A phase that fails (an assertion, an ``UnavailableError``…) is reported in both as
``{"error": …}`` and the other phases still run; ``--smoke`` makes a few calls per
phase, to check the script runs (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import cryptography
import httpx
import jwt

from entitlements.domain.model import grant_from_mapping, resource_from_mapping
from entitlements.keys.signing import SigningKey, mint
from entitlements.store.keys import PostgresKeyStore
from entitlements.store.postgres import PostgresStore
from entitlements_client import (
    AsyncEntitlements,
    Entitlements,
    TokenVerifier,
    service_issuer,
)

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "entitlements_bench_sdk"
ISSUER = "https://entitlements.bench"
AUDIENCE = "entitlements"
PREMIUM = "plan:premium"
TRACKS = 1000


@dataclass(frozen=True)
class Counts:
    """How many calls each phase makes."""

    warm: int = 100_000
    cold: int = 400
    pyjwt_floor: int = 2000
    burst: int = TRACKS


QUICK = Counts(warm=20_000, cold=100)
#: Checks that the script runs end to end; measures nothing worth keeping.
SMOKE = Counts(warm=500, cold=5, pyjwt_floor=100, burst=50)


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stats_us(samples: list[int]) -> dict[str, float]:
    samples.sort()
    return {
        "p50_us": round(statistics.median(samples) / 1000, 2),
        "p99_us": round(samples[max(0, int(len(samples) * 0.99) - 1)] / 1000, 2),
        "n": len(samples),
    }


def time_sync(op: Callable[[], object], n: int) -> dict[str, float]:
    """p50/p99 of ``n`` timed calls, and ops/s over a separate untimed-per-call run."""
    for _ in range(min(n, 500)):
        op()
    gc.collect()
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        op()
        samples.append(time.perf_counter_ns() - start)
    result = stats_us(samples)
    began = time.perf_counter()
    for _ in range(n):
        op()
    result["ops_per_s"] = round(n / (time.perf_counter() - began))
    return result


async def time_async(op: Callable[[], Awaitable[object]], n: int) -> dict[str, float]:
    for _ in range(min(n, 500)):
        await op()
    gc.collect()
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        await op()
        samples.append(time.perf_counter_ns() - start)
    result = stats_us(samples)
    began = time.perf_counter()
    for _ in range(n):
        await op()
    result["ops_per_s"] = round(n / (time.perf_counter() - began))
    return result


@contextlib.contextmanager
def service(dsn: str) -> Iterator[str]:
    """The real service under uvicorn in a subprocess; yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "ENTITLEMENTS_DATABASE_URL": dsn,
        "ENTITLEMENTS_ISSUER": ISSUER,
        "ENTITLEMENTS_AUDIENCE": AUDIENCE,
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "entitlements.api.asgi:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError("the service exited at start")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not become ready")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def prepare(dsn: str) -> tuple[SigningKey, list[str]]:
    """The catalogue, through the store (as an import would), and the signing key."""
    store = await PostgresStore.open(dsn, min_size=1, max_size=2)
    try:
        await store.put_resource(resource_from_mapping({"id": "label:bench"}))
        await store.put_resource(
            resource_from_mapping({"id": "release:bench", "parents": ["label:bench"]})
        )
        tracks = [f"track:B{i:05d}" for i in range(TRACKS)]
        for track in tracks:
            await store.put_resource(
                resource_from_mapping({"id": track, "parents": ["release:bench"]})
            )
        await store.put_grant(
            grant_from_mapping(
                {
                    "id": "deal-bench",
                    "subject": f"role:{PREMIUM}",
                    "resource": "label:bench",
                    "actions": ["stream"],
                    "territories": ["*"],
                    "attributes": {"quality": "lossless"},
                }
            )
        )
        key = await PostgresKeyStore(store.pool).ensure_active()
    finally:
        await store.close()
    return key, tracks


def token_for(key: SigningKey, sub: str, scopes: tuple[str, ...] = ()) -> str:
    token, _ = mint(
        key,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject=sub,
        ttl=3600,
        roles=[PREMIUM],
        scopes=scopes,
    )
    return token


def verifier(url: str) -> TokenVerifier:
    return TokenVerifier([service_issuer(url, issuer=ISSUER, audience=AUDIENCE)])


def failure(name: str, exc: Exception) -> dict[str, str]:
    """What a failed phase reports (and says on stderr) instead of crashing the run."""
    error = f"{type(exc).__name__}: {exc}"[:300]
    print(f"phase {name} failed: {error}", file=sys.stderr)
    return {"error": error}


def run_phase(out: dict[str, Any], name: str, measure: Callable[[], Any]) -> None:
    """Run one phase into ``out[name]``; a phase that fails is reported, the others run."""
    try:
        out[name] = measure()
    except Exception as exc:
        out[name] = failure(name, exc)


async def run_phase_async(
    out: dict[str, Any], name: str, measure: Callable[[], Awaitable[Any]]
) -> None:
    try:
        out[name] = await measure()
    except Exception as exc:
        out[name] = failure(name, exc)


def measure(url: str, key: SigningKey, tracks: list[str], counts: Counts) -> dict[str, Any]:
    service_token = token_for(key, "svc-bench", ("entitlements:check:any",))
    user = token_for(key, "alice")
    out: dict[str, Any] = {"token_bytes": len(user)}
    with Entitlements(url, verifier=verifier(url), service_token=service_token) as ent:
        try:
            assert ent.authorize(user, tracks[0], "stream", "GB").allowed
        except Exception as exc:
            for name in (
                "warm_sync",
                "verify_remembered",
                "pyjwt_decode",
                "cold_sync",
                "miss_sync",
            ):
                out[name] = failure(name, exc)
        else:
            measure_sync(out, ent, url, key, user, tracks, counts)
    out.update(asyncio.run(measure_async(url, service_token, user, tracks, counts)))
    return out


def measure_sync(
    out: dict[str, Any],
    ent: Entitlements,
    url: str,
    key: SigningKey,
    user: str,
    tracks: list[str],
    counts: Counts,
) -> None:
    track = tracks[0]
    n_warm, n_cold = counts.warm, counts.cold
    time.sleep(0.3)  # the change feed's first answer: the cache is now fresh for max_age

    def warm() -> dict[str, float]:
        result = time_sync(lambda: ent.authorize(user, track, "stream", "GB"), n_warm)
        stats = ent.stats()
        assert stats.requests == 1, stats  # every warm call was answered locally
        return result

    run_phase(out, "warm_sync", warm)
    run_phase(
        out, "verify_remembered", lambda: time_sync(lambda: ent.verifier.verify(user), n_warm)
    )

    def pyjwt() -> dict[str, float]:
        # PyJWT, the same token, with the service's public key
        jwks = httpx.get(url + "/.well-known/jwks.json").json()
        header = jwt.get_unverified_header(user)
        public = next(jwt.PyJWK(k) for k in jwks["keys"] if k["kid"] == header["kid"])

        def plain() -> object:
            return jwt.decode(
                user, public.key, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER
            )

        return time_sync(plain, max(counts.pyjwt_floor, n_warm // 10))

    run_phase(out, "pyjwt_decode", pyjwt)

    def cold() -> dict[str, float]:
        # a new token and an uncached question each time (minting excluded)
        samples: list[int] = []
        fresh = [token_for(key, f"user-{uuid.uuid4().hex[:8]}") for _ in range(n_cold)]
        for i, tok in enumerate(fresh):
            start = time.perf_counter_ns()
            ent.authorize(tok, tracks[1 + i % (len(tracks) - 1)], "stream", "DE")
            samples.append(time.perf_counter_ns() - start)
        return stats_us(samples)

    run_phase(out, "cold_sync", cold)

    def miss() -> dict[str, float]:
        samples: list[int] = []
        for i in range(n_cold):
            start = time.perf_counter_ns()
            ent.authorize(user, tracks[1 + i % (len(tracks) - 1)], "stream", "FR")
            samples.append(time.perf_counter_ns() - start)
        return stats_us(samples)

    run_phase(out, "miss_sync", miss)


async def measure_async(
    url: str, service_token: str, user: str, tracks: list[str], counts: Counts
) -> dict[str, Any]:
    out: dict[str, Any] = {}

    async def warm() -> dict[str, float]:
        async with AsyncEntitlements(
            url, verifier=verifier(url), service_token=service_token
        ) as ent:
            assert (await ent.authorize(user, tracks[0], "stream", "GB")).allowed
            await asyncio.sleep(0.3)
            return await time_async(
                lambda: ent.authorize(user, tracks[0], "stream", "GB"), counts.warm
            )

    await run_phase_async(out, "warm_async", warm)

    counted = {"checks": 0}

    async def count(request: httpx.Request) -> None:
        if request.url.path.startswith("/v1/check"):
            counted["checks"] += 1

    burst = tracks[: counts.burst]

    async def burst_phase(options: dict[str, Any]) -> dict[str, Any]:
        http = httpx.AsyncClient(
            event_hooks={"request": [count]},
            limits=httpx.Limits(max_connections=100),
            trust_env=False,
        )
        async with (
            http,
            AsyncEntitlements(
                url,
                verifier=verifier(url),
                service_token=service_token,
                http=http,
                timeout=30.0,
                follow_changes=False,
                **options,
            ) as ent,
        ):
            await ent.verify(user)
            walls = []
            for territory in ("US", "JP", "BR"):  # three rounds, each uncached
                counted["checks"] = 0
                start = time.perf_counter()
                results = await asyncio.gather(
                    *(ent.authorize(user, t, "stream", territory) for t in burst),
                    return_exceptions=True,
                )
                walls.append(time.perf_counter() - start)
                failed = [r for r in results if isinstance(r, BaseException)]
                if failed:
                    raise RuntimeError(
                        f"{len(failed)} of {len(burst)} calls failed in {walls[-1]:.1f} s,"
                        f" e.g. {failed[0]!r}"
                    )
                assert all(r.allowed for r in results if not isinstance(r, BaseException))
            return {
                "calls": len(burst),
                "http_requests": counted["checks"],
                "wall_ms": round(statistics.median(walls) * 1000, 1),
            }

    for label, options in (("coalesced", {}), ("one_request_per_check", {"max_batch": 1})):
        await run_phase_async(out, f"burst_{label}", functools.partial(burst_phase, options))
    return out


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "pyjwt": jwt.__version__,
        "cryptography": cryptography.__version__,
        "httpx": httpx.__version__,
    }


def table(result: dict[str, Any]) -> str:
    r = result["results"]
    m = result["machine"]

    def row(name: str, key: str, note: str) -> str:
        v = r[key]
        if "error" in v:
            return f"| {name} | — | — | — | failed: {v['error']} |"
        ops = f"{int(v['ops_per_s']):,}" if "ops_per_s" in v else "—"
        return f"| {name} | {v['p50_us']:,} | {v['p99_us']:,} | {ops} | {note} |"

    def burst_row(name: str, key: str) -> str:
        v = r[key]
        if "error" in v:
            return f"| {name} | failed: {v['error']} | — |"
        return f"| {name} | {v['http_requests']} | {v['wall_ms']} |"

    calls = next((v["calls"] for k, v in r.items() if k.startswith("burst_") and "calls" in v), 0)
    return "\n".join(
        [
            f"SDK per-request cost — Python {m['python']}, {m['cpu_count']} CPUs, "
            f"EdDSA token of {r['token_bytes']} bytes, service on loopback (uvicorn, 1 worker)",
            "",
            "| path | p50 µs | p99 µs | ops/s | what it is |",
            "|---|---:|---:|---:|---|",
            row("warm `authorize` (sync)", "warm_sync", "token seen before, decision cached"),
            row("warm `authorize` (async)", "warm_async", "same, `await`ed"),
            row("remembered-token lookup", "verify_remembered", "our verifier alone, token seen"),
            row("PyJWT `jwt.decode`", "pyjwt_decode", "the floor without caching"),
            row("cold `authorize` (sync)", "cold_sync", "new token + `POST /v1/check`"),
            row("cache miss (sync)", "miss_sync", "token seen + `POST /v1/check`"),
            "",
            f"| {calls:,} concurrent `authorize`, different tracks (asyncio) | HTTP requests"
            " | wall ms |",
            "|---|---:|---:|",
            burst_row("coalesced (default: 2 ms window, batches ≤ 1,000)", "burst_coalesced"),
            burst_row("one request per check (`max_batch=1`)", "burst_one_request_per_check"),
        ]
    )


async def create_database(dsn: str) -> str:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{BENCH_DB}"')
    finally:
        await admin.close()
    db = with_database(dsn, BENCH_DB)
    store = await PostgresStore.open(db, min_size=1, max_size=1)  # applies schema.sql
    await store.close()
    return db


async def drop_database(dsn: str) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn", default=os.environ.get("ENTITLEMENTS_BENCH_DATABASE_URL", DEFAULT_DSN)
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "sdk.json",
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument(
        "--smoke", action="store_true", help="a few calls per phase: check that it runs"
    )
    args = parser.parse_args(argv)

    db = asyncio.run(create_database(args.dsn))
    try:
        with service(db) as url:
            key, tracks = asyncio.run(prepare(db))
            counts = SMOKE if args.smoke else QUICK if args.quick else Counts()
            results = measure(url, key, tracks, counts)
    finally:
        asyncio.run(drop_database(args.dsn))
    result = {
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    failed = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    if failed:
        print(f"{len(failed)} phase(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
