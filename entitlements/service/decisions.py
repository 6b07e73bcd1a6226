"""The decision log's record (issue 15): what one decision looked like, minus the token.

``AccessService`` builds a ``DecisionRecord`` only when a log is configured and the
decision is to be kept (denies always; allows at the sample rate), and hands it to
the ``DecisionLog`` port, which must never block. Turning the record into its JSON
line (``record_json``) is the writer's job, off the request path.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from entitlements.domain.decision import Decision

STORE_READ: Final[ContextVar[bool]] = ContextVar("entitlements_store_read", default=False)
"""Set by a grant source that read Postgres (or waited on another request's read) to
answer: the decision log reports such a decision as not ``cached``."""


def mark_store_read() -> None:
    """This request's answer needed Postgres (called by the grant sources on a miss)."""
    STORE_READ.set(True)


DECISION_LOG_KEYS: Final = (
    "time",
    "request_id",
    "issuer",
    "subject",
    "roles",
    "resource",
    "action",
    "territory",
    "at",
    "allowed",
    "reason",
    "grant",
    "revision",
    "cached",
    "latency_us",
)
"""The keys of a decision-log line, in the order written."""


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One decision as the log keeps it. ``time``: when it was answered (Unix seconds);
    ``at``: the instant asked about (None: ``time``); ``issuer``: the caller's token's
    issuer; ``subject``/``roles``: whom the decision is about."""

    time: float
    request_id: str | None
    issuer: str
    subject: str
    roles: tuple[str, ...]
    resource: str
    action: str
    territory: str
    at: datetime | None
    decision: Decision
    cached: bool
    latency_us: int


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def record_json(record: DecisionRecord) -> dict[str, Any]:
    """The record's JSON line, as a mapping with ``DECISION_LOG_KEYS`` in order."""
    when = datetime.fromtimestamp(record.time, UTC)
    decision = record.decision
    return {
        "time": _iso(when),
        "request_id": record.request_id,
        "issuer": record.issuer,
        "subject": record.subject,
        "roles": list(record.roles),
        "resource": record.resource,
        "action": record.action,
        "territory": record.territory,
        "at": _iso(record.at if record.at is not None else when),
        "allowed": decision.allowed,
        "reason": decision.reason,
        "grant": decision.grant,
        "revision": decision.revision,
        "cached": record.cached,
        "latency_us": record.latency_us,
    }


__all__ = [
    "DECISION_LOG_KEYS",
    "STORE_READ",
    "DecisionRecord",
    "mark_store_read",
    "record_json",
]
