"""The ports: what the use cases need from storage and the cache, as ``typing.Protocol``s.

The service depends on these shapes only; the adapters satisfy them structurally
and never import this module (dependencies point down)::

    port                  adapter (Postgres: entitlements.store)     used by
    CheckReads            store.checks.PostgresCheckReads            CheckService, the grant sources
    Catalog               store.grants.PostgresCatalog               admin writes and reads
    AuditLog              store.audit.PostgresAuditLog               AdminService (issue 15)
    ChangeFeed            store.changes.PostgresChangeLog            the change feed, start-up
    KeyStore              store.keys.PostgresKeyStore                TokenService
    ExchangedTokenStore   store.tokens.PostgresTokenStore            TokenService
    ImportStore           store.imports.PostgresImportStore          ImportService
      ImportSession       store.import_writer.PostgresImportSession
        DdexWriter        store.ddex.PostgresDdexWriter              DdexImport (service.ddex_import)
    GrantSource           cache.source.CachedGrantSource,            CheckService
                          service.checks.StoreGrantSource (uncached)
    GrantCache            cache.redis.RedisGrantCache (L2)           CachedGrantSource
    DecisionLog           decision_log.DecisionLogWriter             AccessService (issue 15)

``store.postgres.PostgresStore`` is CheckReads, Catalog and ChangeFeed at once.
The values they pass are plain: domain types, ``store.results`` and the import's
rows (``store.import_rows``, ``store.ddex_rows``), none of which loads a driver.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from entitlements.domain.model import CheckData, Grant, Resource
from entitlements.keys.signing import Algorithm, SigningKey
from entitlements.service.decisions import DecisionRecord
from entitlements.store.ddex_rows import AppliedBatch, KnownRelease, ReleaseEntry
from entitlements.store.import_rows import GrantRows, ImportTally, Prepared, ResourceRow
from entitlements.store.results import AuditEntry, ChangePage, WriteResult

# --- checks -------------------------------------------------------------------------


class CheckReads(Protocol):
    """The reads behind checks and listings, each one snapshot with its revision.

    ``min_revision``: the snapshot must hold at least this revision (a store with read
    replicas reads one that has applied it, else the primary; the primary always has
    it, or the revision names no write and the caller refuses it).
    """

    async def load_check(
        self, resource: str, subjects: Sequence[str], *, min_revision: int | None = None
    ) -> CheckData:
        """The resource's ancestors and every grant on them for these subjects."""

    async def load_checks(
        self,
        resources: Sequence[str],
        subjects: Sequence[str] | None,
        *,
        min_revision: int | None = None,
    ) -> tuple[int, dict[str, CheckData]]:
        """``load_check`` for many resources at once; ``subjects=None``: every grant
        that is not one user's (the resource views the cache keeps)."""

    async def load_user_grants(self, user_id: str, *, min_revision: int | None = None) -> CheckData:
        """Every grant whose subject is this one user."""

    async def listing_candidates(
        self,
        subjects: Sequence[str],
        action: str,
        *,
        type_: str | None,
        after: str | None,
        limit: int,
    ) -> list[str]:
        """A keyset page of the resources an allow grant of these subjects reaches."""


class GrantSource(Protocol):
    """Where checks get their candidate grants: the store, or a cache in front of it."""

    async def check_data(
        self, resource: str, user: str, subjects: frozenset[str], min_revision: int | None
    ) -> CheckData: ...

    async def check_data_many(
        self,
        resources: Sequence[str],
        user: str,
        subjects: frozenset[str],
        min_revision: int | None,
    ) -> dict[str, CheckData]: ...


class GrantCache(Protocol):
    """A shared cache of grant sets (L2), keyed by kind (``resource``/``user``) and key.

    Best effort: a failure is a miss (``None``) or a write not done, never an error.
    What it returns is validated by the caller against the change index.
    """

    async def get_many(self, kind: str, keys: Sequence[str]) -> list[CheckData | None]: ...

    async def put_many(self, kind: str, items: Sequence[tuple[str, CheckData]]) -> None: ...

    async def close(self) -> None: ...


class DecisionLog(Protocol):
    """Where decisions are recorded (issue 15). Neither method may block or fail: a
    record that cannot be kept is dropped and counted by the log itself."""

    def keep(self, allowed: bool) -> bool:
        """Whether to record a decision like this one (denies always; allows sampled)."""

    def offer(self, record: DecisionRecord) -> None:
        """Queue ``record`` for writing, or drop and count it when the queue is full."""


# --- the catalogue and its changes ------------------------------------------------------


class Catalog(Protocol):
    """Grants and resources, one at a time. Writes return the revision after them."""

    async def put_grant(self, grant: Grant, *, actor: str = ...) -> WriteResult:
        """Create or replace; a change is audited under ``actor`` (before and after)."""

    async def get_grant(self, grant_id: str) -> Grant:
        """``NotFoundError`` if there is none."""

    async def delete_grant(self, grant_id: str, *, actor: str = ...) -> int:
        """The revision after the delete (audited under ``actor``); ``NotFoundError`` if
        there is none."""

    async def list_grants(
        self,
        *,
        resource: str | None = None,
        subject: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[Grant]: ...

    async def put_resource(self, resource: Resource, *, actor: str = ...) -> WriteResult:
        """``InvalidInputError`` for parents that close a cycle or a path too deep; a
        change is audited under ``actor`` (the parents before and after)."""

    async def get_resource(self, resource_id: str) -> Resource:
        """``NotFoundError`` if there is none."""


class AuditLog(Protocol):
    """The record of admin changes (issue 15), written by the stores in each change's
    own transaction; read newest first."""

    async def audit_entries(
        self,
        *,
        actor: str | None = None,
        resource: str | None = None,
        grant: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """A keyset page, newest first (``before_id``: entries older than that one)."""


class ChangeFeed(Protocol):
    """The revision and what changed after one."""

    async def revision(self) -> int: ...

    async def changes_since(self, revision: int, limit: int = 1000) -> ChangePage: ...


# --- tokens ---------------------------------------------------------------------------


class KeyStore(Protocol):
    """The service's signing keys and their lifecycle (one ``active``)."""

    async def ensure_active(self) -> SigningKey:
        """The active key, created if there is none yet."""

    async def rotate(
        self, publish_for: float, alg: Algorithm | None = None, *, actor: str = ...
    ) -> SigningKey:
        """A new active key; the old one stays published for ``publish_for`` seconds
        (audited under ``actor``)."""

    async def retire_expired(self) -> int:
        """Retire the published keys past their ``publish_until``; returns how many."""

    async def list(self, *, include_retired: bool = False) -> builtins.list[SigningKey]:
        """The active and published keys, newest first."""


class ExchangedTokenStore(Protocol):
    """The record of every exchanged token, and its revocation."""

    async def record_exchange(
        self,
        jti: str,
        *,
        subject: str,
        actor: str,
        audience: str,
        scope: str,
        expires_at: datetime,
    ) -> None: ...

    async def revoke(
        self, jti: str, authorize: Callable[[str, str], None], *, actor: str = ...
    ) -> int:
        """Revoke once ``authorize(subject, actor)`` has not raised; the revision after
        (unchanged if revoked already). ``NotFoundError`` for an unknown ``jti``. The
        revocation is audited under the keyword ``actor`` (who revoked it)."""

    async def revoked_jtis(self) -> set[str]:
        """The revoked tokens that may still be presented."""


# --- imports ------------------------------------------------------------------------


class DdexWriter(Protocol):
    """DDEX ERN releases, applied inside one import's transaction (replace-per-release)."""

    async def known(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], KnownRelease]:
        """The stored releases these (sender, release id) pairs name, and when each was
        last applied."""

    async def apply(self, entries: Sequence[ReleaseEntry], key_limit: int) -> AppliedBatch:
        """Apply a batch of entries that name different stored releases: each replaces
        its release's grants and track links (a purge removes them); what changed, by
        message, with up to ``key_limit`` change-feed entries per kind of change."""


class ImportSession(Protocol):
    """One import's transaction: all of it lands, or none."""

    async def begin(self, lock_wait: float) -> int | None:
        """Wait for any other import; the revision this one expects (None: still busy)."""

    async def write_grants(self, rows: GrantRows, prepared: Prepared, tally: ImportTally) -> None:
        """One batch of grant rows (rendered with ``row_tail`` of ``begin``'s revision)."""

    async def write_resources(self, rows: list[ResourceRow], tally: ImportTally) -> None: ...

    async def replace_source(self, source: str, key_limit: int) -> tuple[int, list[str]]:
        """Delete the source's grants the file does not name: how many, and change keys."""

    async def graph_problems(self, limit: int) -> list[tuple[int, str]]:
        """(line, message) of resources that would break the graph's limits."""

    def ddex(self) -> DdexWriter:
        """DDEX releases, in this transaction (after ``begin``)."""

    async def current_revision(self) -> int: ...

    async def bump(self, changes: Iterable[tuple[str, str]]) -> int:
        """Advance the revision once, recording ``changes``; the revision reached."""

    async def commit(self, status: str, finished_at: datetime, report: str) -> None: ...

    async def end(self, status: str, finished_at: datetime, report: str) -> None:
        """Roll back, and record how the import ended (failed or dry run)."""


class ImportStore(Protocol):
    """Imports: their transaction, and their record (``report``: its JSON text)."""

    def session(
        self,
        import_id: str,
        *,
        format: str,
        source: str | None,
        created_by: str,
        started_at: datetime,
        report: str,
        timeout: float,
    ) -> AbstractAsyncContextManager[ImportSession]: ...

    async def report(self, import_id: str) -> dict[str, Any]:
        """The stored report; ``NotFoundError`` for an unknown import."""


__all__ = [
    "AuditLog",
    "Catalog",
    "ChangeFeed",
    "CheckReads",
    "DdexWriter",
    "DecisionLog",
    "ExchangedTokenStore",
    "GrantCache",
    "GrantSource",
    "ImportSession",
    "ImportStore",
    "KeyStore",
]
