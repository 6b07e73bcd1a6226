"""CLI use cases that talk to the database directly: tokens and keys."""

from __future__ import annotations

from collections.abc import Sequence

from entitlements.keys.signing import SigningKeyStore, mint
from entitlements.settings import Settings
from entitlements.store.postgres import PostgresStore


async def _open(settings: Settings) -> PostgresStore:
    assert settings.database_url is not None
    return await PostgresStore.open(settings.database_url, min_size=1, max_size=2)


async def mint_token(
    settings: Settings,
    subject: str,
    roles: Sequence[str],
    scopes: Sequence[str],
    ttl: float,
    tenant: str | None,
) -> str:
    from entitlements.errors import FieldError, InvalidInputError

    if not 0 < ttl <= settings.token_max_lifetime:
        raise InvalidInputError(
            FieldError("ttl", f"must be positive and at most {int(settings.token_max_lifetime)} s")
        )
    store = await _open(settings)
    try:
        key = await SigningKeyStore(store.pool, settings.signing_alg).ensure_active()
        token, _ = mint(
            key,
            issuer=settings.issuer,
            audience=settings.audience,
            subject=subject,
            ttl=ttl,
            roles=roles,
            scopes=scopes,
            tenant=tenant,
        )
        return token
    finally:
        await store.close()


async def rotate_keys(settings: Settings) -> str:
    store = await _open(settings)
    try:
        keys = SigningKeyStore(store.pool, settings.signing_alg)
        await keys.ensure_active()
        # The old key must outlive every token it signed: the longest lifetime we issue.
        publish_for = max(settings.token_max_lifetime, settings.exchange_max_lifetime)
        new = await keys.rotate(publish_for)
        retired = await keys.retire_expired()
        return f"active key is now {new.kid} ({new.alg}); {retired} expired key(s) retired"
    finally:
        await store.close()


async def list_keys(settings: Settings) -> str:
    store = await _open(settings)
    try:
        keys = await SigningKeyStore(store.pool, settings.signing_alg).list(include_retired=True)
        lines = [f"{'kid':<44} {'alg':<6} {'state':<10} published until"]
        for k in keys:
            until = k.publish_until.isoformat() if k.publish_until else "-"
            lines.append(f"{k.kid:<44} {k.alg:<6} {k.state:<10} {until}")
        return "\n".join(lines)
    finally:
        await store.close()
