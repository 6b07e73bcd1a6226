"""The decision log (issue 15): one JSON line per decision, never the token, never a wait.

Each test runs the real app (real Postgres) with ``ENTITLEMENTS_DECISION_LOG`` pointing
at a file or a FIFO, and reads what a security team would read: the lines, and the
dropped-lines counter on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from support import Api, running, settings_for

from entitlements.service.decisions import DECISION_LOG_KEYS
from entitlements.settings import Settings
from entitlements.store.postgres import PostgresStore

GRANT = {
    "subject": "role:plan:premium",
    "resource": "label:acme",
    "actions": ["stream"],
    "territories": ["GB"],
}


async def dropped(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    found = re.search(r"^entitlements_decision_log_dropped_total (\S+)$", text, re.M)
    assert found, "the dropped counter is exported"
    return float(found.group(1))


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_allowed_and_denied_decisions_are_logged_without_the_token(
    clean: PostgresStore, pg_dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "decisions.jsonl"
    async with running(settings_for(pg_dsn, decision_log=str(path))) as (client, state):
        api = Api(client, state)
        await api.put_resource("track:t1", ["label:acme"])
        await api.put_grant("g-premium", **GRANT)
        alice = api.token("alice", roles=("plan:premium",))
        bob = api.token("bob", roles=("plan:free",))
        ask = {"resource": "track:t1", "action": "stream", "territory": "GB"}
        yes = await client.post(
            "/v1/check", json=ask, headers={**api.headers(alice), "X-Request-ID": "req-1"}
        )
        no = await client.post(
            "/v1/check",
            json={**ask, "at": "2026-03-01T12:00:00Z"},
            headers={**api.headers(bob), "X-Request-ID": "bad id\nforged"},
        )
        batch = await client.post(
            "/v1/check/batch",
            json={"checks": [ask, {**ask, "territory": "FR"}]},
            headers={**api.headers(alice), "X-Request-ID": "req-batch"},
        )
        assert (yes.status_code, no.status_code, batch.status_code) == (200, 200, 200)
        assert yes.json()["allowed"] and not no.json()["allowed"]
    # Leaving the app flushed the log.
    raw = path.read_bytes()
    assert alice.encode() not in raw and bob.encode() not in raw
    assert alice.split(".")[2].encode() not in raw  # not even the signature
    logged = lines(path)
    assert [list(line) for line in logged] == [list(DECISION_LOG_KEYS)] * 4
    allowed, denied, batch_gb, batch_fr = logged
    assert allowed | {"time": None, "at": None, "latency_us": None, "revision": None} == {
        "time": None,
        "request_id": "req-1",
        "issuer": "https://entitlements.test",
        "subject": "alice",
        "roles": ["plan:premium"],
        "resource": "track:t1",
        "action": "stream",
        "territory": "GB",
        "at": None,
        "allowed": True,
        "reason": "granted",
        "grant": "g-premium",
        "revision": None,
        "cached": False,  # the first check of a fresh worker reads Postgres
        "latency_us": None,
    }
    assert allowed["at"] == allowed["time"] and allowed["time"].endswith("Z")
    assert isinstance(allowed["latency_us"], int) and allowed["latency_us"] >= 0
    assert allowed["revision"] == yes.json()["revision"]
    assert denied["request_id"] is None  # a request id that could forge a line is left out
    assert (denied["subject"], denied["allowed"], denied["reason"], denied["grant"]) == (
        "bob",
        False,
        "not_licensed",
        None,
    )
    assert denied["at"] == "2026-03-01T12:00:00.000000Z"
    assert [batch_gb["request_id"], batch_fr["request_id"]] == ["req-batch"] * 2
    assert (batch_gb["allowed"], batch_fr["allowed"], batch_fr["reason"]) == (
        True,
        False,
        "territory",
    )
    assert batch_gb["cached"] is True  # answered from the cache the first check filled


async def test_sampled_allows_still_log_every_deny(
    clean: PostgresStore, pg_dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "decisions.jsonl"
    settings = settings_for(pg_dsn, decision_log=str(path), decision_log_sample_allows=0.0)
    async with running(settings) as (client, state):
        api = Api(client, state)
        await api.put_grant("g-premium", **GRANT)
        alice = api.token("alice", roles=("plan:premium",))
        for territory in ("GB", "FR", "GB", "FR"):
            await api.check(alice, resource="label:acme", action="stream", territory=territory)
    assert [line["territory"] for line in lines(path)] == ["FR", "FR"]


def test_settings_bound_the_log() -> None:
    with pytest.raises(ValueError, match="decision_log_sample_allows"):
        Settings(decision_log_sample_allows=1.5)
    with pytest.raises(ValueError, match="decision_log_queue"):
        Settings(decision_log_queue=0)
    assert Settings().decision_log == "off"


async def test_a_stalled_log_drops_and_counts_and_never_slows_a_check(
    clean: PostgresStore, pg_dsn: str, tmp_path: Path
) -> None:
    """The log writes to a FIFO whose reader reads nothing: once the pipe's buffer is
    full the writer stalls for real, the small queue fills, and checks go on."""
    fifo = tmp_path / "decisions.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer open; never reads
    checks = 400
    try:
        settings = settings_for(pg_dsn, decision_log=str(fifo), decision_log_queue=8)
        async with running(settings) as (client, state):
            api = Api(client, state)
            await api.put_grant("g-premium", **GRANT)
            alice = api.headers(api.token("alice", roles=("plan:premium",)))
            before = await dropped(client)
            ask = {"resource": "label:acme", "action": "stream", "territory": "GB"}
            slowest = 0.0

            async def load() -> None:
                nonlocal slowest
                for _ in range(checks):
                    start = time.perf_counter()
                    response = await client.post("/v1/check", json=ask, headers=alice)
                    slowest = max(slowest, time.perf_counter() - start)
                    assert response.status_code == 200
                    # In process, a cached check never waits on a socket: give the loop
                    # the turn a served request's I/O would (the writer runs, then stalls).
                    await asyncio.sleep(0)

            await asyncio.wait_for(load(), 60)
            lost = await dropped(client) - before
            assert lost > 0, "the stalled log dropped lines and counted them"
            assert slowest < 2.0, f"a check waited {slowest:.3f}s for the log"
            # Now someone reads: what was queued is written at shutdown.
            received = bytearray()
            os.set_blocking(reader, True)

            def drain() -> None:
                while chunk := os.read(reader, 65536):
                    received.extend(chunk)

            draining = threading.Thread(target=drain, daemon=True)
            draining.start()
        draining.join(10)
        assert not draining.is_alive()
        written = received.count(b"\n")
        assert written + lost == checks, (written, lost)
        assert all(orjson.loads(line)["allowed"] for line in received.splitlines())
    finally:
        os.close(reader)
