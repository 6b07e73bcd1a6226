"""``entitlements demo``: a small music catalogue, demo tokens and ready-to-paste curl lines.

Loading is idempotent (every grant and resource has a fixed id), so running the
demo twice gives the same catalogue.
"""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from entitlements.cli.admin import opened
from entitlements.domain.model import grant_from_mapping, resource_from_mapping
from entitlements.service.ports import Catalog, ChangeFeed
from entitlements.settings import Settings

LABELS = ["label:acme", "label:indigo", "label:nova"]
RELEASES = {
    "release:0602527894567": ["label:acme"],
    "release:5021732125423": ["label:indigo"],
    "release:0602455123456": ["label:nova"],  # out next month
    "release:comp-summer-2026": ["label:acme", "label:indigo"],  # a compilation of both
}
TRACKS = {
    "track:USRC17607839": ["release:0602527894567", "release:comp-summer-2026"],
    "track:USRC17607840": ["release:0602527894567"],
    "track:GBUM71029604": ["release:5021732125423", "release:comp-summer-2026"],
    "track:GBUM71029605": ["release:5021732125423"],
    "track:GBUM71029606": ["release:5021732125423"],
    "track:USRC12600001": ["release:0602455123456"],
}


def _next_month(now: datetime) -> datetime:
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def demo_grants(now: datetime) -> list[dict[str, Any]]:
    starts = _next_month(now).isoformat().replace("+00:00", "Z")
    return [
        {
            "id": "deal-acme-premium",
            "subject": "role:plan:premium",
            "resource": "label:acme",
            "actions": ["stream", "download"],
            "territories": ["*"],
            "attributes": {"quality": "lossless", "model": "subscription"},
        },
        {
            "id": "deal-acme-free",
            "subject": "role:plan:free",
            "resource": "label:acme",
            "actions": ["stream"],
            "territories": ["GB", "US", "IE"],
            "attributes": {"quality": "standard", "model": "ad-supported"},
        },
        {
            "id": "deal-indigo-premium",
            "subject": "role:plan:premium",
            "resource": "label:indigo",
            "actions": ["stream"],
            "territories": ["*"],
            "exclude_territories": ["DE", "FR"],
            "attributes": {"quality": "high", "model": "subscription"},
        },
        {
            "id": "purchase-alice-GBUM71029605",
            "subject": "user:alice",
            "resource": "track:GBUM71029605",
            "actions": ["download", "stream"],
            "territories": ["*"],
            "attributes": {"model": "purchase"},
        },
        {
            "id": "takedown-USRC17607840",
            "subject": "*",
            "resource": "track:USRC17607840",
            "actions": ["stream", "download"],
            "territories": ["*"],
            "effect": "deny",
        },
        {
            "id": "deal-acme-new-release",
            "subject": "role:plan:premium",
            "resource": "release:0602455123456",
            "actions": ["stream"],
            "territories": ["*"],
            "valid_from": starts,
        },
    ]


class DemoStore(Catalog, ChangeFeed, Protocol):
    """Where the demo catalogue goes (``PostgresStore`` is one)."""


async def load_catalogue(store: DemoStore, now: datetime | None = None) -> int:
    """Put the demo resources and grants; returns the revision reached."""
    revision = await store.revision()
    for label in LABELS:
        revision = max(
            revision,
            (
                await store.put_resource(resource_from_mapping({"id": label}), actor="cli:demo")
            ).revision,
        )
    for rid, parents in {**RELEASES, **TRACKS}.items():
        result = await store.put_resource(
            resource_from_mapping({"id": rid, "parents": parents}), actor="cli:demo"
        )
        revision = max(revision, result.revision)
    for raw in demo_grants(now or datetime.now(UTC)):
        revision = max(
            revision, (await store.put_grant(grant_from_mapping(raw), actor="cli:demo")).revision
        )
    return revision


async def load_demo(settings: Settings) -> str:
    """Load the catalogue, mint tokens, and return the text to show the user."""
    async with opened(settings) as (store, tokens):
        revision = await load_catalogue(store)
        await tokens.start()

        def token(sub: str, roles: list[str], scopes: list[str]) -> str:
            ttl = min(settings.token_max_lifetime, 12 * 3600)
            return tokens.mint_access(sub, roles=roles, scopes=scopes, ttl=ttl)

        # entitlements:check lets a service exchange alice's token for a narrow one
        # (an exchanged token carries only scopes the user's token had): the README's
        # token-exchange example.
        alice = token("alice", ["plan:premium"], ["entitlements:check"])
        bob = token("bob", ["plan:free"], ["entitlements:check"])
        admin = token("ops", [], ["entitlements:admin", "entitlements:import"])
        service = token("svc-player", [], ["entitlements:check:any", "entitlements:exchange"])
    base = f"http://{settings.host}:{settings.port}"

    def curl(tok: str, path: str, body: dict[str, Any] | None = None) -> str:
        parts = ["curl -s -w '\\n'", f'-H "Authorization: Bearer {tok}"']
        if body is not None:
            parts += [
                "-H 'Content-Type: application/json'",
                "-d " + shlex.quote(orjson.dumps(body).decode()),
            ]
        return " ".join(parts) + " " + shlex.quote(base + path)

    lines = [
        f"Demo catalogue loaded (revision {revision}): 3 labels, 4 releases, 6 tracks, 6 grants.",
        "",
        "export ALICE=" + alice + "   # premium plan, bought track:GBUM71029605",
        "export BOB=" + bob + "   # free plan",
        "export OPS=" + admin + "   # admin + import scopes",
        "export SERVICE=" + service + "   # a backend service: check:any (SDK) + exchange",
        "",
        "# alice (premium) may stream an acme track anywhere -> allowed, reason granted",
        curl(
            "$ALICE",
            "/v1/check",
            {"resource": "track:USRC17607839", "action": "stream", "territory": "JP"},
        ),
        "# indigo's premium deal excludes DE -> allowed: false, reason territory",
        curl(
            "$ALICE",
            "/v1/check",
            {"resource": "track:GBUM71029606", "action": "stream", "territory": "DE"},
        ),
        "# a takedown (deny) beats every allow -> reason denied",
        curl(
            "$ALICE",
            "/v1/check",
            {"resource": "track:USRC17607840", "action": "stream", "territory": "GB"},
        ),
        "# the new release's deal starts next month -> reason not_yet_valid, valid_until = the start",
        curl(
            "$ALICE",
            "/v1/check",
            {"resource": "track:USRC12600001", "action": "stream", "territory": "GB"},
        ),
        "# bob (free) streams acme in GB only -> granted; in JP -> territory",
        curl(
            "$BOB",
            "/v1/check",
            {"resource": "track:USRC17607839", "action": "stream", "territory": "GB"},
        ),
        curl(
            "$BOB",
            "/v1/check",
            {"resource": "track:USRC17607839", "action": "stream", "territory": "JP"},
        ),
        "# everything alice may stream in GB",
        curl("$ALICE", "/v1/entitlements?action=stream&territory=GB"),
        "# ops revokes the acme premium deal ...",
        "curl -s -w '\\n' -X DELETE -H \"Authorization: Bearer $OPS\" "
        + shlex.quote(base + "/v1/grants/deal-acme-premium"),
        "# ... and track:USRC17607839 is now licensed to alice only through the indigo"
        " compilation, whose deal excludes FR -> reason territory",
        curl(
            "$ALICE",
            "/v1/check",
            {"resource": "track:USRC17607839", "action": "stream", "territory": "FR"},
        ),
        "",
        f"API docs: {base}/docs",
    ]
    return "\n".join(lines)
