"""Prometheus metrics (module-level, as prometheus-client intends: one registry per process).

With several uvicorn workers, ``entitlements serve`` sets PROMETHEUS_MULTIPROC_DIR
before the workers start, and ``/metrics`` aggregates every worker's files.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

REQUEST_SECONDS = Histogram(
    "entitlements_request_seconds",
    "HTTP request latency by route template and status class",
    ["route", "method", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CACHE_LOOKUPS = Counter(
    "entitlements_cache_lookups_total",
    "Grant-set look-ups by cache layer (l1, l2) and result (hit, miss, stale)",
    ["layer", "result"],
)
# Children used on every check, looked up once (a .labels() call costs microseconds).
L1_HIT = CACHE_LOOKUPS.labels("l1", "hit")
L1_MISS = CACHE_LOOKUPS.labels("l1", "miss")
L2_HIT = CACHE_LOOKUPS.labels("l2", "hit")
L2_MISS = CACHE_LOOKUPS.labels("l2", "miss")

DB_LOADS = Counter("entitlements_db_loads_total", "Grant sets read from Postgres", ["kind"])
INVALIDATIONS = Counter(
    "entitlements_invalidations_total", "Change-feed entries applied to the caches", ["kind"]
)
CHANGES_PRUNED = Counter(
    "entitlements_changes_pruned_total", "Change-log entries deleted after their retention"
)
BACKEND_ERRORS = Counter(
    "entitlements_backend_errors_total", "Failed calls to a backing store", ["backend", "op"]
)

# --- issue 15: the decision log ---
DECISION_LOG_DROPPED = Counter(
    "entitlements_decision_log_dropped_total",
    "Decision-log lines dropped because the log's queue was full (or its target failed);"
    " alert on any increase: a dispute needs every decision",
)

# --- read replicas (issue 16) ---
REPLICA_UP = Gauge(
    "entitlements_replica_up",
    "1 while a read replica answers the probe, 0 while it is skipped as down",
    ["replica"],
    multiprocess_mode="min",
)
REPLICA_LAG = Gauge(
    "entitlements_replica_lag_seconds",
    "Seconds since the replica was last seen holding every write (-1: down); above the"
    " staleness bound it is skipped",
    ["replica"],
    multiprocess_mode="max",
)
READ_TARGET = Counter(
    "entitlements_check_reads_total",
    "Check and listing reads by where they went (replica, primary, or primary after a"
    " replica failed or was found behind)",
    ["target"],
)


def render() -> tuple[bytes, str]:
    """The exposition text for ``/metrics`` (aggregated across workers when multiprocess)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
