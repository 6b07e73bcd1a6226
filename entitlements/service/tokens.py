"""Token use cases: minting, exchange (RFC 8693) for long work, and revocation.

An exchanged token is narrow on purpose: one audience, scopes that the user's
own token already had, optionally a list of resources, an ``act`` claim naming
the service that asked, and its own ``typ`` (``exchange+jwt``) so that it is
refused wherever an ordinary access token is expected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from entitlements.domain.model import parse_resource
from entitlements.domain.values import parse_text
from entitlements.errors import FieldError, InvalidInputError, NotFoundError, PermissionDeniedError
from entitlements.keys.signing import SigningKey, SigningKeyStore, jwks, mint
from entitlements.store.postgres import bump_revision, translate_errors
from entitlements_client import KeySet, VerifiedToken

EXCHANGE_TYP = "exchange+jwt"
MAX_EXCHANGE_RESOURCES = 100
MAX_AUDIENCE_LENGTH = 512


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int
    scope: str
    jti: str


class RevokedSet:
    """The revoked ``jti``s this process knows about: an in-memory set, checked on every verify."""

    def __init__(self) -> None:
        self._jtis: set[str] = set()

    def __contains__(self, jti: object) -> bool:
        return jti in self._jtis

    def add(self, jti: str) -> None:
        self._jtis.add(jti)

    def replace(self, jtis: set[str]) -> None:
        self._jtis = jtis

    def is_revoked(self, token: VerifiedToken) -> bool:
        return token.jti in self._jtis


class TokenService:
    """Signs our tokens, keeps the published key set fresh, exchanges and revokes."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        keys: SigningKeyStore,
        keyset: KeySet,
        *,
        issuer: str,
        audience: str,
        max_lifetime: float,
        exchange_max_lifetime: float,
    ) -> None:
        self.pool = pool
        self.keys = keys
        self.keyset = keyset
        self.issuer = issuer
        self.audience = audience
        self.max_lifetime = max_lifetime
        self.exchange_max_lifetime = exchange_max_lifetime
        self.revoked = RevokedSet()
        self._active: SigningKey | None = None
        self._published: list[SigningKey] = []
        self._reload_lock = asyncio.Lock()
        self._last_reload = 0.0

    async def start(self) -> None:
        await self.keys.ensure_active()
        await self.reload_keys()
        await self.reload_revocations()

    async def reload_keys(self) -> None:
        """Re-read the published keys (after a rotation in any process)."""
        async with self._reload_lock:
            keys = await self.keys.list()
            self._published = keys
            self._active = next((k for k in keys if k.state == "active"), None)
            self.keyset.replace(jwks(keys))
            self._last_reload = time.monotonic()

    async def reload_keys_if_stale(self, min_interval: float = 5.0) -> bool:
        """Reload at most once per ``min_interval``: for a token whose ``kid`` we do not know yet."""
        if time.monotonic() - self._last_reload < min_interval:
            return False
        await self.reload_keys()
        return True

    def jwks(self) -> dict[str, Any]:
        return jwks(self._published)

    def _signing_key(self) -> SigningKey:
        if self._active is None:
            raise RuntimeError("TokenService.start() was not awaited")
        return self._active

    def mint_access(
        self,
        subject: str,
        *,
        roles: Sequence[str] = (),
        scopes: Sequence[str] = (),
        ttl: float = 900.0,
        tenant: str | None = None,
    ) -> str:
        """An ordinary access token of this issuer (demo and development use)."""
        if not 0 < ttl <= self.max_lifetime:
            raise InvalidInputError(
                FieldError("ttl", f"must be positive and at most {int(self.max_lifetime)} s")
            )
        token, _ = mint(
            self._signing_key(),
            issuer=self.issuer,
            audience=self.audience,
            subject=subject,
            ttl=ttl,
            roles=roles,
            scopes=scopes,
            tenant=tenant,
        )
        return token

    async def exchange(
        self,
        user: VerifiedToken,
        actor: VerifiedToken,
        *,
        audience: str,
        scopes: Sequence[str],
        resources: Sequence[str],
        lifetime: float,
    ) -> IssuedToken:
        """Trade a user's token for a narrow, long-lived one for ``actor``'s work."""
        errors: list[FieldError] = []
        try:
            parse_text(audience, "audience", MAX_AUDIENCE_LENGTH)
        except InvalidInputError as exc:
            errors.extend(exc.errors)
        wanted = set(scopes)
        if not wanted:
            errors.append(FieldError("scope", "list at least one scope"))
        extra = sorted(wanted - user.scopes)
        if extra:
            errors.append(
                FieldError("scope", f"the user's token does not carry {', '.join(extra)}")
            )
        if len(resources) > MAX_EXCHANGE_RESOURCES:
            errors.append(FieldError("resource", f"at most {MAX_EXCHANGE_RESOURCES} resources"))
        parsed: list[str] = []
        for i, r in enumerate(resources):
            try:
                parsed.append(parse_resource(r, f"resource.{i}"))
            except InvalidInputError as exc:
                errors.extend(exc.errors)
        if not 0 < lifetime <= self.exchange_max_lifetime:
            errors.append(
                FieldError(
                    "expires_in",
                    f"must be positive and at most {int(self.exchange_max_lifetime)} s",
                )
            )
        if errors:
            raise InvalidInputError(errors)
        act: dict[str, Any] = {"sub": actor.subject, "iss": actor.issuer}
        if user.actor is not None:  # a chain of delegation stays visible (RFC 8693 §4.1)
            act["act"] = dict(user.actor)
        extra_claims: dict[str, Any] = {"act": act}
        if parsed:
            extra_claims["resources"] = parsed
        token, claims = mint(
            self._signing_key(),
            issuer=self.issuer,
            audience=audience,
            subject=user.subject,
            ttl=lifetime,
            roles=user.roles,
            scopes=sorted(wanted),
            tenant=user.tenant,
            typ=EXCHANGE_TYP,
            extra=extra_claims,
        )
        async with translate_errors():
            await self.pool.execute(
                """INSERT INTO exchanged_tokens (jti, subject, actor, audience, scope, expires_at)
                   VALUES ($1, $2, $3, $4, $5, $6)""",
                claims["jti"],
                user.subject,
                actor.subject,
                audience,
                claims["scope"],
                datetime.fromtimestamp(claims["exp"], UTC),
            )
        return IssuedToken(token, int(lifetime), claims["scope"], claims["jti"])

    async def revoke(self, jti: str, caller: VerifiedToken, *, admin: bool) -> int:
        """Revoke an exchanged token; allowed to its user, the service that got it, or an admin."""
        async with translate_errors(), self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT subject, actor, revoked_at FROM exchanged_tokens WHERE jti = $1 FOR UPDATE",
                jti,
            )
            if row is None:
                raise NotFoundError("no exchanged token with that jti")
            if not admin and caller.subject not in {row["subject"], row["actor"]}:
                raise PermissionDeniedError(
                    "only the token's user, its holder or an admin may revoke it"
                )
            if row["revoked_at"] is not None:
                revision: int = await conn.fetchval("SELECT value FROM ent_revision")
            else:
                await conn.execute(
                    "UPDATE exchanged_tokens SET revoked_at = now() WHERE jti = $1", jti
                )
                revision = await bump_revision(conn, [("token", jti)])
        self.revoked.add(jti)
        return revision

    async def reload_revocations(self) -> None:
        async with translate_errors():
            rows = await self.pool.fetch(
                """SELECT jti FROM exchanged_tokens
                   WHERE revoked_at IS NOT NULL AND expires_at > now() - interval '1 minute'"""
            )
        self.revoked.replace({r["jti"] for r in rows})
