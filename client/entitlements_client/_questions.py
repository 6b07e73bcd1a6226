"""One fine-grained question, checked against the service's input rules and made
ready to send.

The rules are the service's own (``entitlements.domain``): a question is
checked here before it joins a batch, so one bad question cannot fail the
other callers' answers in the same request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

from ._cache import CacheKey
from ._errors import InvalidRequestError
from .verify import VerifiedToken

__all__ = ["Flight", "Item", "question"]

RESOURCE_RE: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}:[A-Za-z0-9][A-Za-z0-9._~@+/:=-]{0,199}")
ACTION_RE: Final = re.compile(r"[a-z][a-z0-9_.-]{0,62}")
TERRITORY_RE: Final = re.compile(r"[A-Z]{2}")
USER_RE: Final = re.compile(r"[A-Za-z0-9._~@+/:=|-]{1,255}")
ROLE_RE: Final = re.compile(r"[A-Za-z0-9._~@+/:=|-]{1,128}")
MAX_ROLES: Final = 64

#: (group, subject, roles, resource, action, territory, at, min_revision); group None
#: means "asked with the service token", else the user's own token is forwarded.
Flight: TypeAlias = tuple[str | None, str, tuple[str, ...], str, str, str, str | None, int | None]


@dataclass(frozen=True, slots=True)
class Item:
    """One check ready to send: its JSON body, who asks, and where its answer goes."""

    flight: Flight
    cache_key: CacheKey | None
    body: dict[str, Any]
    group: str | None
    #: The asking call's deadline (monotonic): a batch gives up at its earliest one.
    deadline: float


def question(
    token: str,
    verified: VerifiedToken,
    resource: str,
    action: str,
    territory: str,
    at: datetime | None,
    min_revision: int | None,
    *,
    by_service: bool,
    deadline: float,
) -> Item:
    """Validate one question and build what is sent for it.

    ``by_service``: the SDK asks with its service token, naming the user in the
    body; otherwise (or when the user's subject or roles could not travel in a
    body) the user's own ``token`` is forwarded.
    """
    if not isinstance(resource, str) or not RESOURCE_RE.fullmatch(resource):
        raise InvalidRequestError(f"resource {str(resource)[:60]!r} is not 'type:id'")
    if not isinstance(action, str) or not ACTION_RE.fullmatch(action):
        raise InvalidRequestError(f"action {str(action)[:60]!r} is not a lowercase identifier")
    if not isinstance(territory, str) or not TERRITORY_RE.fullmatch(territory):
        raise InvalidRequestError(f"territory {str(territory)[:10]!r} is not ISO 3166-1 alpha-2")
    body: dict[str, Any] = {"resource": resource, "action": action, "territory": territory}
    at_text = None
    if at is not None:
        if not isinstance(at, datetime) or at.tzinfo is None:
            raise InvalidRequestError("at must be a timezone-aware datetime")
        at_text = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        body["at"] = at_text
    if min_revision is not None:
        if isinstance(min_revision, bool) or not isinstance(min_revision, int):
            raise InvalidRequestError("min_revision must be an integer")
        if not 0 <= min_revision < 2**63:
            raise InvalidRequestError("min_revision must be a non-negative integer")
        body["min_revision"] = min_revision
    subject, roles = verified.subject, verified.roles
    group: str | None = token
    # With a service token the question names the user: one identity for everyone, so
    # checks of different users share batches. A subject or roles the API could not
    # take in a body fall back to forwarding the user's own token.
    if (
        by_service
        and USER_RE.fullmatch(subject)
        and len(roles) <= MAX_ROLES
        and all(ROLE_RE.fullmatch(r) for r in roles)
    ):
        body["subject"] = subject
        body["roles"] = list(roles)
        group = None
    cache_key = None if at is not None else (subject, roles, resource, action, territory)
    flight = (group, subject, roles, resource, action, territory, at_text, min_revision)
    return Item(flight, cache_key, body, group, deadline)
