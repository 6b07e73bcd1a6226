"""Grant and resource administration: the writes and reads of ``entitlements:admin``.

Every write is validated by the domain, stored, and then applied to this
process's caches before it returns (``caught_up``), so the writer's next check
in this worker sees it without ``min_revision``. Every write that changes
something is audited by the store in its own transaction, under the caller's
namespaced subject (issue 15); ``audit`` reads that record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from entitlements.domain.grant import Grant
from entitlements.domain.parsers import parse_grant_id, parse_resource, parse_subject
from entitlements.domain.resource import Resource, resource_from_mapping
from entitlements.domain.validation import grant_from_mapping
from entitlements.domain.values import parse_text
from entitlements.errors import FieldError, InvalidInputError
from entitlements.service.access import SCOPE_ADMIN, require_scope
from entitlements.service.checks import MAX_PAGE, decode_cursor, encode_cursor
from entitlements.service.ports import AuditLog, Catalog
from entitlements.store.results import AuditEntry
from entitlements_client import VerifiedToken

Body = Callable[[], Awaitable[object]]
"""The body of a write, read when the service is ready for it (after the id is checked)."""


@dataclass(frozen=True, slots=True)
class GrantWritten:
    grant: Grant
    revision: int
    changed: bool
    created: bool


@dataclass(frozen=True, slots=True)
class ResourceWritten:
    resource: Resource
    revision: int
    changed: bool
    created: bool


@dataclass(frozen=True, slots=True)
class GrantPage:
    items: list[Grant]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class AuditPage:
    items: list[AuditEntry]
    next_cursor: str | None


MAX_ACTOR = 600
"""The longest actor a filter may name (a namespaced subject: issuer prefix and sub)."""


def _entry_id(raw: object, field: str) -> str:
    if not isinstance(raw, str) or not raw.isdigit() or len(raw) > 18:
        raise InvalidInputError(FieldError(field, "is not an audit entry id"))
    return raw


class AdminService:
    """Writes and reads grants and resources for callers with ``SCOPE_ADMIN``."""

    scope = SCOPE_ADMIN

    def __init__(
        self,
        catalog: Catalog,
        caught_up: Callable[[], Awaitable[object]],
        audit_log: AuditLog | None = None,
    ) -> None:
        self.catalog = catalog
        self.caught_up = caught_up
        self.audit_log = audit_log

    def authorize(self, caller: VerifiedToken) -> None:
        """Refuse a caller without the admin scope (before anything else is looked at)."""
        require_scope(caller, self.scope)

    async def put_grant(self, caller: VerifiedToken, grant_id: str, body: Body) -> GrantWritten:
        """Create or replace grant ``grant_id`` from its JSON form (idempotent)."""
        self.authorize(caller)
        gid = parse_grant_id(grant_id, "id")
        grant = grant_from_mapping(await body(), grant_id=gid)
        result = await self.catalog.put_grant(grant, actor=caller.subject)
        await self.caught_up()
        return GrantWritten(grant, result.revision, result.changed, result.created)

    async def get_grant(self, caller: VerifiedToken, grant_id: str) -> Grant:
        self.authorize(caller)
        return await self.catalog.get_grant(parse_grant_id(grant_id, "id"))

    async def delete_grant(self, caller: VerifiedToken, grant_id: str) -> int:
        """Revoke a grant; the revision of the write."""
        self.authorize(caller)
        revision = await self.catalog.delete_grant(
            parse_grant_id(grant_id, "id"), actor=caller.subject
        )
        await self.caught_up()
        return revision

    async def list_grants(
        self,
        caller: VerifiedToken,
        *,
        resource: str | None,
        subject: str | None,
        cursor: str | None,
        limit: int,
    ) -> GrantPage:
        """Grants on ``resource`` and/or of ``subject``, by id, a keyset page at a time."""
        self.authorize(caller)
        grants = await self.catalog.list_grants(
            resource=parse_resource(resource) if resource is not None else None,
            subject=parse_subject(subject) if subject is not None else None,
            after=decode_cursor(cursor, parse_grant_id) if cursor else None,
            limit=limit,
        )
        next_cursor = encode_cursor(grants[-1].id) if len(grants) == limit else None
        return GrantPage(grants, next_cursor)

    async def put_resource(
        self, caller: VerifiedToken, resource_id: str, body: Body
    ) -> ResourceWritten:
        """Declare a resource and its parents (a cycle, or a path over 16 levels, is refused)."""
        self.authorize(caller)
        rid = parse_resource(resource_id, "id")
        resource = resource_from_mapping(await body(), resource_id=rid)
        result = await self.catalog.put_resource(resource, actor=caller.subject)
        await self.caught_up()
        return ResourceWritten(resource, result.revision, result.changed, result.created)

    async def get_resource(self, caller: VerifiedToken, resource_id: str) -> Resource:
        self.authorize(caller)
        return await self.catalog.get_resource(parse_resource(resource_id, "id"))

    async def audit(
        self,
        caller: VerifiedToken,
        *,
        actor: str | None,
        resource: str | None,
        grant: str | None,
        cursor: str | None,
        limit: int,
    ) -> AuditPage:
        """The audit of changes, newest first, a keyset page at a time, filtered by who
        made them, the resource or the grant they touched (issue 15)."""
        self.authorize(caller)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInputError(FieldError("limit", f"must be between 1 and {MAX_PAGE}"))
        if self.audit_log is None:
            return AuditPage([], None)
        entries = await self.audit_log.audit_entries(
            actor=parse_text(actor, "actor", MAX_ACTOR) if actor is not None else None,
            resource=parse_resource(resource, "resource") if resource is not None else None,
            grant=parse_grant_id(grant, "grant") if grant is not None else None,
            before_id=int(decode_cursor(cursor, _entry_id)) if cursor else None,
            limit=limit,
        )
        next_cursor = encode_cursor(str(entries[-1].id)) if len(entries) == limit else None
        return AuditPage(entries, next_cursor)


__all__ = ["AdminService", "AuditPage", "GrantPage", "GrantWritten", "ResourceWritten"]
