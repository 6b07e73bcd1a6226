"""Deterministic grant ids for grants read from ERN messages.

The id is a hash of everything the grant says except the ``message_id``
attribute, together with the sender and the release it came from: the same
deal in the same message gives the same id every time (importing a message
twice changes nothing), a re-sent unchanged deal keeps its id (only its
``message_id`` is updated), and two releases never share a grant even when
their deals read the same (replacing one release's deals cannot touch the
other's). A changed deal is a new grant (the old one is removed by
replace-per-release).

Form: ``ddex:<resource>:<24 hex digits>`` (readable in listings), or
``ddex:<40 hex digits>`` when the resource is too long for the 200-character
limit; both match the grant-id rule of ``entitlements.domain.model``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

import orjson

from entitlements.domain.model import MAX_ID_LENGTH

PREFIX: Final = "ddex:"


def grant_id(grant: Mapping[str, Any], release_key: str) -> str:
    """The id of ``grant`` (a grant mapping without ``id``) from the release ``release_key``."""
    content = {k: v for k, v in grant.items() if k not in {"id", "attributes"}}
    attributes = {k: v for k, v in (grant.get("attributes") or {}).items() if k != "message_id"}
    canonical = orjson.dumps(
        {"release": release_key, "grant": content, "attributes": attributes},
        option=orjson.OPT_SORT_KEYS,
    )
    digest = hashlib.sha256(canonical).hexdigest()
    readable = f"{PREFIX}{grant['resource']}:{digest[:24]}"
    return readable if len(readable) <= MAX_ID_LENGTH else f"{PREFIX}{digest[:40]}"
