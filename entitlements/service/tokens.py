"""Token use cases: minting, exchange (RFC 8693) for long work, revocation, key rotation.

An exchanged token is narrow on purpose: one audience, scopes that the user's
own token already had, optionally a list of resources, an ``act`` claim naming
the service that asked, and its own ``typ`` (``exchange+jwt``) so that it is
refused wherever an ordinary access token is expected.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

import orjson
from cryptography.hazmat.primitives.asymmetric import ed25519

from entitlements.domain.model import parse_resource, parse_role, parse_user_id
from entitlements.domain.values import parse_text, shown
from entitlements.errors import FieldError, InvalidInputError, PermissionDeniedError
from entitlements.keys.signing import SigningKey, jwks, mint
from entitlements.service.ports import ExchangedTokenStore, KeyStore
from entitlements_client import KeySet, VerifiedToken

EXCHANGE_TYP: Final = "exchange+jwt"
"""The ``typ`` of the tokens token exchange mints (``service.access`` reads it from here)."""
REQUEST_TOKEN_MAX_LIFETIME: Final = 60
"""The longest a per-request (gateway) token lives, in seconds."""
MAX_EXCHANGE_RESOURCES = 100
MAX_AUDIENCE_LENGTH = 512
MAX_TENANT_LENGTH = 256
# RFC 6749 section 3.3: a scope token is printable ASCII but space, '"' and '\\'.
_SCOPE_RE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def access_claim_errors(
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


def check_access_claims(
    subject: str,
    roles: Sequence[str],
    scopes: Sequence[str],
    tenant: str | None,
    *,
    ttl: float,
    max_lifetime: float,
    claims: bool = True,
) -> None:
    """Refuse an access token to mint: its claims (``access_claim_errors``, unless
    ``claims`` is false) and a lifetime that is not positive and at most ``max_lifetime``."""
    errors = access_claim_errors(subject, roles, scopes, tenant) if claims else []
    if not 0 < ttl <= max_lifetime:
        errors.append(FieldError("ttl", f"must be positive and at most {int(max_lifetime)} s"))
    if errors:
        raise InvalidInputError(errors)


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
        keys: KeyStore,
        exchanged: ExchangedTokenStore,
        keyset: KeySet,
        *,
        issuer: str,
        audience: str,
        max_lifetime: float,
        exchange_max_lifetime: float,
    ) -> None:
        self.keys = keys
        self.exchanged = exchanged
        self.keyset = keyset
        self.issuer = issuer
        self.audience = audience
        self.max_lifetime = max_lifetime
        self.exchange_max_lifetime = exchange_max_lifetime
        self.revoked = RevokedSet()
        self._active: SigningKey | None = None
        self._published: list[SigningKey] = []
        self._reload_lock = asyncio.Lock()
        self._jws_headers: dict[str, bytes] = {}
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
        check_claims: bool = False,
    ) -> str:
        """An ordinary access token of this issuer (demo and development use).

        ``check_claims``: also refuse claims the service could not use
        (``access_claim_errors``), as ``entitlements token mint`` does.
        """
        check_access_claims(
            subject,
            roles,
            scopes,
            tenant,
            ttl=ttl,
            max_lifetime=self.max_lifetime,
            claims=check_claims,
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

    def mint_for_request(
        self,
        caller: VerifiedToken,
        *,
        audience: str,
        lifetime: float,
        method: str,
        path: str,
        now: float | None = None,
    ) -> str:
        """A per-request token for the upstream behind the gateway: ``audience`` (the
        upstream), at most 60 s, only the coarse claims (subject, roles, tenant; no
        scopes, so it cannot be used against this service), and bound to the request it
        was minted for (``method`` and raw ``path`` claims, which the SDK's verifier
        checks when the upstream asks it to)."""
        if not 0 < lifetime <= REQUEST_TOKEN_MAX_LIFETIME:
            raise InvalidInputError(
                FieldError(
                    "lifetime", f"must be positive and at most {REQUEST_TOKEN_MAX_LIFETIME} s"
                )
            )
        key = self._signing_key()
        if key.alg == "EdDSA" and isinstance(key.private, ed25519.Ed25519PrivateKey):
            # On every allowed gateway request: the same token ``mint`` makes, without
            # PyJWT's generic path (about a third of the cost; the signature is the rest).
            issued = int(now if now is not None else time.time())
            claims: dict[str, Any] = {
                "iss": self.issuer,
                "aud": audience,
                "sub": caller.subject,
                "iat": issued,
                "exp": issued + int(lifetime),
                "jti": uuid.uuid4().hex,
            }
            if caller.roles:
                claims["roles"] = list(caller.roles)
            if caller.tenant is not None:
                claims["tid"] = caller.tenant
            claims["method"] = method
            claims["path"] = path
            header = self._jws_headers.get(key.kid)
            if header is None:
                header = _b64(orjson.dumps({"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}))
                self._jws_headers = {key.kid: header}
            signing_input = header + b"." + _b64(orjson.dumps(claims))
            return (signing_input + b"." + _b64(key.private.sign(signing_input))).decode("ascii")
        token, _ = mint(
            key,
            issuer=self.issuer,
            audience=audience,
            subject=caller.subject,
            ttl=lifetime,
            roles=caller.roles,
            tenant=caller.tenant,
            extra={"method": method, "path": path},
            now=now,
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
        await self.exchanged.record_exchange(
            claims["jti"],
            subject=user.subject,
            actor=actor.subject,
            audience=audience,
            scope=claims["scope"],
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        )
        return IssuedToken(token, int(lifetime), claims["scope"], claims["jti"])

    async def revoke(self, jti: str, caller: VerifiedToken, *, admin: bool) -> int:
        """Revoke an exchanged token; allowed to its user, the service that got it, or an admin."""

        def authorize(subject: str, holder: str) -> None:
            if not admin and caller.subject not in {subject, holder}:
                raise PermissionDeniedError(
                    "only the token's user, its holder or an admin may revoke it"
                )

        revision = await self.exchanged.revoke(jti, authorize, actor=caller.subject)
        self.revoked.add(jti)
        return revision

    async def reload_revocations(self) -> None:
        self.revoked.replace(await self.exchanged.revoked_jtis())

    async def rotate_keys(self, actor: str = "unknown") -> tuple[SigningKey, int]:
        """Make a new signing key active: the new key, and how many expired keys were retired.

        The old key stays published as long as any token it signed may live: the
        longest lifetime this service issues (access or exchanged tokens). The
        rotation is audited under ``actor`` (``cli:<os user>`` from the CLI).
        """
        await self.keys.ensure_active()
        new = await self.keys.rotate(
            max(self.max_lifetime, self.exchange_max_lifetime), actor=actor
        )
        retired = await self.keys.retire_expired()
        return new, retired

    async def list_keys(self, *, include_retired: bool = False) -> list[SigningKey]:
        """The signing keys, newest first (``include_retired``: the retired ones too)."""
        return await self.keys.list(include_retired=include_retired)
