"""The HTTP service under load: warm checks vs the HTTP ceiling vs no cache, one run.

    python benchmarks/bench_http.py [--dsn ADMIN_DSN] [--redis auto|none|URL]
        [--tracks 100000] [--grants 1000000] [--seconds 8] [--threads 2]
        [--connections 64] [--out benchmarks/results/http.json]

What it does:

1. Creates the database ``entitlements_bench_http`` (dropped first if present,
   dropped again at the end unless ``--keep``) on the server of ``--dsn``
   (default ``$ENTITLEMENTS_BENCH_DATABASE_URL``, else
   ``postgresql://postgres@127.0.0.1:5432/postgres``) and loads the catalogue of
   ``bench_checks.py`` with COPY (its loader functions): 200 labels, 10k
   releases, ``--tracks`` tracks, label/release deals, takedowns and per-user
   purchases up to ``--grants`` grants; then VACUUM (ANALYZE).
2. Mints one access token with the CLI (``entitlements token mint``): a
   premium-plan user, as a client would hold it.
3. Starts ``entitlements serve --workers 2`` as a subprocess (uvicorn, uvloop,
   httptools), ``ENTITLEMENTS_DATABASE_URL`` pointing at that database, and,
   when a Redis answers (``--redis auto``: redis://127.0.0.1:6379/0), L2 in it
   under a fresh key prefix. Load comes from ``wrk`` (installed with apt-get if
   missing) on the same machine, with Lua scripts for the POST bodies:

   (a) the HTTP ceiling: ``GET /healthz`` (a constant raw ``Response`` in the
       same FastAPI app, behind the same middleware) — max throughput, p50/p99;
   (b) warm ``POST /v1/check``: the same token, random tracks from the 1,000
       hottest (checked for a few seconds first, so both workers hold them) —
       max throughput, p50/p99, and its ratio to (a) (target ≥ 80 %);
   (d) warm checks at about half of (b)'s throughput: wrk cannot rate-limit
       (that is wrk2), so each connection pauses between requests (wrk's
       ``delay()`` hook), calibrated once; the achieved rate is reported —
       p99 (target < 5 ms);
   (e) ``POST /v1/check/batch`` with 1,000 warm checks, one connection,
       back to back — latency p50/p99 (target < 25 ms);
   (f) cold checks: one connection walking tracks nobody has checked (the
       cold end of the popularity order), each used once — p50/p99 (target
       < 10 ms). Cold means L1 and L2 miss: Postgres answers.

   Then restarts the server with ``ENTITLEMENTS_CACHE_SIZE=0`` and measures

   (c) the uncached baseline: (b)'s requests, every check read from Postgres.

   With ``--gc-experiment`` (off: ``gc.freeze()`` is now in the product), an experiment:
   the cached server again, started by uvicorn through ``gc_frozen_app`` below
   (the same app plus ``gc.collect(); gc.freeze()`` after start-up), measuring
   (b), (e) and (f) again — how much of the tail is CPython's full collections.

   With the cached server still up, the gateway check (issue 14): (g) the ceiling
   again, then (h) warm ``/v1/gateway/check`` in nginx ``auth_request``'s shape (the
   hot tracks the token may stream) — its ratio to (g) (target ≥ 80 %) — and (i) the
   same with a per-request token minted on every answer (the ratio reported).

Before each measured phase it waits (at most 15 s) for the machine to be idle
and records how busy it was: on a shared 2-core box other work skews
everything, and the JSON says when it did.

It prints a markdown table and writes JSON (machine, versions, settings,
every figure, wrk's raw numbers) to ``--out``. wrk's latencies are from
request sent to response read, per connection (closed loop); the load
generator shares the machine's cores with the server and Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_checks as bc  # the catalogue and its COPY loaders
from phases import error_of, failure, report_failures, run_phase

from entitlements.store.postgres import PostgresStore

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
BENCH_DB = "entitlements_bench_http"
HOT_SET = 1000
BATCH = 1000
COLD_IDS = 30_000
TARGETS = {
    "warm_vs_ceiling_min": 0.80,
    "half_load_p99_ms_max": 5.0,
    "batch_p99_ms_max": 25.0,
    "cold_p99_ms_max": 10.0,
}

# --- wrk scripts -------------------------------------------------------------------

LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"lat_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""

LUA_GET = LUA_DONE  # GET the URL as given

LUA_CHECK = r"""
-- args: ids file, token, mode (random|seq), delay in ms (only with the paced variant)
local ids = {}
local headers = {}
local mode = "random"
local n = 0
local pause = 0
local counter = 0

setup = function(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

init = function(args)
  for line in io.lines(args[1]) do ids[#ids + 1] = line end
  headers["Authorization"] = "Bearer " .. args[2]
  headers["Content-Type"] = "application/json"
  mode = args[3]
  pause = tonumber(args[4] or "0")
  math.randomseed(os.time() * 1000 + (tid or 1))
  -- sequential mode: each thread walks its own slice, so no id is used twice
  n = math.floor((#ids / 16) * ((tid or 1) - 1))
end

request = function()
  local id
  if mode == "seq" then
    n = n % #ids + 1  -- wraps only if the list runs out (the script checks it did not)
    id = ids[n]
  else
    id = ids[math.random(#ids)]
  end
  local body = '{"resource":"' .. id .. '","action":"stream","territory":"GB"}'
  return wrk.format("POST", "/v1/check", headers, body)
end
"""

# The ceiling is loaded exactly like (b): the same per-request Lua, the same headers and
# body, so wrk (on the same two cores) spends the same CPU per request in both phases.
# Only the target differs: GET /healthz, a constant answer.
LUA_CEILING = LUA_CHECK.replace(
    'wrk.format("POST", "/v1/check", headers, body)', 'wrk.format("GET", "/healthz", headers, body)'
)
assert LUA_CEILING != LUA_CHECK

LUA_PACED = r"""
delay = function()
  return pause
end
"""

LUA_BATCH = r"""
-- args: body file, token
local req

init = function(args)
  local f = assert(io.open(args[1], "rb"))
  local body = f:read("*a")
  f:close()
  local headers = {}
  headers["Authorization"] = "Bearer " .. args[2]
  headers["Content-Type"] = "application/json"
  req = wrk.format("POST", "/v1/check/batch", headers, body)
end

request = function()
  return req
end
"""


def log(start: float, message: str) -> None:
    print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: apt-get install -y wrk", file=sys.stderr)
    install = ["apt-get", "install", "-y", "wrk"]
    if subprocess.run(install, check=False, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], check=False, capture_output=True)
        subprocess.run(install, check=False, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is needed (apt-get install wrk) and could not be installed")
    return found


def cpu_busy(seconds: float = 1.0) -> float:
    """The machine's CPU busy share over ``seconds`` (0..1), from /proc/stat."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return idle, sum(fields)

    try:
        i0, t0 = sample()
        time.sleep(seconds)
        i1, t1 = sample()
    except OSError:
        return float("nan")
    return round(1 - (i1 - i0) / max(1, t1 - t0), 3)


QUIET = {"max_busy": 0.15, "max_wait_s": 15.0, "budget_s": 60.0}


def wait_quiet() -> dict[str, Any]:
    """Before a measured phase: wait (bounded) until nothing else is using the CPUs.

    The server is idle between phases, so what /proc/stat shows busy is someone
    else's work (other tests, builds) that would skew the figures. At most
    ``max_wait_s`` per phase and ``budget_s`` per run; recorded either way.
    """
    start = time.monotonic()
    busy = cpu_busy()
    while (
        busy > QUIET["max_busy"]
        and time.monotonic() - start < QUIET["max_wait_s"]
        and QUIET["budget_s"] > time.monotonic() - start
    ):
        busy = cpu_busy()
    waited = time.monotonic() - start
    QUIET["budget_s"] = max(0.0, QUIET["budget_s"] - max(0.0, waited - 1.0))
    return {"busy_before": busy, "waited_s": round(waited, 1)}


# --- who used the CPUs during a run ------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SERVER_PIDS: set[int] = set()  # the running server's supervisor (its descendants count too)


def _procs() -> dict[int, tuple[str, int, int]]:
    """pid -> (command name, parent pid, CPU ticks used so far)."""
    out: dict[int, tuple[str, int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = (entry / "stat").read_text()
            comm = raw[raw.index("(") + 1 : raw.rindex(")")]
            f = raw[raw.rindex(")") + 2 :].split()
            out[int(entry.name)] = (comm, int(f[1]), int(f[11]) + int(f[12]))
    return out


def _ours(procs: dict[int, tuple[str, int, int]]) -> dict[str, int]:
    """CPU ticks of the server tree, and of every postgres/redis process (they serve it)."""
    server = 0
    backends = 0
    for pid, (comm, _ppid, ticks) in procs.items():
        p, seen = pid, 0
        while p > 1 and p not in SERVER_PIDS and seen < 64:
            p = procs.get(p, ("", 0, 0))[1]
            seen += 1
        if p in SERVER_PIDS:
            server += ticks
        elif comm.startswith(("postgres", "redis-server", "valkey-server")):
            backends += ticks
    return {"server": server, "backends": backends}


def _machine() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields)
    return total - idle, total


class CpuAccount:
    """Shares of the machine's CPU capacity used during a run, by whom."""

    def __enter__(self) -> CpuAccount:
        import resource

        self._res = resource
        self.m0 = _machine()
        self.o0 = _ours(_procs())
        self.c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return self

    def __exit__(self, *exc: object) -> None:
        m1, o1 = _machine(), _ours(_procs())
        c1 = self._res.getrusage(self._res.RUSAGE_CHILDREN)
        total = max(1, m1[1] - self.m0[1])
        busy = m1[0] - self.m0[0]
        # wrk is reaped by subprocess.run: its CPU is in RUSAGE_CHILDREN (seconds -> ticks).
        wrk = (c1.ru_utime + c1.ru_stime - self.c0.ru_utime - self.c0.ru_stime) * CLK_TCK
        server = o1["server"] - self.o0["server"]
        backends = o1["backends"] - self.o0["backends"]
        self.shares = {
            "busy": round(busy / total, 3),
            "server": round(server / total, 3),
            "postgres_redis": round(backends / total, 3),
            "wrk": round(wrk / total, 3),
            "other": round(max(0.0, busy - server - backends - wrk) / total, 3),
        }


def run_wrk(
    wrk: str,
    url: str,
    script: Path,
    *,
    threads: int,
    connections: int,
    seconds: float,
    args: list[str] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """One wrk run; ``quiet``: a measured run, so wait for an idle machine first."""
    before = wait_quiet() if quiet else None
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout", "5s",
        "-s", str(script),
        url,
    ]  # fmt: skip
    if args:
        cmd += ["--", *args]
    with CpuAccount() as cpu:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    seconds_run = raw["duration_us"] / 1e6
    errors = raw["errors"]
    lat = raw["lat_us"]
    return {
        "threads": threads,
        "connections": connections,
        "seconds": round(seconds_run, 2),
        "requests": raw["requests"],
        "rps": round(raw["requests"] / seconds_run, 1),
        "p50_ms": lat["p50"] / 1000,
        "p90_ms": lat["p90"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "p999_ms": lat["p999"] / 1000,
        "max_ms": lat["max"] / 1000,
        "mean_ms": round(lat["mean"] / 1000, 3),
        "errors": errors,
        "non_2xx": errors["status"],
        "cpu_shares": cpu.shares,
        **({"machine_before": before} if before else {}),
    }


# --- the server ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 6379), 0.5
        ) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def entitlements_cli() -> list[str]:
    exe = Path(sys.executable).with_name("entitlements")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "entitlements.cli.main"]


class Server:
    """``entitlements serve --workers N`` in its own process group."""

    def __init__(
        self,
        env: dict[str, str],
        port: int,
        workers: int,
        logfile: Path,
        command: list[str] | None = None,
    ) -> None:
        self.env = env
        self.port = port
        self.workers = workers
        self.logfile = logfile
        self.command = command or [
            *entitlements_cli(), "serve", "--workers", str(workers), "--port", str(port),
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> float:
        t0 = time.perf_counter()
        with open(self.logfile, "ab") as log_file:
            self.proc = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        SERVER_PIDS.clear()
        SERVER_PIDS.add(self.proc.pid)
        deadline = time.monotonic() + timeout
        ready = 0
        while ready < 2 * self.workers:  # several 200s: both workers are likely up
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.logfile.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready: {self.logfile.read_text()[-3000:]}")
            try:
                r = httpx.get(f"{self.base}/readyz", timeout=2)
                ready = ready + 1 if r.status_code == 200 else 0
            except httpx.HTTPError:
                ready = 0
                time.sleep(0.1)
        return round(time.perf_counter() - t0, 2)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # uvicorn's supervisor stops its workers
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group we created
            self.proc.wait(timeout=10)


def gc_frozen_app() -> Any:
    """The service exactly as ``entitlements serve`` builds it, plus ``gc.collect(); gc.freeze()``
    once the lifespan has started (an experiment, not the product).

    CPython's full (gen 2) collections walk every tracked object, including the
    ~100k that importing FastAPI, pydantic and the app leaves behind; on this
    machine one takes tens of ms and lands on whichever request triggered it.
    ``gc.freeze()`` moves the start-up objects out of the collector's way. Run by
    uvicorn directly (``uvicorn bench_http:gc_frozen_app --factory``).
    """
    import gc

    from entitlements.api.app import create_app
    from entitlements.settings import Settings

    app = create_app(Settings())
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> Any:
        async with inner(a) as state:
            gc.collect()
            gc.freeze()
            yield state

    app.router.lifespan_context = lifespan
    return app


def gc_frozen_command(port: int, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "bench_http:gc_frozen_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--log-level", "warning", "--no-access-log", "--no-proxy-headers",
    ]  # fmt: skip


# --- data ----------------------------------------------------------------------------


def db_dsn(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


async def load_database(
    admin_dsn: str, args: argparse.Namespace, start: float
) -> tuple[Any, dict[str, Any]]:
    log(start, f"generating the catalogue ({args.tracks:,} tracks, {args.grants:,} grants)")
    cat = bc.build_catalogue(args.tracks, args.grants, args.seed)
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {BENCH_DB}")
    finally:
        await admin.close()
    dsn = db_dsn(admin_dsn, BENCH_DB)
    store = await PostgresStore.open(dsn, min_size=1, max_size=1)  # applies schema.sql
    await store.close()
    conn = await asyncpg.connect(dsn)
    try:
        log(start, "COPY resources and deals")
        catalogue = await bc.load_catalogue(conn, cat)
        n_purchases = args.grants - len(cat.deals)
        log(start, f"COPY {n_purchases:,} purchases")
        purchases = await bc.load_purchases(conn, cat, 0, n_purchases, 2)
        purchases["vacuum_analyze_seconds"] = await bc.vacuum_analyze(conn)
        stats = await bc.table_stats(conn)
        server = await conn.fetchval("SELECT version()")
    finally:
        await conn.close()
    return cat, {
        "catalogue": catalogue,
        "purchases": purchases,
        "stats": stats,
        "postgres": server,
    }


async def drop_database(admin_dsn: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    finally:
        await admin.close()


def mint_token(env: dict[str, str]) -> str:
    out = subprocess.run(
        [*entitlements_cli(), "token", "mint", "--sub", "u42", "--role", "plan:premium",
         "--ttl", "1h"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


# --- phases --------------------------------------------------------------------------


def half_load(
    wrk: str,
    base: str,
    script: Path,
    ids: Path,
    token: str,
    target: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Warm checks at about ``target`` requests/s: connections pausing ``pause`` ms each.

    A connection sends, waits for the answer, then waits ``pause`` ms: its rate
    is 1 / (latency + pause). One calibration run corrects for the latency.
    """
    pause = 10  # ms; wrk's delay() has millisecond resolution
    conns = max(args.threads, round(target * pause / 1000))
    calib = run_wrk(
        wrk, f"{base}/v1/check", script, threads=args.threads, connections=conns,
        seconds=3, args=[str(ids), token, "random", str(pause)],
    )  # fmt: skip
    conns = max(args.threads, round(conns * target / max(calib["rps"], 1.0)))
    result = run_wrk(
        wrk, f"{base}/v1/check", script, threads=args.threads, connections=conns,
        seconds=args.seconds, args=[str(ids), token, "random", str(pause)], quiet=True,
    )  # fmt: skip
    result["pause_ms"] = pause
    result["target_rps"] = round(target, 1)
    result["calibration"] = {"connections": calib["connections"], "rps": calib["rps"]}
    return result


def sanity(base: str, token: str, hot: list[str]) -> dict[str, Any]:
    """The answers are real decisions (not 4xx): look at one batch of the hot set."""
    headers = {"Authorization": f"Bearer {token}"}
    r = httpx.post(
        f"{base}/v1/check",
        json={"resource": hot[0], "action": "stream", "territory": "GB"},
        headers=headers,
        timeout=10,
    )
    r.raise_for_status()
    r = httpx.post(
        f"{base}/v1/check/batch",
        json={"checks": [{"resource": t, "action": "stream", "territory": "GB"} for t in hot]},
        headers=headers,
        timeout=30,
    )
    r.raise_for_status()
    reasons: dict[str, int] = {}
    for d in r.json()["results"]:
        reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
    return {"hot_set_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1]))}


# --- the gateway check (issue 14): its own phases, registered in run() by one line each ---

GATEWAY_TERRITORY = "X-Country"
GATEWAY_AUDIENCE = "https://player.bench"
GATEWAY_ROUTES = {
    "routes": [
        {"method": "GET", "path": "/tracks/{isrc}/stream", "resource": "track:{isrc}",
         "action": "stream"},
        {"method": "GET", "path": "/minted/tracks/{isrc}/stream", "resource": "track:{isrc}",
         "action": "stream", "token": {"audience": GATEWAY_AUDIENCE, "lifetime": 30}},
    ]
}  # fmt: skip

# What nginx auth_request sends (docs/gateway.md): a GET to the check with the original
# method and URI in headers, the client's Authorization and the CDN's country.
LUA_GATEWAY = r"""
-- args: ids file, token, path prefix ("" or "/minted")
local ids = {}
local headers = {}
local prefix = ""
local counter = 0

setup = function(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

init = function(args)
  for line in io.lines(args[1]) do ids[#ids + 1] = line:gsub("^track:", "") end
  headers["Authorization"] = "Bearer " .. args[2]
  headers["X-Original-Method"] = "GET"
  headers["X-Country"] = "GB"
  prefix = args[3] or ""
  math.randomseed(os.time() * 1000 + (tid or 1))
end

request = function()
  headers["X-Original-URI"] = prefix .. "/tracks/" .. ids[math.random(#ids)] .. "/stream"
  return wrk.format("GET", "/v1/gateway/check", headers)
end
"""


def gateway_env() -> dict[str, str]:
    """The cached server's gateway settings: the route table, wrk on loopback trusted."""
    return {
        "ENTITLEMENTS_GATEWAY_ROUTES": json.dumps(GATEWAY_ROUTES),
        "ENTITLEMENTS_GATEWAY_TRUSTED_PROXIES": "127.0.0.1, ::1",
        "ENTITLEMENTS_GATEWAY_TERRITORY_HEADER": GATEWAY_TERRITORY,
    }


def gateway_phases(
    wrk: str, base: str, work: Path, hot: list[str], token: str, args: argparse.Namespace,
    start: float,
) -> dict[str, Any]:  # fmt: skip
    """(g) the HTTP ceiling again, then at once (h) the warm gateway check and (i) the same
    with a per-request token minted on every answer — nginx's request shape, the hot
    tracks the token may stream (a refusal would be a 403: not what is measured here)."""
    r = httpx.post(
        f"{base}/v1/check/batch",
        json={"checks": [{"resource": t, "action": "stream", "territory": "GB"} for t in hot]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    r.raise_for_status()
    allowed = [t for t, d in zip(hot, r.json()["results"], strict=True) if d["allowed"]]
    if not allowed:
        raise RuntimeError("no hot track is allowed for the benchmark token")
    ids = work / "gateway-ids.txt"
    ids.write_text("\n".join(allowed) + "\n")
    script = work / "gateway.lua"
    script.write_text(LUA_GATEWAY + LUA_DONE)
    sample = httpx.get(
        f"{base}/v1/gateway/check",
        headers={"Authorization": f"Bearer {token}", "X-Original-Method": "GET",
                 "X-Original-URI": f"/minted/tracks/{allowed[0].removeprefix('track:')}/stream",
                 GATEWAY_TERRITORY: "GB"},
        timeout=10,
    )  # fmt: skip
    if sample.status_code != 200 or "x-entitlements-token" not in sample.headers:
        raise RuntimeError(f"the gateway check did not allow and mint: {sample.text[:300]}")
    t, c, secs = args.threads, args.connections, args.seconds
    url = f"{base}/v1/gateway/check"
    log(start, "(g)-(i) warm-up: the gateway check on the hot set")
    run_wrk(wrk, url, script, threads=t, connections=c, seconds=2, args=[str(ids), token, ""])
    ceiling_args = [str(work / "hot.txt"), token, "random"]
    log(start, "(g) ceiling again, (h) warm gateway check, (i) with a per-request token")
    out = {
        "g_ceiling": run_wrk(wrk, f"{base}/healthz", work / "ceiling.lua", threads=t,
                             connections=c, seconds=secs, args=ceiling_args, quiet=True),
        "h_gateway_warm": run_wrk(wrk, url, script, threads=t, connections=c, seconds=secs,
                                  args=[str(ids), token, ""], quiet=True),
        "i_gateway_token": run_wrk(wrk, url, script, threads=t, connections=c, seconds=secs,
                                   args=[str(ids), token, "/minted"], quiet=True),
    }  # fmt: skip
    ceiling = out["g_ceiling"]["rps"]
    for key in ("h_gateway_warm", "i_gateway_token"):
        out[key]["ratio_vs_ceiling"] = round(out[key]["rps"] / ceiling, 3)
    out["h_gateway_warm"]["target_met"] = (
        out["h_gateway_warm"]["ratio_vs_ceiling"] >= TARGETS["warm_vs_ceiling_min"]
    )
    return out


def gateway_rows(ph: dict[str, Any]) -> list[str]:
    """The gateway phases' rows of the table (none when they did not run)."""
    if "h_gateway_warm" not in ph:
        return []
    g, h, i = ph["g_ceiling"], ph["h_gateway_warm"], ph["i_gateway_token"]

    def row(name: str, x: dict[str, Any], ratio: str, target: str) -> str:
        return (
            f"| {name} | {x['connections']} | {x['rps']:,.0f} | {x['p50_ms']:.2f} "
            f"| {x['p99_ms']:.2f} | {x['max_ms']:.1f} | {ratio} | {target} "
            f"| {x['cpu_shares']['other']:.0%} |"
        )

    met = "yes" if h["target_met"] else "**no**"
    return [
        row("(g) ceiling again, just before (h) and (i)", g, "1.00", "-"),
        row("(h) warm gateway check (nginx shape)", h,
            f"{h['ratio_vs_ceiling']:.2f} of (g)", f"≥ 0.80 of (g): {met}"),
        row("(i) gateway check + per-request token", i,
            f"{i['ratio_vs_ceiling']:.2f} of (g)", "reported"),
    ]  # fmt: skip


def versions(wrk: str) -> dict[str, Any]:
    import fastapi
    import uvicorn

    out: dict[str, Any] = {"fastapi": fastapi.__version__, "uvicorn": uvicorn.__version__}
    for mod in ("uvloop", "httptools", "asyncpg", "redis", "orjson"):
        with contextlib.suppress(ImportError, AttributeError):
            out[mod] = __import__(mod).__version__
    wrk_v = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    out["wrk"] = (
        (wrk_v.stdout or wrk_v.stderr).splitlines()[0] if (wrk_v.stdout or wrk_v.stderr) else "?"
    )
    return out


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


# --- issue 15: the decision log's cost (separate functions, registered once in run()) ---


def decision_log_phases(
    wrk: str,
    env: dict[str, str],
    work: Path,
    args: argparse.Namespace,
    check_args: list[str],
    start: float,
) -> dict[str, Any]:
    """(j) warm ``POST /v1/check`` with the decision log writing every decision to a file,
    side by side with (b') the same server without it: both servers run at once (the idle
    one costs nothing), rounds alternate, each reports its best round. Goal: the log costs
    at most 10 % of the warm throughput."""
    logged_file = work / "decisions.jsonl"
    plain_port, logged_port = free_port(), free_port()
    redis = {"ENTITLEMENTS_REDIS_PREFIX": f"bench:{uuid.uuid4().hex[:8]}:"}
    plain = Server({**env, **redis}, plain_port, args.workers, work / "server-nolog.log")
    logged = Server(
        {**env, **redis, "ENTITLEMENTS_DECISION_LOG": str(logged_file)},
        logged_port,
        args.workers,
        work / "server-log.log",
    )
    t, c, secs = args.threads, args.connections, args.seconds
    plain.start()
    try:
        logged.start()
        try:
            for server in (plain, logged):
                run_wrk(wrk, f"{server.base}/v1/check", work / "check.lua", threads=t,
                        connections=c, seconds=3, args=check_args)  # fmt: skip
            rounds = []
            for i in range(args.rounds):
                log(start, f"(j) warm /v1/check without, then with the decision log: round {i + 1}")
                rounds.append(
                    {
                        key: run_wrk(wrk, f"{server.base}/v1/check", work / "check.lua",
                                     threads=t, connections=c, seconds=secs, args=check_args,
                                     quiet=True)
                        for key, server in (("plain", plain), ("logged", logged))
                    }
                )  # fmt: skip
            dropped = _decision_log_dropped(logged.base)
        finally:
            logged.stop()
    finally:
        plain.stop()
    best_plain = max((r["plain"] for r in rounds), key=lambda x: x["rps"])
    best_logged = max((r["logged"] for r in rounds), key=lambda x: x["rps"])
    lines = logged_file.read_bytes().count(b"\n") if logged_file.exists() else 0
    return {
        "b_warm_no_log": best_plain,
        "j_warm_decision_log": best_logged,
        "rounds": [
            {"plain_rps": r["plain"]["rps"], "logged_rps": r["logged"]["rps"]} for r in rounds
        ],
        "ratio": round(best_logged["rps"] / best_plain["rps"], 3),
        "cost": round(1 - best_logged["rps"] / best_plain["rps"], 3),
        "goal_cost_max": 0.10,
        "lines_written": lines,
        "log_bytes": logged_file.stat().st_size if logged_file.exists() else 0,
        "dropped": dropped,
    }


def _decision_log_dropped(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("entitlements_decision_log_dropped_total "):
            return float(line.split()[1])
    return 0.0


def decision_log_table(g: dict[str, Any]) -> list[str]:
    plain, logged = g["b_warm_no_log"], g["j_warm_decision_log"]
    return [
        "",
        "Decision log (issue 15): the same warm checks on two servers side by side, one"
        " writing every decision as a JSON line to a file",
        "",
        "| phase | req/s | p50 ms | p99 ms | vs. no log | goal |",
        "|---|---:|---:|---:|---|---|",
        f"| (b') warm POST /v1/check, log off | {plain['rps']:,.0f} | {plain['p50_ms']:.2f} "
        f"| {plain['p99_ms']:.2f} | 1.00 | - |",
        f"| (j) warm POST /v1/check, log to a file | {logged['rps']:,.0f} "
        f"| {logged['p50_ms']:.2f} | {logged['p99_ms']:.2f} | {g['ratio']:.2f} "
        f"| cost ≤ 10 %: {'yes' if g['cost'] <= g['goal_cost_max'] else '**no**'} |",
        "",
        f"- {g['lines_written']:,} lines ({g['log_bytes'] / 1e6:.1f} MB) written, "
        f"{g['dropped']:.0f} dropped (queue full); rounds (off / on req/s): "
        + ", ".join(f"{r['plain_rps']:,.0f} / {r['logged_rps']:,.0f}" for r in g["rounds"]),
    ]


def cached_phases(
    args: argparse.Namespace,
    wrk: str,
    server: Server,
    work: Path,
    token: str,
    hot: list[str],
    n_cold: int,
    result: dict[str, Any],
    phases: dict[str, Any],
    start: float,
) -> None:
    """Phases (a), (a'), (b), (d), (e), (f) on the cached server; each one that fails is
    recorded as such (``phases.run_phase``) and the others still run."""
    t, c, secs = args.threads, args.connections, args.seconds
    hot_ids, cold_ids = work / "hot.txt", work / "cold.txt"
    check_args = [str(hot_ids), token, "random"]
    run_phase(result, "sanity", lambda: sanity(server.base, token, hot))

    def warm_up() -> None:
        log(start, "warm-up: GET /healthz, and the hot set on both workers")
        run_wrk(wrk, f"{server.base}/healthz", work / "get.lua", threads=t, connections=c,
                seconds=2)  # fmt: skip
        run_wrk(wrk, f"{server.base}/v1/check", work / "check.lua", threads=t, connections=c,
                seconds=3, args=check_args)  # fmt: skip

    run_phase(result, "warm_up", warm_up)
    # (a) and (b) alternate, so a burst of someone else's work on the machine hits both
    # alike; each reports its best round (all rounds are in the JSON).
    rounds: list[dict[str, Any]] = []
    for i in range(args.rounds):
        log(start, f"(a) ceiling GET /healthz, then (b) warm /v1/check: round {i + 1}")
        one: dict[str, Any] = {}
        run_phase(one, "a", lambda: run_wrk(
            wrk, f"{server.base}/healthz", work / "ceiling.lua", threads=t, connections=c,
            seconds=secs, args=check_args, quiet=True))  # fmt: skip
        run_phase(one, "b", lambda: run_wrk(
            wrk, f"{server.base}/v1/check", work / "check.lua", threads=t, connections=c,
            seconds=secs, args=check_args, quiet=True))  # fmt: skip
        rounds.append(one)
    for key, name in (("a", "a_ceiling"), ("b", "b_warm")):
        done = [r[key] for r in rounds if not error_of(r[key])]
        phases[name] = (
            max(done, key=lambda x: x["rps"])
            if done
            else {"error": rounds[0][key]["error"] if rounds else "no rounds"}
        )
    log(start, "(a') the bare ceiling: a static GET /healthz (wrk's cheapest request)")
    run_phase(result, "a_static_ceiling", lambda: run_wrk(
        wrk, f"{server.base}/healthz", work / "get.lua", threads=t, connections=c,
        seconds=secs, quiet=True))  # fmt: skip
    result["rounds_a_b"] = [
        {k: {"rps": r[k]["rps"], "p99_ms": r[k]["p99_ms"], "cpu_shares": r[k]["cpu_shares"]}
         for k in ("a", "b")} | {"ratio": round(r["b"]["rps"] / r["a"]["rps"], 3)}
        for r in rounds
        if not error_of(r["a"]) and not error_of(r["b"])
    ]  # fmt: skip
    log(start, "(d) warm /v1/check at half of the max")
    if error_of(phases["b_warm"]):
        phases["d_half_load"] = failure("d_half_load", RuntimeError("(b) failed: no max to halve"))
    else:
        run_phase(phases, "d_half_load", lambda: half_load(
            wrk, server.base, work / "paced.lua", hot_ids, token,
            phases["b_warm"]["rps"] / 2, args))  # fmt: skip
    log(start, f"(e) batch of {BATCH} warm checks, one connection")

    def batch() -> dict[str, Any]:
        out = run_wrk(
            wrk, f"{server.base}/v1/check/batch", work / "batch.lua", threads=1,
            connections=1, seconds=min(secs, 6), args=[str(work / "batch.json"), token], quiet=True,
        )  # fmt: skip
        out["checks_per_request"] = BATCH
        return out

    run_phase(phases, "e_batch", batch)
    log(start, "(f) cold /v1/check, one connection, each track once")

    def cold() -> dict[str, Any]:
        out = run_wrk(
            wrk, f"{server.base}/v1/check", work / "check.lua", threads=1, connections=1,
            seconds=min(secs, 5), args=[str(cold_ids), token, "seq"], quiet=True,
        )  # fmt: skip
        if out["requests"] >= n_cold:
            raise RuntimeError("the cold pass ran out of untouched tracks: use more --tracks")
        return out

    run_phase(phases, "f_cold", cold)
    try:  # (g), (h), (i): the gateway check (issue 14)
        phases.update(gateway_phases(wrk, server.base, work, hot, token, args, start))
    except Exception as exc:
        phases["h_gateway"] = failure("h_gateway", exc)


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    wrk = ensure_wrk()
    admin_dsn = args.dsn
    redis_url: str | None
    if args.redis == "none":
        redis_url = None
    elif args.redis == "auto":
        redis_url = DEFAULT_REDIS if answers(DEFAULT_REDIS) else None
    else:
        redis_url = args.redis
    cat, data = asyncio.run(load_database(admin_dsn, args, start))
    work = Path(tempfile.mkdtemp(prefix="bench-http-"))
    result: dict[str, Any] = {}
    try:
        hot = [bc.track_id(t) for t in cat.hot[:HOT_SET]]
        n_cold = min(COLD_IDS, (args.tracks - HOT_SET) // 2)  # two disjoint cold lists
        cold = [bc.track_id(t) for t in reversed(cat.hot[-n_cold:])]
        cold2 = [bc.track_id(t) for t in reversed(cat.hot[-2 * n_cold : -n_cold])]
        (work / "hot.txt").write_text("\n".join(hot) + "\n")
        (work / "cold.txt").write_text("\n".join(cold) + "\n")
        (work / "cold2.txt").write_text("\n".join(cold2) + "\n")
        batch_body = {
            "checks": [{"resource": t, "action": "stream", "territory": "GB"} for t in hot[:BATCH]]
        }
        (work / "batch.json").write_text(json.dumps(batch_body, separators=(",", ":")))
        (work / "get.lua").write_text(LUA_GET)
        (work / "ceiling.lua").write_text(LUA_CEILING + LUA_DONE)
        (work / "check.lua").write_text(LUA_CHECK + LUA_DONE)
        (work / "paced.lua").write_text(LUA_CHECK + LUA_PACED + LUA_DONE)
        (work / "batch.lua").write_text(LUA_BATCH + LUA_DONE)
        hot_ids = work / "hot.txt"

        env = {k: v for k, v in os.environ.items() if not k.startswith("ENTITLEMENTS_")}
        env.update(
            {
                "ENTITLEMENTS_DATABASE_URL": db_dsn(admin_dsn, BENCH_DB),
                "ENTITLEMENTS_LOG_LEVEL": "warning",
            }
        )
        token = mint_token(env)
        cached_env = dict(env) | gateway_env()
        if redis_url:
            cached_env["ENTITLEMENTS_REDIS_URL"] = redis_url
            cached_env["ENTITLEMENTS_REDIS_PREFIX"] = f"bench:{uuid.uuid4().hex[:8]}:"
        port = free_port()
        t, c, secs = args.threads, args.connections, args.seconds
        check_args = [str(hot_ids), token, "random"]
        phases: dict[str, Any] = {}

        log(start, f"server: 2 workers, cache on, redis {redis_url or 'off'}")
        server = Server(cached_env, port, args.workers, work / "server-cached.log")
        startup: dict[str, Any] = {}
        # Each phase that fails is reported (phases.py) and the others still run.
        if run_phase(startup, "cached_s", server.start):
            try:
                cached_phases(args, wrk, server, work, token, hot, n_cold, result, phases, start)
            finally:
                server.stop()
        else:
            for name in ("a_ceiling", "b_warm", "d_half_load", "e_batch", "f_cold"):
                phases[name] = {
                    "error": f"the server did not start: {startup['cached_s']['error']}"
                }

        log(start, "(c) uncached baseline: server restarted with ENTITLEMENTS_CACHE_SIZE=0")
        uncached_env = {**env, "ENTITLEMENTS_CACHE_SIZE": "0"}
        server = Server(uncached_env, port, args.workers, work / "server-uncached.log")

        def uncached() -> dict[str, Any]:
            startup["uncached_s"] = server.start()
            run_wrk(wrk, f"{server.base}/v1/check", work / "check.lua", threads=t, connections=c,
                    seconds=2, args=check_args)  # fmt: skip
            return run_wrk(
                wrk, f"{server.base}/v1/check", work / "check.lua", threads=t, connections=c,
                seconds=secs, args=check_args, quiet=True,
            )  # fmt: skip

        try:
            run_phase(phases, "c_uncached", uncached)
        finally:
            server.stop()

        run_phase(result, "decision_log", lambda: decision_log_phases(
            wrk, cached_env, work, args, check_args, start))  # fmt: skip
        experiment: dict[str, Any] = {}
        if args.gc_experiment:
            log(start, "experiment: the cached server with gc.freeze() after start-up")
            gc_env = {**cached_env, "PYTHONPATH": str(Path(__file__).resolve().parent)}
            if args.workers > 1:  # as `entitlements serve` does for several workers
                (work / "metrics").mkdir()
                gc_env["PROMETHEUS_MULTIPROC_DIR"] = str(work / "metrics")
            if redis_url:
                gc_env["ENTITLEMENTS_REDIS_PREFIX"] = f"bench:{uuid.uuid4().hex[:8]}:"
            server = Server(
                gc_env, port, args.workers, work / "server-gc.log",
                command=gc_frozen_command(port, args.workers),
            )  # fmt: skip
            startup["gc_frozen_s"] = server.start()
            try:
                run_wrk(wrk, f"{server.base}/v1/check", work / "check.lua", threads=t,
                        connections=c, seconds=3, args=check_args)  # fmt: skip
                experiment["b_warm"] = run_wrk(
                    wrk, f"{server.base}/v1/check", work / "check.lua", threads=t,
                    connections=c, seconds=secs, args=check_args, quiet=True,
                )  # fmt: skip
                experiment["e_batch"] = run_wrk(
                    wrk, f"{server.base}/v1/check/batch", work / "batch.lua", threads=1,
                    connections=1, seconds=min(secs, 6), args=[str(work / "batch.json"), token],
                    quiet=True,
                )  # fmt: skip
                experiment["f_cold"] = run_wrk(
                    wrk, f"{server.base}/v1/check", work / "check.lua", threads=1,
                    connections=1, seconds=min(secs, 5), args=[str(work / "cold2.txt"), token,
                    "seq"], quiet=True,
                )  # fmt: skip
            finally:
                server.stop()

        a, b, cc, d, e, f = (
            phases.get(k) or {"error": "not run"}
            for k in ("a_ceiling", "b_warm", "c_uncached", "d_half_load", "e_batch", "f_cold")
        )

        def ratio(x: dict[str, Any], y: dict[str, Any], digits: int, scale: int = 1) -> Any:
            """x/y of two phases' req/s; None when either failed."""
            if error_of(x) or error_of(y) or not y.get("rps"):
                return None
            return round(scale * x["rps"] / y["rps"], digits)

        def below(x: dict[str, Any], limit: float) -> bool | None:
            return None if error_of(x) else bool(x["p99_ms"] < limit)

        ratios = {
            "warm_vs_ceiling": ratio(b, a, 3),
            "warm_vs_uncached": ratio(b, cc, 2),
            "uncached_vs_ceiling": ratio(cc, a, 3),
            "half_load_achieved_vs_warm_max": ratio(d, b, 3),
            "batch_checks_per_s_vs_warm_single": ratio(e, b, 2, BATCH),
        }
        verdicts = {
            "warm_vs_ceiling": None
            if ratios["warm_vs_ceiling"] is None
            else ratios["warm_vs_ceiling"] >= TARGETS["warm_vs_ceiling_min"],
            "half_load_p99": below(d, TARGETS["half_load_p99_ms_max"]),
            "batch_p99": below(e, TARGETS["batch_p99_ms_max"]),
            "cold_p99": below(f, TARGETS["cold_p99_ms_max"]),
            "no_errors": all(
                p["non_2xx"] == 0 and p["errors"]["timeout"] == 0
                for p in phases.values()
                if not error_of(p)
            ),
        }
        result.update(
            {
                "benchmark": "http",
                "machine": {
                    "platform": platform.platform(),
                    "cpu": cpu_model(),
                    "cpu_count": os.cpu_count(),
                    "python": platform.python_version(),
                    "postgres": data["postgres"].split(" on ")[0],
                    "redis": redis_url,
                    "load_generator": "wrk on the same machine (shares the cores)",
                    "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
                    "versions": versions(wrk),
                },
                "params": {
                    "tracks": args.tracks,
                    "grants": args.grants,
                    "workers": args.workers,
                    "wrk_threads": t,
                    "wrk_connections": c,
                    "seconds": secs,
                    "hot_set": HOT_SET,
                    "batch": BATCH,
                    "token": "EdDSA access token, sub u42, role plan:premium",
                    "seed": args.seed,
                },
                "data": {k: v for k, v in data.items() if k != "postgres"},
                "server_startup_s": startup,
                "phases": phases,
                "ratios": ratios,
                "targets": TARGETS,
                "verdicts": verdicts,
                "experiment_gc_freeze": experiment or None,
            }
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.keep:
            log(start, f"kept database {BENCH_DB}")
        else:
            asyncio.run(drop_database(admin_dsn))
    result["runtime_s"] = round(time.perf_counter() - start, 1)
    return result


def table(r: dict[str, Any]) -> str:
    m, p, ph, ra, v = r["machine"], r["params"], r["phases"], r["ratios"], r["verdicts"]

    def ok(flag: bool | None) -> str:
        return "n/a" if flag is None else "yes" if flag else "**no**"

    def num(value: Any, spec: str, suffix: str = "") -> str:
        return "—" if value is None else f"{value:{spec}}{suffix}"

    def row(name: str, x: dict[str, Any], ratio: str, target: str) -> str:
        if (error := error_of(x)) is not None:
            return f"| {name} | — | failed: {error} | — | — | — | — | {target} | — |"
        return (
            f"| {name} | {x['connections']} | {x['rps']:,.0f} | {x['p50_ms']:.2f} "
            f"| {x['p99_ms']:.2f} | {x['max_ms']:.1f} | {ratio} | {target} "
            f"| {x['cpu_shares']['other']:.0%} |"
        )

    lines = [
        f"HTTP benchmark — {p['workers']} uvicorn workers, {m['cpu_count']} CPUs ({m['cpu']}), "
        f"wrk -t{p['wrk_threads']} on the same machine, {p['seconds']} s per phase; "
        f"{r['data']['stats']['grants']:,} grants, {r['data']['stats']['tracks']:,} tracks; "
        f"{m['postgres']}; Redis L2: {m['redis'] or 'off'}",
        "",
        "| phase | connections | req/s | p50 ms | p99 ms | max ms | ratio | target met "
        "| other work's CPU |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|",
        row("(a) ceiling: GET /healthz, loaded like (b)", ph["a_ceiling"], "1.00", "-"),
        row("(b) warm POST /v1/check", ph["b_warm"],
            f"{num(ra['warm_vs_ceiling'], '.2f')} of (a)",
            f"≥ 0.80 of (a): {ok(v['warm_vs_ceiling'])}"),
        row("(c) uncached POST /v1/check (CACHE_SIZE=0)", ph["c_uncached"],
            f"(b) is {num(ra['warm_vs_uncached'], '.2f')}x (c)", "-"),
        row("(d) warm at ~half load (paced)", ph["d_half_load"],
            f"{num(ra['half_load_achieved_vs_warm_max'], '.2f')} of (b)",
            f"p99 < 5 ms: {ok(v['half_load_p99'])}"),
        row(f"(e) batch of {p['batch']} warm checks", ph["e_batch"],
            f"{num(p['batch'] * ph['e_batch']['rps'] if 'rps' in ph['e_batch'] else None, ',.0f')}"
            " checks/s",
            f"p99 < 25 ms: {ok(v['batch_p99'])}"),
        row("(f) cold POST /v1/check (sequential)", ph["f_cold"], "-",
            f"p99 < 10 ms: {ok(v['cold_p99'])}"),
    ]  # fmt: skip
    lines += gateway_rows(ph)
    ex = r.get("experiment_gc_freeze")
    if ex and not any(error_of(ph[k]) for k in ("b_warm", "e_batch", "f_cold")):
        lines += [
            "",
            "Experiment, not the product: the same server with `gc.collect(); gc.freeze()` once "
            "each worker has started (no other change)",
            "",
            "| phase | connections | req/s | p50 ms | p99 ms | max ms | vs. the product "
            "| other work's CPU |",
            "|---|---:|---:|---:|---:|---:|---|---:|",
        ]
        for key, name in (
            ("b_warm", "(b) warm POST /v1/check"),
            ("e_batch", f"(e) batch of {p['batch']} warm checks"),
            ("f_cold", "(f) cold POST /v1/check (sequential)"),
        ):
            x, base = ex[key], ph[key]
            lines.append(
                f"| {name} | {x['connections']} | {x['rps']:,.0f} | {x['p50_ms']:.2f} "
                f"| {x['p99_ms']:.2f} | {x['max_ms']:.1f} | p99 {base['p99_ms']:.2f} → "
                f"{x['p99_ms']:.2f} ms, req/s x{x['rps'] / base['rps']:.2f} "
                f"| {x['cpu_shares']['other']:.0%} |"
            )
    log_result = r.get("decision_log")
    if log_result and error_of(log_result):
        lines += ["", f"Decision log (j): failed: {error_of(log_result)}"]
    elif log_result:
        lines += decision_log_table(log_result)
    rounds = ", ".join(
        f"{x['a']['rps']:,.0f} / {x['b']['rps']:,.0f} = {x['ratio']:.2f}" for x in r["rounds_a_b"]
    )
    d, static = ph["d_half_load"], r.get("a_static_ceiling") or {"error": "not run"}
    sanity_note = (
        f"failed: {error_of(r['sanity'])}"
        if error_of(r.get("sanity") or {"error": "not run"})
        else r["sanity"]["hot_set_reasons"]
    )
    half = (
        f"failed: {error_of(d)}"
        if error_of(d)
        else f"aimed at {d['target_rps']:,.0f} req/s with connections pausing "
        f"{d['pause_ms']} ms between requests (wrk has no rate limit), "
        f"achieved {d['rps']:,.0f} req/s"
    )
    bare = (
        f"failed: {error_of(static)}"
        if error_of(static)
        else f"{static['rps']:,.0f} req/s, p99 {static['p99_ms']:.2f} ms"
        + (
            ""
            if error_of(ph["b_warm"])
            else f"; (b) is {ph['b_warm']['rps'] / static['rps']:.2f} of it"
        )
    )
    lines += [
        "",
        f"- (a)/(b) alternated in {len(r['rounds_a_b'])} rounds, best of each shown; per round "
        f"ceiling / warm req/s = ratio: {rounds}",
        "- other work's CPU: the share of the machine's CPU used during the phase by anything "
        "but the server, Postgres, Redis and wrk (other people's tests on a shared box); "
        "figures from phases where it is high understate the service",
        f"- errors (non-2xx, timeouts) in any phase: {'none' if v['no_errors'] else 'SOME'}; "
        f"hot-set decisions: {sanity_note}",
        f"- (d) {half}",
        f"- (a') the bare ceiling, a static GET /healthz (wrk's cheapest request, no Lua): {bare}",
        f"- load avg at the end {m['loadavg_at_end']}; runtime {r['runtime_s']} s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("ENTITLEMENTS_BENCH_DATABASE_URL", DEFAULT_DSN),
        help="a Postgres server to create the benchmark database on (admin DSN)",
    )
    parser.add_argument(
        "--redis", default="auto", help="auto (127.0.0.1:6379 if it answers), none, or a URL"
    )
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--grants", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measured phase")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections at max load")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="alternating (a)/(b) rounds")
    parser.add_argument(
        "--gc-experiment",
        dest="gc_experiment",
        action="store_true",
        help="also run the old experiment (gc.freeze() after start-up, now in the product)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/http.json"))
    args = parser.parse_args(argv)
    result = run(args)
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    return report_failures({**result["phases"], **result["server_startup_s"], **result})


if __name__ == "__main__":
    raise SystemExit(main())
