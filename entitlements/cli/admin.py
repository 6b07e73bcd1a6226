"""CLI use cases on the service's tokens and keys: mint, rotate, list.

Each opens the database for its run and goes through ``TokenService``, the one
place that mints tokens and rotates keys (the API process uses the same service).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from entitlements.cli.environment import cli_actor
from entitlements.service.tokens import TokenService, check_access_claims
from entitlements.settings import Settings
from entitlements.store.keys import PostgresKeyStore
from entitlements.store.postgres import PostgresStore
from entitlements.store.tokens import PostgresTokenStore
from entitlements_client import KeySet


def token_service(settings: Settings, store: PostgresStore) -> TokenService:
    """The token service of these settings, on ``store``'s pool (not started)."""
    return TokenService(
        PostgresKeyStore(store.pool, settings.signing_alg),
        PostgresTokenStore(store.pool),
        KeySet(jwks={"keys": []}),
        issuer=settings.issuer,
        audience=settings.audience,
        max_lifetime=settings.token_max_lifetime,
        exchange_max_lifetime=settings.exchange_max_lifetime,
    )


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[tuple[PostgresStore, TokenService]]:
    """The database (a small pool, for one command) and the token service on it."""
    assert settings.database_url is not None
    store = await PostgresStore.open(
        settings.database_url,
        min_size=1,
        max_size=2,
        pooled=settings.database_pooler != "none",
    )
    try:
        yield store, token_service(settings, store)
    finally:
        await store.close()


async def mint_token(
    settings: Settings,
    subject: str,
    roles: Sequence[str],
    scopes: Sequence[str],
    ttl: float,
    tenant: str | None,
) -> str:
    # Bad input is refused before the database is opened (exit 2 whatever its state).
    check_access_claims(
        subject, roles, scopes, tenant, ttl=ttl, max_lifetime=settings.token_max_lifetime
    )
    async with opened(settings) as (_, tokens):
        await tokens.start()
        return tokens.mint_access(
            subject, roles=roles, scopes=scopes, ttl=ttl, tenant=tenant, check_claims=True
        )


async def rotate_keys(settings: Settings) -> str:
    async with opened(settings) as (_, tokens):
        new, retired = await tokens.rotate_keys(actor=cli_actor())
    return f"active key is now {new.kid} ({new.alg}); {retired} expired key(s) retired"


async def list_keys(settings: Settings) -> str:
    async with opened(settings) as (_, tokens):
        keys = await tokens.list_keys(include_retired=True)
    lines = [f"{'kid':<44} {'alg':<6} {'state':<10} published until"]
    for k in keys:
        until = k.publish_until.isoformat() if k.publish_until else "-"
        lines.append(f"{k.kid:<44} {k.alg:<6} {k.state:<10} {until}")
    return "\n".join(lines)
