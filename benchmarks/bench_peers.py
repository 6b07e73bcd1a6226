"""Side by side with the peers: Cerbos, PyCasbin and Cedar on the same rights question, one run.

    python benchmarks/bench_peers.py [--dsn ADMIN_DSN] [--redis auto|none|URL]
        [--tracks 100000] [--grants 1000000] [--seconds 10] [--warmup 3] [--rounds 3]
        [--threads 2] [--connections 64] [--workers 2] [--inproc-seconds 5]
        [--questions 64] [--casbin-sizes 1000,100000,1000000]
        [--cerbos-version 0.55.0] [--cache-dir DIR] [--seed 1] [--keep]
        [--out benchmarks/results/peers.json] [--chart benchmarks/results/peers.png]

Needs the optional extra: ``pip install -e ./client -e ".[bench]"`` (pycasbin,
cedarpy, matplotlib); Postgres (as ``bench_http.py``); ``wrk`` (installed with
apt-get if missing); ``npm`` (node 20+) the first time, to fetch Cerbos.

**The question**, for every engine: may a premium user (``u42``, role premium)
stream a track that is licensed in the territory they are in (GB)? Each engine
gets the rules in its own idiom:

- entitlements: the catalogue of ``bench_checks.py`` (labels, releases, tracks;
  the label's deal grants ``role:plan:premium`` ``stream`` in its territories)
  and an access token carrying the role; ``POST /v1/check``
  ``{"resource": <track>, "action": "stream", "territory": "GB"}``. The
  service finds the track's releases and labels and their grants itself.
- Cerbos: a resource policy for kind ``track``: ``stream`` is allowed to role
  ``premium`` when ``P.attr.territory in R.attr.territories``; the caller sends
  the principal (id, roles, ``territory``) and the track's ``territories`` in
  every request (Cerbos holds no data).
- PyCasbin: RBAC with domains, domain = territory: ``p, premium, GB, <track>,
  stream`` per licensed territory of each track; ``g, u42, premium, GB``; the
  matcher ``g(r.sub, p.sub, r.dom) && r.dom == p.dom && r.obj == p.obj &&
  r.act == p.act``; ``FastEnforcer`` with ``cache_key_order=[2, 1]`` (the policy
  indexed by track, then territory).
- Cedar: ``permit(principal in Role::"premium", action == Action::"stream",
  resource is Track) when { resource.territories.contains(context.territory) };``
  with the user (parent ``Role::"premium"``), the role and the track (attribute
  ``territories``) as entities and ``{"territory": "GB"}`` as context.

Tracks of the peers are generated (seeded): each licensed in 3 to 15 of 40
territories; the question tracks always include GB. Before any timing, every
engine must answer allow to every question and deny two variations (a territory
the track is not licensed in; a free-tier user): the rules are equivalent, or
the phase reports an error.

What it does:

1. HTTP, on the same machine with the same load generator: ``wrk`` with
   ``--threads`` threads and ``--connections`` connections (64) for
   ``--seconds``, after ``--warmup`` seconds of the same load:
   (a) warm ``POST /v1/check`` on ``entitlements serve --workers 2`` (the
       database ``entitlements_bench_peers`` created on the server of ``--dsn``,
       loaded as ``bench_http.py`` loads it, dropped at the end unless
       ``--keep``; Redis L2 when one answers, as there): the same token, random
       tracks from the 1,000 hottest that the service grants (the warm-up puts
       them in both workers' caches);
   (b) ``POST /api/check/resources`` on Cerbos (the PDP binary of the npm
       package ``@cerbos/cerbos-<os>-<arch>`` at ``--cerbos-version``, installed
       with ``npm install --prefix`` under ``--cache-dir`` if missing; disk
       policy store, telemetry and audit off, loopback ports, ``GOMAXPROCS`` =
       ``--workers``, i.e. two cores like our two workers): one request per
       question track.
   (a) and (b) alternate for ``--rounds`` rounds with both servers up (the one
   not loaded idles), so a burst of someone else's work hits both alike; each
   reports its best round by req/s, all rounds are in the JSON. wrk's latencies
   are per request, closed loop (p50/p99 of request sent to response read).
2. In-process decisions, one thread, timed one call at a time with
   ``time.perf_counter_ns()`` around each call (so p50/p99 are per call; the
   row "timer + loop" is what the same loop costs around a call that does
   nothing, included in every row), ``--inproc-seconds`` per row after a
   warm-up of a tenth of that, cycling over ``--questions`` allowed questions
   (distinct tracks), the garbage collector on (as in production):
   - the SDK's warm ``Entitlements.authorize`` against the server of 1. (token
     seen, decision cached: no request leaves the process; the JSON records how
     many the client sent while timed), with a service token of scope
     ``entitlements:check:any`` so that it follows the change feed (as
     ``bench_sdk.py`` does; without one its entries live only 5 s);
   - PyJWT ``jwt.decode`` of the same EdDSA token with the service's key (what
     verifying the token on every request costs, before any decision);
   - PyCasbin ``FastEnforcer.enforce`` with a policy of each of
     ``--casbin-sizes`` ``p`` lines (generated to a CSV file and loaded with
     Casbin's file adapter: the load time and memory are in the JSON) plus
     1,001 ``g`` lines (users with a role in a territory);
   - ``cedarpy.is_authorized`` with the policy text and the three entities as a
     list (the plain call: Cedar parses both on every call), and with a
     pre-parsed ``PolicySet`` and one ``Entities`` handle holding every question
     track (parsed once).

Every phase that fails (a server that does not start, a missing package, a
wrong answer) is reported with its error in the table and the JSON; the others
still run. Before each measured phase it waits (at most 15 s, 60 s per run)
for the machine to be idle, as ``bench_http.py`` does, and records how busy it
was.

It prints markdown tables, writes JSON (machine, versions, the rules each
engine got, every figure, wrk's raw numbers) to ``--out`` and a chart (PNG,
matplotlib's Agg backend) to ``--chart``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import importlib
import importlib.metadata
import itertools
import json
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import httpx
import jwt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_checks as bc  # the catalogue and its COPY loaders
import bench_http as bh  # wrk, its Lua scripts, the server wrapper, the quiet-machine wait

from entitlements.store.postgres import PostgresStore
from entitlements_client import Entitlements, TokenVerifier, service_issuer

BENCH_DB = "entitlements_bench_peers"
HOT_SET = 1000
USER, ROLE, HOME, ACTION = "u42", "premium", "GB", "stream"
FREE_USER = "u43"
TERRITORIES = (
    "AR", "AT", "AU", "BE", "BR", "CA", "CH", "CL", "CO", "CZ", "DE", "DK", "ES", "FI",
    "FR", "GB", "GR", "HU", "ID", "IE", "IL", "IN", "IT", "JP", "KR", "MX", "MY", "NL",
    "NO", "NZ", "PH", "PL", "PT", "RO", "SE", "SG", "TH", "TR", "US", "ZA",
)  # fmt: skip
CASBIN_USERS = 1000
CHECKED = "every question allowed; an unlicensed territory and a free-tier user denied"
INSTALL_HINT = 'pip install -e ./client -e ".[bench]"'

CERBOS_POLICY = f"""\
apiVersion: api.cerbos.dev/v1
resourcePolicy:
  version: default
  resource: track
  rules:
    - actions: ["{ACTION}"]
      effect: EFFECT_ALLOW
      roles: ["{ROLE}"]
      condition:
        match:
          expr: P.attr.territory in R.attr.territories
"""

CASBIN_MODEL = """\
[request_definition]
r = sub, dom, obj, act

[policy_definition]
p = sub, dom, obj, act

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub, r.dom) && r.dom == p.dom && r.obj == p.obj && r.act == p.act
"""

CEDAR_POLICY = f"""\
permit(principal in Role::"{ROLE}", action == Action::"{ACTION}", resource is Track)
when {{ resource.territories.contains(context.territory) }};
"""

LUA_CERBOS = r"""
-- args: a file of request bodies, one JSON document per line
local bodies = {}
local headers = {}
local counter = 0

setup = function(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

init = function(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  headers["Content-Type"] = "application/json"
  math.randomseed(os.time() * 1000 + (tid or 1))
end

request = function()
  return wrk.format("POST", "/api/check/resources", headers, bodies[math.random(#bodies)])
end
"""

Track = tuple[str, list[str]]  # (id, territories it is licensed in)


def log(start: float, message: str) -> None:
    print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:3000]


def brief(error: str, limit: int = 160) -> str:
    """An error's first line, cut to ``limit`` characters (for tables and causes)."""
    line = error.strip().splitlines()[0] if error.strip() else "?"
    return line if len(line) <= limit else line[: limit - 1] + "…"


def attempt(
    results: dict[str, Any], key: str, fn: Callable[[], dict[str, Any]], start: float
) -> dict[str, Any] | None:
    """Run one phase; a failure is recorded under ``key`` as ``{"error": ...}``, not raised."""
    try:
        out = fn()
    except (Exception, SystemExit) as exc:  # a phase that errs is reported, never fatal
        out = {"error": error_text(exc)}
        if not str(exc).startswith("not run"):
            log(start, f"{key}: ERROR {brief(out['error'], 300)}")
    results[key] = out
    return None if "error" in out else out


def optional_module(name: str, missing: dict[str, str]) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing[name] = f"{error_text(exc)} (install the benchmark extra: {INSTALL_HINT})"
        return None


def need(module: ModuleType | None, name: str, missing: dict[str, str]) -> ModuleType:
    if module is None:
        raise RuntimeError(missing[name])
    return module


# --- the generated tracks of the peers ----------------------------------------------


def peer_tracks(rnd: random.Random, first: int, count: int, home: bool) -> Iterator[Track]:
    """``count`` tracks, each licensed in 3..15 territories (always HOME when ``home``)."""
    for i in range(first, first + count):
        territories = rnd.sample(TERRITORIES, rnd.randint(3, 15))
        if home and HOME not in territories:
            territories[0] = HOME
        yield f"P{i:07d}", sorted(territories)


def question_tracks(n: int, seed: int) -> list[Track]:
    return list(peer_tracks(random.Random(seed), 0, n, home=True))


def unlicensed(track: Track) -> str:
    """A territory the track is not licensed in."""
    return next(t for t in TERRITORIES if t not in track[1])


# --- statistics of per-call timings -------------------------------------------------


def stats_ns(samples: list[int]) -> dict[str, Any]:
    samples.sort()
    n = len(samples)

    def pct(p: float) -> float:
        return round(samples[min(n - 1, int(n * p))] / 1000, 2)

    total = sum(samples)
    return {
        "n": n,
        "p50_us": pct(0.50),
        "p90_us": pct(0.90),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "max_us": round(samples[-1] / 1000, 1),
        "mean_us": round(total / n / 1000, 2),
        "calls_per_s": round(n / (total / 1e9)) if total else None,
    }


def time_calls(
    op: Callable[[], object],
    seconds: float,
    counter: Callable[[], int] | None = None,
    max_n: int = 3_000_000,
) -> dict[str, Any]:
    """Per-call timings of ``op`` for ``seconds`` (after a tenth of that as warm-up).

    ``counter`` (e.g. the SDK's request count) is read just before and after the
    timed calls: how much of it happened while they were timed.
    """
    quiet = bh.wait_quiet()
    perf = time.perf_counter_ns
    warm_end = perf() + int(seconds * 1e8)
    while perf() < warm_end:
        op()
    gc.collect()
    counted = counter() if counter else 0
    samples: list[int] = []
    append = samples.append
    end = perf() + int(seconds * 1e9)
    t1 = 0
    while t1 < end and len(samples) < max_n:
        t0 = perf()
        op()
        t1 = perf()
        append(t1 - t0)
    out = {**stats_ns(samples), "machine_before": quiet}
    if counter:
        out["counted_during_timing"] = counter() - counted
    return out


def cycling(calls: list[tuple[Any, ...]], fn: Callable[..., object]) -> Callable[[], object]:
    nxt = itertools.cycle(calls).__next__
    return lambda: fn(*nxt())


def expect(name: str, got: bool, want: bool, what: str) -> None:
    if got is not want:
        raise AssertionError(f"{name} answered {got} for {what}; the equivalent rules say {want}")


# --- Cerbos -------------------------------------------------------------------------


def cerbos_package() -> str:
    system = {"Linux": "linux", "Darwin": "darwin"}.get(platform.system())
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    if system is None or arch is None:
        raise RuntimeError(f"no Cerbos npm package for {platform.system()} {platform.machine()}")
    return f"@cerbos/cerbos-{system}-{arch}"


def ensure_cerbos(cache_dir: Path, version: str) -> dict[str, Any]:
    """The Cerbos binary from npm under ``cache_dir`` (installed if missing)."""
    package = cerbos_package()
    meta = cache_dir / "node_modules" / package / "package.json"

    def installed() -> dict[str, Any] | None:
        with contextlib.suppress(OSError, ValueError):
            info: dict[str, Any] = json.loads(meta.read_text())
            if info.get("version") == version:
                return info
        return None

    info = installed()
    fetched = info is None
    seconds = 0.0
    if info is None:
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(f"npm is needed to fetch {package}@{version} (node 20+)")
        cache_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        cmd = [npm, "install", "--prefix", str(cache_dir), "--no-audit", "--no-fund",
               "--ignore-scripts", f"{package}@{version}"]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        seconds = round(time.perf_counter() - t0, 1)
        info = installed()
        if out.returncode != 0 or info is None:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-2000:]}")
    binary = meta.parent / str(info.get("main", "")).removeprefix("./")
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise RuntimeError(f"{package}@{version} has no executable at {binary}")
    v = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    return {
        "package": f"{package}@{version}",
        "binary": str(binary),
        "version": (v.stdout.splitlines() or ["?"])[0],
        "fetched_now": fetched,
        "npm_install_s": seconds,
    }


class Cerbos:
    """``cerbos server`` with a disk store of one policy, on loopback, in its own process group."""

    def __init__(self, binary: str, work: Path, procs: int) -> None:
        self.binary = binary
        self.work = work
        self.procs = procs
        self.port = bh.free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.logfile = work / "cerbos.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> float:
        policies = self.work / "policies"
        policies.mkdir(parents=True, exist_ok=True)
        (policies / "track.yaml").write_text(CERBOS_POLICY)
        config = self.work / "cerbos.yaml"
        config.write_text(
            "server:\n"
            f'  httpListenAddr: "127.0.0.1:{self.port}"\n'
            f'  grpcListenAddr: "127.0.0.1:{bh.free_port()}"\n'
            "storage:\n"
            "  driver: disk\n"
            "  disk:\n"
            f"    directory: {json.dumps(str(policies))}\n"
            "    watchForChanges: false\n"
            "audit:\n"
            "  enabled: false\n"
            "telemetry:\n"
            "  disabled: true\n"
        )
        compiled = subprocess.run(
            [self.binary, "compile", "--skip-tests", str(policies)],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        if compiled.returncode != 0:
            raise RuntimeError(
                f"cerbos compile: {compiled.stdout[-2000:]}{compiled.stderr[-2000:]}"
            )
        env = {**os.environ, "CERBOS_NO_TELEMETRY": "1", "GOMAXPROCS": str(self.procs)}
        t0 = time.perf_counter()
        with open(self.logfile, "ab") as log_file:
            self.proc = subprocess.Popen(
                [self.binary, "server", f"--config={config}", "--log-level=warn",
                 "--debug-listen-addr=127.0.0.1:0"],
                env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cerbos exited: {self.logfile.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = httpx.get(f"{self.base}/_cerbos/health", timeout=2)
                if r.status_code == 200 and r.json().get("status") == "SERVING":
                    return round(time.perf_counter() - t0, 2)
            if time.monotonic() > deadline:
                raise RuntimeError(f"cerbos not healthy: {self.logfile.read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group we created
            self.proc.wait(timeout=10)


def cerbos_body(track: Track, territory: str = HOME, role: str = ROLE) -> dict[str, Any]:
    user = USER if role == ROLE else FREE_USER
    return {
        "requestId": "bench",
        "principal": {"id": user, "roles": [role], "attr": {"territory": territory}},
        "resources": [
            {
                "actions": [ACTION],
                "resource": {"kind": "track", "id": track[0], "attr": {"territories": track[1]}},
            }
        ],
    }


def cerbos_sanity(base: str, tracks: list[Track]) -> dict[str, Any]:
    """Every body is allowed; an unlicensed territory and a free-tier user are denied."""
    with httpx.Client(base_url=base, timeout=10, trust_env=False) as http:

        def ask(body: dict[str, Any]) -> bool:
            r = http.post("/api/check/resources", json=body)
            r.raise_for_status()
            return bool(r.json()["results"][0]["actions"][ACTION] == "EFFECT_ALLOW")

        for t in tracks:
            expect("Cerbos", ask(cerbos_body(t)), True, f"{t[0]} in {HOME}")
        t = tracks[0]
        expect("Cerbos", ask(cerbos_body(t, unlicensed(t))), False, f"{t[0]} in {unlicensed(t)}")
        expect("Cerbos", ask(cerbos_body(t, role="free")), False, f"{t[0]} for a free user")
    return {"questions": len(tracks), "checked": CHECKED}


# --- entitlements -------------------------------------------------------------------


async def load_catalogue(admin_dsn: str, tracks: int, grants: int, seed: int) -> dict[str, Any]:
    """``bench_checks.py``'s catalogue in ``entitlements_bench_peers`` (COPY, then ANALYZE)."""
    admin = await asyncpg.connect(admin_dsn)  # first: no server, no point building anything
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {BENCH_DB}")
    finally:
        await admin.close()
    cat = bc.build_catalogue(tracks, grants, seed)
    dsn = bc.db_dsn(admin_dsn, BENCH_DB)
    store = await PostgresStore.open(dsn, min_size=1, max_size=1)  # applies schema.sql
    await store.close()
    conn = await asyncpg.connect(dsn)
    try:
        await bc.load_catalogue(conn, cat)
        await bc.load_purchases(conn, cat, 0, grants - len(cat.deals), 2)
        await bc.vacuum_analyze(conn)
        stats = await bc.table_stats(conn)
        server = await conn.fetchval("SELECT version()")
    finally:
        await conn.close()
    return {
        "dsn": dsn,
        "hot": [bc.track_id(t) for t in cat.hot[:HOT_SET]],
        "stats": {k: stats[k] for k in ("grants", "purchases", "tracks", "edges")},
        "postgres": str(server).split(" on ")[0],
    }


async def drop_database(admin_dsn: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    finally:
        await admin.close()


def granted_tracks(base: str, token: str, hot: list[str]) -> tuple[list[str], dict[str, int]]:
    """Of the hot set, the tracks the service grants ``u42`` in GB (takedowns are not)."""
    r = httpx.post(
        f"{base}/v1/check/batch",
        json={"checks": [{"resource": t, "action": ACTION, "territory": HOME} for t in hot]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
        trust_env=False,
    )
    r.raise_for_status()
    results = r.json()["results"]
    reasons: dict[str, int] = {}
    for d in results:
        reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
    granted = [t for t, d in zip(hot, results, strict=True) if d["allowed"]]
    if not granted:
        raise RuntimeError(f"the service grants none of the hot set: {reasons}")
    return granted, reasons


def mint_service_token(env: dict[str, str]) -> str:
    """A service token for the SDK: ``entitlements:check:any`` lets it follow the change
    feed, so its cached decisions live ``max_age`` instead of ``staleness`` (5 s)."""
    out = subprocess.run(
        [*bh.entitlements_cli(), "token", "mint", "--sub", "svc-bench-peers", "--scope",
         "entitlements:check:any", "--ttl", "1h"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def sdk_phases(
    base: str,
    token: str,
    service_token: str,
    tracks: list[str],
    seconds: float,
    results: dict[str, Any],
    start: float,
) -> None:
    """The SDK's warm ``authorize`` and PyJWT's ``decode`` of the same token."""
    verifier = TokenVerifier([service_issuer(base, issuer="entitlements", audience="entitlements")])
    with Entitlements(base, verifier=verifier, service_token=service_token) as ent:

        def warm() -> dict[str, Any]:
            for t in tracks:
                expect("the SDK", ent.authorize(token, t, ACTION, HOME).allowed, True, t)
            # Answers given before the change feed's first answer are asked again: pass
            # over the questions until one whole pass sends nothing (at most 30 s).
            deadline = time.monotonic() + 30
            while True:
                before = ent.stats().requests
                for t in tracks:
                    ent.authorize(token, t, ACTION, HOME)
                if ent.stats().requests == before:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        "the SDK's cache did not settle: it keeps asking the service"
                    )
                time.sleep(0.1)
            out = time_calls(cycling([(token, t, ACTION, HOME) for t in tracks], ent.authorize),
                             seconds, counter=lambda: ent.stats().requests)  # fmt: skip
            # Requests sent while timed: the cache refused entries (on a busy machine, the
            # change feed late past the staleness bound): those calls were round trips.
            out["client_requests_during"] = out.pop("counted_during_timing")
            stats = ent.stats()
            out["feed"] = {"revision": stats.feed_revision, "fresh": stats.feed_fresh}
            out["questions"] = len(tracks)
            return out

        log(start, "in-process: the SDK's warm authorize")
        attempt(results, "sdk_warm_authorize", warm, start)

    def pyjwt() -> dict[str, Any]:
        jwks = httpx.get(f"{base}/.well-known/jwks.json", timeout=10, trust_env=False).json()
        kid = jwt.get_unverified_header(token)["kid"]
        key = next(jwt.PyJWK(k) for k in jwks["keys"] if k["kid"] == kid).key
        claims = jwt.decode(token, key, algorithms=["EdDSA"], audience="entitlements",
                            issuer="entitlements")  # fmt: skip
        if ROLE not in str(claims):
            raise AssertionError(f"the token carries no premium role: {claims}")
        op = lambda: jwt.decode(token, key, algorithms=["EdDSA"], audience="entitlements",  # noqa: E731
                                issuer="entitlements")  # fmt: skip
        return {**time_calls(op, seconds), "token_bytes": len(token), "algorithm": "EdDSA"}

    log(start, "in-process: PyJWT decode of the same token")
    attempt(results, "pyjwt_decode", pyjwt, start)


# --- PyCasbin -----------------------------------------------------------------------


def casbin_policy(path: Path, lines: int, questions: list[Track], seed: int) -> dict[str, Any]:
    """``lines`` p lines (the question tracks first, then generated ones) and the g lines."""
    rnd = random.Random(seed + lines)
    written = 0
    tracks = 0
    with path.open("w") as f:
        source = itertools.chain(questions, peer_tracks(rnd, len(questions), 10**9, home=False))
        for track_id, territories in source:
            if written >= lines:
                break
            for territory in territories[: lines - written]:
                f.write(f"p, {ROLE}, {territory}, {track_id}, {ACTION}\n")
                written += 1
            tracks += 1
        if tracks < len(questions):
            raise ValueError(
                f"a policy of {lines} lines cannot hold the {len(questions)} questions"
            )
        for u in range(CASBIN_USERS):
            if f"u{u}" not in (USER, FREE_USER):
                role = ROLE if rnd.random() < 0.6 else "free"
                f.write(f"g, u{u}, {role}, {rnd.choice(TERRITORIES)}\n")
        f.write(f"g, {USER}, {ROLE}, {HOME}\ng, {FREE_USER}, free, {HOME}\n")
    return {"p_lines": written, "g_lines": CASBIN_USERS, "tracks": tracks,
            "file_bytes": path.stat().st_size}  # fmt: skip


def rss_mb() -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def casbin_phase(
    module: ModuleType | None,
    missing: dict[str, str],
    size: int,
    questions: list[Track],
    seconds: float,
    seed: int,
) -> dict[str, Any]:
    casbin = need(module, "casbin", missing)
    with tempfile.TemporaryDirectory(prefix="bench-peers-casbin-") as tmp:
        model, policy = Path(tmp) / "model.conf", Path(tmp) / "policy.csv"
        model.write_text(CASBIN_MODEL)
        shape = casbin_policy(policy, size, questions, seed)
        gc.collect()
        rss0 = rss_mb()
        t0 = time.perf_counter()
        enforcer = casbin.FastEnforcer(str(model), str(policy), cache_key_order=[2, 1])
        load_s = round(time.perf_counter() - t0, 2)
        loaded_mb = round(rss_mb() - rss0, 1)
    try:
        for t in questions:
            expect("Casbin", enforcer.enforce(USER, HOME, t[0], ACTION), True, f"{t[0]} in {HOME}")
        t = questions[0]
        there = unlicensed(t)
        expect("Casbin", enforcer.enforce(USER, there, t[0], ACTION), False, f"{t[0]} in {there}")
        expect("Casbin", enforcer.enforce(FREE_USER, HOME, t[0], ACTION), False, "a free user")
        calls = [(USER, HOME, t[0], ACTION) for t in questions]
        out = time_calls(cycling(calls, enforcer.enforce), seconds)
    finally:
        del enforcer
        gc.collect()
    return {**out, "policy": shape, "load_s": load_s, "rss_growth_mb": loaded_mb,
            "questions": len(questions), "checked": CHECKED}  # fmt: skip


# --- Cedar --------------------------------------------------------------------------


def cedar_entities(track: Track) -> list[dict[str, Any]]:
    role = {"type": "Role", "id": ROLE}
    return [
        {"uid": {"type": "User", "id": USER}, "attrs": {}, "parents": [role]},
        {"uid": {"type": "User", "id": FREE_USER}, "attrs": {}, "parents": []},
        {"uid": role, "attrs": {}, "parents": []},
        {"uid": {"type": "Track", "id": track[0]}, "attrs": {"territories": track[1]},
         "parents": []},
    ]  # fmt: skip


def cedar_request(track: Track, territory: str = HOME, user: str = USER) -> dict[str, Any]:
    return {
        "principal": f'User::"{user}"',
        "action": f'Action::"{ACTION}"',
        "resource": f'Track::"{track[0]}"',
        "context": {"territory": territory},
    }


def cedar_phase(
    module: ModuleType | None,
    missing: dict[str, str],
    questions: list[Track],
    seconds: float,
    handles: bool,
) -> dict[str, Any]:
    cedarpy = need(module, "cedarpy", missing)
    if handles:
        policies: Any = cedarpy.PolicySet.from_str(CEDAR_POLICY)
        every = {json.dumps(e, sort_keys=True) for t in questions for e in cedar_entities(t)}
        shared = cedarpy.Entities.from_json_str("[" + ",".join(sorted(every)) + "]")
        calls = [(cedar_request(t), policies, shared) for t in questions]
    else:
        calls = [(cedar_request(t), CEDAR_POLICY, cedar_entities(t)) for t in questions]

    def allowed(request: dict[str, Any], p: Any, e: Any) -> bool:
        result = cedarpy.is_authorized(request, p, e)
        errors = result.diagnostics.errors
        if errors:
            raise RuntimeError(f"cedar: {errors}")
        return bool(result.allowed)

    for (req, p, e), t in zip(calls, questions, strict=True):
        expect("Cedar", allowed(req, p, e), True, f"{t[0]} in {HOME}")
    t, (_, p, e) = questions[0], calls[0]
    expect("Cedar", allowed(cedar_request(t, unlicensed(t)), p, e), False, "an unlicensed place")
    expect("Cedar", allowed(cedar_request(t, user=FREE_USER), p, e), False, "a free user")
    return {**time_calls(cycling(calls, cedarpy.is_authorized), seconds),
            "questions": len(questions), "checked": CHECKED}  # fmt: skip


# --- the run ------------------------------------------------------------------------


def versions(wrk: str | None, cerbos: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dist in ("pycasbin", "cedarpy", "matplotlib", "PyJWT", "cryptography", "fastapi",
                 "uvicorn", "httpx", "asyncpg"):  # fmt: skip
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    if wrk:
        v = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        out["wrk"] = ((v.stdout or v.stderr).splitlines() or ["?"])[0]
    out["cerbos"] = cerbos["version"] if cerbos else None
    return out


def http_phases(
    args: argparse.Namespace,
    work: Path,
    wrk: str,
    results: dict[str, Any],
    setup: dict[str, Any],
    questions: list[Track],
    start: float,
) -> None:
    """Catalogue, both servers, sanity, warm-up, alternating rounds; then the SDK rows."""
    http: dict[str, Any] = results["http"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTITLEMENTS_")}
    servers: dict[str, Any] = {}  # name -> a started bh.Server or Cerbos
    down = {"entitlements": "", "cerbos": ""}  # why a server is not up
    token = service_token = ""
    granted: list[str] = []

    def start_ours(hot: list[str]) -> dict[str, Any]:
        nonlocal token, service_token, granted
        token = bh.mint_token(env)
        service_token = mint_service_token(env)
        servers["entitlements"] = bh.Server(env, bh.free_port(), args.workers, work / "server.log")
        startup = servers["entitlements"].start()
        granted, reasons = granted_tracks(servers["entitlements"].base, token, hot)
        (work / "hot.txt").write_text("\n".join(granted) + "\n")
        return {"startup_s": startup, "hot_set_reasons": reasons, "tracks": len(granted)}

    def start_cerbos(binary: str) -> dict[str, Any]:
        servers["cerbos"] = Cerbos(binary, work / "cerbos", args.workers)
        startup = servers["cerbos"].start()
        bodies = [json.dumps(cerbos_body(t), separators=(",", ":")) for t in questions]
        (work / "cerbos-bodies.txt").write_text("\n".join(bodies) + "\n")
        return {"startup_s": startup, "gomaxprocs": args.workers,
                "sanity": cerbos_sanity(servers["cerbos"].base, questions),
                "request_bytes": len(bodies[0])}  # fmt: skip

    def load(name: str, seconds: float, quiet: bool) -> dict[str, Any]:
        if name not in servers:
            raise RuntimeError(f"not run: the {name} server is not up ({brief(down[name])})")
        server = servers[name]
        bh.SERVER_PIDS.clear()  # whose CPU counts as the server's in cpu_shares
        bh.SERVER_PIDS.add(server.proc.pid)
        t, c = args.threads, args.connections
        if name == "entitlements":
            return bh.run_wrk(wrk, f"{server.base}/v1/check", work / "check.lua", threads=t,
                              connections=c, seconds=seconds, quiet=quiet,
                              args=[str(work / "hot.txt"), token, "random"])  # fmt: skip
        return bh.run_wrk(wrk, f"{server.base}/api/check/resources", work / "cerbos.lua",
                          threads=t, connections=c, seconds=seconds, quiet=quiet,
                          args=[str(work / "cerbos-bodies.txt")])  # fmt: skip

    try:
        log(start, f"catalogue: {args.tracks:,} tracks, {args.grants:,} grants")
        catalogue = attempt(setup, "catalogue", lambda: asyncio.run(
            load_catalogue(args.dsn, args.tracks, args.grants, args.seed)), start)  # fmt: skip
        if catalogue is None:
            down["entitlements"] = f"catalogue: {setup['catalogue']['error']}"
        else:
            env.update({"ENTITLEMENTS_DATABASE_URL": catalogue.pop("dsn"),
                        "ENTITLEMENTS_LOG_LEVEL": "warning"})  # fmt: skip
            redis = {"none": None, "auto": bh.DEFAULT_REDIS if bh.answers(bh.DEFAULT_REDIS)
                     else None}.get(args.redis, args.redis)  # fmt: skip
            if redis:
                env.update({"ENTITLEMENTS_REDIS_URL": redis,
                            "ENTITLEMENTS_REDIS_PREFIX": f"bench:peers:{os.getpid()}:"})  # fmt: skip
            catalogue["redis"] = redis
            log(start, f"entitlements serve --workers {args.workers}")
            hot = catalogue.pop("hot")
            if attempt(setup, "entitlements_server", lambda: start_ours(hot), start) is None:
                down["entitlements"] = setup["entitlements_server"]["error"]
                servers.pop("entitlements", None)

        install = setup["cerbos_install"]
        if "error" in install:
            down["cerbos"] = f"install: {install['error']}"
        else:
            log(start, f"cerbos server (GOMAXPROCS={args.workers})")
            if attempt(setup, "cerbos_server", lambda: start_cerbos(install["binary"]),
                       start) is None:  # fmt: skip
                down["cerbos"] = setup["cerbos_server"]["error"]
                servers.pop("cerbos", None)

        (work / "check.lua").write_text(bh.LUA_CHECK + bh.LUA_DONE)
        (work / "cerbos.lua").write_text(LUA_CERBOS + bh.LUA_DONE)
        names = ("entitlements", "cerbos")
        warmups: dict[str, Any] = {}
        for name in names:
            if name in servers:
                log(start, f"warm-up: {name}, {args.warmup:g} s")
            attempt(warmups, name, functools.partial(load, name, args.warmup, False), start)
        rounds: list[dict[str, Any]] = []
        for i in range(args.rounds):
            row: dict[str, Any] = {}
            for name in names:
                if name in servers:
                    log(start, f"round {i + 1}/{args.rounds}: {name}, {args.seconds:g} s")
                attempt(row, name, functools.partial(load, name, args.seconds, True), start)
            rounds.append(row)
        for name in names:
            ok = [r[name] for r in rounds if "error" not in r[name]]
            http[name] = max(ok, key=lambda x: x["rps"]) if ok else rounds[-1][name]
        http["warmup"] = {n: {"seconds": args.warmup, **({"error": w["error"]} if "error" in w
                              else {"rps": w["rps"]})} for n, w in warmups.items()}  # fmt: skip
        http["rounds"] = [
            {n: {"error": r[n]["error"]} if "error" in r[n] else
                {k: r[n][k] for k in ("rps", "p50_ms", "p99_ms", "cpu_shares")} for n in names}
            for r in rounds
        ]  # fmt: skip
        if "cerbos" in servers:
            servers["cerbos"].stop()
        if "entitlements" in servers:
            sdk_phases(servers["entitlements"].base, token, service_token,
                       granted[: args.questions],
                       args.inproc_seconds, results["inproc"], start)  # fmt: skip
        else:
            for key in ("sdk_warm_authorize", "pyjwt_decode"):
                results["inproc"][key] = {
                    "error": "not run: the entitlements server is not up "
                    f"({brief(down['entitlements'])})"
                }
    finally:
        for server in servers.values():
            server.stop()
        if "catalogue" in setup and not args.keep:
            with contextlib.suppress(Exception):
                asyncio.run(drop_database(args.dsn))


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    missing: dict[str, str] = {}
    casbin = optional_module("casbin", missing)
    cedarpy = optional_module("cedarpy", missing)
    if missing:
        print(f"missing {', '.join(sorted(missing))}: {INSTALL_HINT}", file=sys.stderr)
    setup: dict[str, Any] = {}
    results: dict[str, Any] = {"http": {}, "inproc": {}}
    questions = question_tracks(args.questions, args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    wrk: str | None = None
    cerbos_info: dict[str, Any] | None = None
    try:
        found = attempt(setup, "wrk", lambda: {"path": bh.ensure_wrk()}, start)
        wrk = found["path"] if found else None
        log(start, f"cerbos {args.cerbos_version} under {args.cache_dir}")
        cerbos_info = attempt(setup, "cerbos_install",
                              lambda: ensure_cerbos(args.cache_dir, args.cerbos_version), start)  # fmt: skip
        if wrk:
            http_phases(args, work, wrk, results, setup, questions, start)
        else:
            for key in ("entitlements", "cerbos"):
                results["http"][key] = {"error": f"not run: {setup['wrk']['error']}"}
            for key in ("sdk_warm_authorize", "pyjwt_decode"):
                results["inproc"][key] = {"error": "not run: wrk is missing, no server was started"}

        inproc = results["inproc"]
        for size in args.casbin_sizes:
            log(start, f"in-process: Casbin FastEnforcer, {size:,} policy lines")
            attempt(inproc, f"casbin_{size}", functools.partial(
                casbin_phase, casbin, missing, size, questions, args.inproc_seconds, args.seed),
                start)  # fmt: skip
        for handles in (False, True):
            key = "cedarpy_handles" if handles else "cedarpy"
            log(start, f"in-process: {key}")
            attempt(inproc, key, functools.partial(
                cedar_phase, cedarpy, missing, questions, args.inproc_seconds, handles), start)  # fmt: skip
        log(start, "in-process: the timing loop around a call that does nothing")
        attempt(inproc, "timer_loop", lambda: time_calls(
            cycling([(q,) for q in questions], lambda _q: None), args.inproc_seconds), start)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": "peers",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "platform": platform.platform(),
            "cpu": bh.cpu_model(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "postgres": setup.get("catalogue", {}).get("postgres"),
            "load_generator": "wrk on the same machine (shares the cores)",
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "versions": versions(wrk, cerbos_info),
        },
        "params": {
            "tracks": args.tracks,
            "grants": args.grants,
            "workers": args.workers,
            "cerbos_gomaxprocs": args.workers,
            "wrk_threads": args.threads,
            "wrk_connections": args.connections,
            "seconds": args.seconds,
            "warmup_seconds": args.warmup,
            "rounds": args.rounds,
            "inproc_seconds": args.inproc_seconds,
            "inproc_timing": "time.perf_counter_ns() around each call, one thread, gc on",
            "questions": args.questions,
            "casbin_sizes": args.casbin_sizes,
            "seed": args.seed,
        },
        "question": {
            "asked": f"may {USER} (role {ROLE}) {ACTION} a track licensed in {HOME}, from {HOME}?",
            "entitlements": "POST /v1/check {resource, action: stream, territory: GB}, "
            "bearer token with role plan:premium; the label's deal grants it",
            "cerbos_policy": CERBOS_POLICY,
            "cerbos_request_example": cerbos_body(questions[0]) if questions else None,
            "casbin_model": CASBIN_MODEL,
            "casbin_cache_key_order": [2, 1],
            "cedar_policy": CEDAR_POLICY,
            "cedar_entities_example": cedar_entities(questions[0]) if questions else None,
        },
        "setup": setup,
        "missing_packages": missing,
        **results,
        "runtime_s": round(time.perf_counter() - start, 1),
    }


# --- output -------------------------------------------------------------------------


INPROC_ROWS = (
    ("sdk_warm_authorize", "SDK `Entitlements.authorize`, warm", "token seen, decision cached"),
    ("pyjwt_decode", "PyJWT `jwt.decode` (EdDSA)", "the same token, verified once"),
    ("cedarpy", "cedarpy `is_authorized`", "policy text + entity list each call"),
    ("cedarpy_handles", "cedarpy `is_authorized`, handles", "pre-parsed PolicySet + Entities"),
    ("timer_loop", "timer + loop, no call", "included in every row"),
)


def inproc_rows(r: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    inproc = r["inproc"]
    rows = [(k, n, note, inproc[k]) for k, n, note in INPROC_ROWS[:2] if k in inproc]
    for size in r["params"]["casbin_sizes"]:
        key = f"casbin_{size}"
        if key in inproc:
            x = inproc[key]
            note = (f"RBAC with domains; load {x['load_s']} s, +{x['rss_growth_mb']} MB"
                    if "error" not in x else "RBAC with domains")  # fmt: skip
            rows.append((key, f"PyCasbin `FastEnforcer.enforce`, {size:,} lines", note, x))
    rows += [(k, n, note, inproc[k]) for k, n, note in INPROC_ROWS[2:] if k in inproc]
    return rows


def table(r: dict[str, Any]) -> str:
    m, p, http = r["machine"], r["params"], r["http"]
    lines = [
        f"Peers — {m['cpu_count']} CPUs ({m['cpu']}), Python {m['python']}, "
        f"wrk -t{p['wrk_threads']} -c{p['wrk_connections']} on the same machine, "
        f"{p['seconds']:g} s per run after {p['warmup_seconds']:g} s warm-up, best of "
        f"{p['rounds']} alternating rounds; our server: {p['workers']} uvicorn workers; "
        f"Cerbos {m['versions'].get('cerbos') or '?'} with GOMAXPROCS={p['cerbos_gomaxprocs']}",
        "",
        "| server | request | req/s | p50 ms | p99 ms | errors | other work's CPU |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, name, request in (
        ("entitlements", "entitlements (warm)", "`POST /v1/check`"),
        ("cerbos", "Cerbos", "`POST /api/check/resources`"),
    ):
        x = http.get(key, {"error": "not run"})
        if "error" in x:
            lines.append(f"| {name} | {request} | **error** | | | {brief(x['error'])} | |")
            continue
        errors = x["non_2xx"] + sum(v for k, v in x["errors"].items() if k != "status")
        lines.append(
            f"| {name} | {request} | {x['rps']:,.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} "
            f"| {errors} | {x['cpu_shares']['other']:.0%} |"
        )
    lines += [
        "",
        f"In-process, one thread, each call timed with `perf_counter_ns`, "
        f"{p['inproc_seconds']:g} s per row, cycling over {p['questions']} allowed questions",
        "",
        "| decision | p50 µs | p99 µs | mean µs | calls | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for _key, name, note, x in inproc_rows(r):
        if "error" in x:
            lines.append(f"| {name} | **error** | | | | {brief(x['error'])} |")
        else:
            lines.append(
                f"| {name} | {x['p50_us']:,} | {x['p99_us']:,} | {x['mean_us']:,} "
                f"| {x['n']:,} | {note} |"
            )
    setup_errors = {k: brief(v["error"]) for k, v in r["setup"].items() if "error" in v}
    sdk = r["inproc"].get("sdk_warm_authorize", {})
    lines += [
        "",
        f"- setup errors: {setup_errors or 'none'}; missing packages: "
        f"{', '.join(r['missing_packages']) or 'none'}",
    ]
    if "client_requests_during" in sdk:
        lines.append(f"- the SDK sent {sdk['client_requests_during']} requests to the service while "
                     "its warm row was timed (0: every call answered from its cache)")  # fmt: skip
    lines.append(f"- load avg at the end {m['loadavg_at_end']}; runtime {r['runtime_s']} s")
    return "\n".join(lines)


def us(v: float) -> str:
    """Three significant figures, or a whole number with separators."""
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def chart(r: dict[str, Any], path: Path) -> None:
    """Left: HTTP req/s with p50/p99; right: in-process p50 (bar) and p99 (tick), log scale."""
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1, 2.2]}
    )
    names, rps, notes = [], [], []
    for key, name in (("entitlements", "entitlements\nPOST /v1/check\n(warm)"),
                      ("cerbos", "Cerbos\nPOST /api/check/\nresources")):  # fmt: skip
        x = r["http"].get(key, {"error": "not run"})
        names.append(name)
        rps.append(0 if "error" in x else x["rps"])
        notes.append(
            "error" if "error" in x else f"p50 {x['p50_ms']:.1f} ms\np99 {x['p99_ms']:.1f} ms"
        )
    bars = left.bar(names, rps, color=["#2b6cb0", "#a0aec0"])
    for bar, note in zip(bars, notes, strict=True):
        left.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=9, xytext=(0, 3),
                      textcoords="offset points")  # fmt: skip
    p = r["params"]
    left.set_ylabel("requests/s (higher is better)")
    left.tick_params(axis="x", labelsize=8)
    left.set_title(f"HTTP: wrk, {p['wrk_connections']} connections, best of {p['rounds']}\n"
                   f"{p['workers']} workers vs GOMAXPROCS={p['cerbos_gomaxprocs']}", fontsize=9)  # fmt: skip
    left.set_ylim(0, max([*rps, 1]) * 1.25)
    rows = [row for row in inproc_rows(r) if row[0] != "timer_loop"]
    labels = [name.replace("`", "") for _, name, _, _ in rows]
    p50 = [x.get("p50_us", 0) for *_, x in rows]
    p99 = [x.get("p99_us", 0) for *_, x in rows]
    y = list(range(len(rows)))
    colors = ["#2b6cb0" if k == "sdk_warm_authorize" else "#a0aec0" for k, *_ in rows]
    right.barh(y, [v or float("nan") for v in p50], color=colors)
    right.scatter([v or float("nan") for v in p99], y, marker="|", s=300, color="#c53030",
                  zorder=3)  # fmt: skip
    for i, (*_, x) in enumerate(rows):
        text = "error" if "error" in x else f"{us(x['p50_us'])} / {us(x['p99_us'])} µs"
        right.annotate(text, (max(x.get("p99_us", 0), x.get("p50_us", 0), 0.6), i),
                       xytext=(6, 0), textcoords="offset points", va="center", fontsize=8)  # fmt: skip
    right.set_yticks(y, labels, fontsize=8)
    right.invert_yaxis()
    right.set_xscale("log")
    right.set_xlim(left=0.5, right=max([*p99, 10]) * 40)
    right.set_xlabel("µs per decision, log scale (lower is better): p50 bar, p99 tick")
    right.set_title("In-process, one thread, per call (p50 / p99)", fontsize=9)
    m = r["machine"]
    fig.suptitle(f"Same question, same machine ({m['cpu_count']} CPUs, Python {m['python']}, "
                 f"{r['when']})", fontsize=11)  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sizes(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("ENTITLEMENTS_BENCH_DATABASE_URL", bh.DEFAULT_DSN),
        help="a Postgres server to create the benchmark database on (admin DSN)",
    )
    parser.add_argument(
        "--redis", default="auto", help="auto (127.0.0.1:6379 if it answers), none, or a URL"
    )
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--grants", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="per measured wrk run")
    parser.add_argument("--warmup", type=float, default=3.0, help="wrk warm-up per server")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per server")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--workers", type=int, default=2, help="our uvicorn workers = Cerbos cores")
    parser.add_argument("--inproc-seconds", type=float, default=5.0, help="per in-process row")
    parser.add_argument("--questions", type=int, default=64, help="distinct in-process questions")
    parser.add_argument("--casbin-sizes", type=sizes, default=[1000, 100_000, 1_000_000],
                        help="policy sizes in p lines, comma-separated")  # fmt: skip
    parser.add_argument("--cerbos-version", default="0.55.0")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "entitlements-bench" / "cerbos",
        help="where the Cerbos npm package is installed",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/peers.json"))
    parser.add_argument("--chart", type=Path, default=None,
                        help="PNG chart (default: --out with .png)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.questions < 1 or args.rounds < 1:
        parser.error("--questions and --rounds must be at least 1")
    result = run(args)
    chart_path = args.chart or args.out.with_suffix(".png")
    try:
        chart(result, chart_path)
        result["chart"] = str(chart_path)
    except Exception as exc:  # a chart that fails leaves the figures intact
        result["chart"] = {
            "error": error_text(exc) + f" (the chart needs matplotlib: {INSTALL_HINT})"
        }
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}" + (f" and {chart_path}" if isinstance(result["chart"], str) else
                                  f"; chart: {result['chart']['error']}"))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
