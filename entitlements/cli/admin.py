"""CLI use cases that talk to the database directly: tokens and keys."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import partial

from entitlements.domain.model import parse_role, parse_user_id
from entitlements.domain.values import parse_text, shown
from entitlements.errors import FieldError, InvalidInputError
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
    errors = token_input_errors(subject, roles, scopes, tenant)
    if not 0 < ttl <= settings.token_max_lifetime:
        errors.append(
            FieldError("ttl", f"must be positive and at most {int(settings.token_max_lifetime)} s")
        )
    if errors:
        raise InvalidInputError(errors)
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


# RFC 6749 section 3.3: a scope token is printable ASCII but space, '"' and '\\'.
_SCOPE_RE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")
MAX_TENANT_LENGTH = 256


def token_input_errors(
    subject: str, roles: Sequence[str], scopes: Sequence[str], tenant: str | None
) -> list[FieldError]:
    """What a minted token would carry that the service could not use: a subject that no
    grant's ``user:<id>`` can name, a role that no ``role:<name>`` can, a scope that is
    not an RFC 6749 scope token, a tenant with control characters."""
    errors: list[FieldError] = []

    def check(parse: Callable[[], object]) -> None:
        try:
            parse()
        except InvalidInputError as exc:
            errors.extend(exc.errors)

    check(lambda: parse_user_id(subject, "sub"))
    for role in roles:
        check(partial(parse_role, role, "role"))
    for scope in scopes:
        if not _SCOPE_RE.fullmatch(scope):
            message = f"{shown(scope)!r} is not a scope token (printable ASCII, no spaces)"
            errors.append(FieldError("scope", message))
    if tenant is not None:
        check(partial(parse_text, tenant, "tenant", MAX_TENANT_LENGTH))
    return errors


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
