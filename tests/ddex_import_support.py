"""Helpers for the DDEX import tests: import messages through the service, ask checks.

Messages are bytes (``ddex_support.ern``) or files (``tests/ddex/``); checks go
through the service's ``CheckService`` straight to Postgres (no cache), at the
instant the test names.
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import Any

from entitlements.ddex import DEFAULT_MAPPING, DdexMapping, mapping_from_dict
from entitlements.domain.model import Decision
from entitlements.service.checks import CheckRequest, CheckService, StoreGrantSource
from entitlements.service.imports import (
    ImportLimits,
    ImportOptions,
    ImportReport,
    ImportService,
    MessageSource,
)
from entitlements.store.imports import PostgresImportStore
from entitlements.store.postgres import PostgresStore

HERE = Path(__file__).parent / "ddex"
DDEX = ImportOptions(format="ddex")


def source(message: bytes | Path, name: str | None = None) -> MessageSource:
    if isinstance(message, Path):
        return MessageSource(name or message.name, path=message, size=message.stat().st_size)
    return MessageSource(name or "message.xml", file=io.BytesIO(message), size=len(message))


async def import_ddex(
    store: PostgresStore,
    *messages: bytes | Path | MessageSource,
    mapping: DdexMapping | dict[str, Any] = DEFAULT_MAPPING,
    dry_run: bool = False,
    limits: ImportLimits | None = None,
) -> ImportReport:
    """One import of these messages (several: one transaction, in created order)."""
    if isinstance(mapping, dict):
        mapping = mapping_from_dict(mapping)
    service = ImportService(PostgresImportStore(store.pool), limits, ddex_mapping=mapping)
    sources = [
        m if isinstance(m, MessageSource) else source(m, f"m{i}.xml")
        for i, m in enumerate(messages, start=1)
    ]
    return await service.run_ddex(sources, ImportOptions(format="ddex", dry_run=dry_run))


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def ask(
    store: PostgresStore,
    roles: str | tuple[str, ...],
    resource: str,
    action: str,
    territory: str,
    at: str,
) -> Decision:
    """The decision for a user holding ``roles`` (``ddex:SubscriptionModel``…)."""
    roles = (roles,) if isinstance(roles, str) else roles
    service = CheckService(StoreGrantSource(store), store)
    return await service.check(
        CheckRequest("alice", roles, resource, action, territory, instant(at))
    )


async def reason(
    store: PostgresStore,
    roles: str | tuple[str, ...],
    resource: str,
    action: str,
    territory: str,
    at: str,
) -> str:
    return (await ask(store, roles, resource, action, territory, at)).reason


async def count(store: PostgresStore, table: str = "grants") -> int:
    return int(await store.pool.fetchval(f"SELECT count(*) FROM {table}"))


def counts(report: ImportReport) -> tuple[int, int, int, int, int]:
    c = report.counts
    return (c.rows, c.inserted, c.updated, c.unchanged, c.deleted)


def lines(report: ImportReport) -> list[dict[str, Any]]:
    assert report.ddex is not None
    result: list[dict[str, Any]] = report.to_json()["ddex"]["lines"]
    return result
