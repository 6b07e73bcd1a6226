"""The one access-token verifier, used by the SDK and by the service.

Policy (docs/design.md "Tokens"; RFC 7515/7519/8725/9068):

- Size is checked before anything is parsed; the token must be ASCII compact
  JWS with exactly three strict base64url segments (no padding, canonical
  trailing bits). Header and payload are strict UTF-8 JSON objects: no BOM,
  no duplicate keys, no NaN/Infinity, no lone surrogates, no U+0000 (no
  identity holds one, and a database could not store it), nesting depth at
  most 16 (the strict decoding lives in ``_jose``).
- The issuer is chosen by the exact ``iss`` string; the token's ``alg`` must
  be allowed for that issuer *and* equal the algorithm the ``kid``'s key is
  pinned to, so ``none``, HS* and key-type confusion cannot pass. ``kid`` is
  looked up only in that issuer's :class:`~entitlements_client.jwks.KeySet`.
- ``jku``, ``x5u``, ``jwk``, ``x5c``, ``crit``, ``b64``, ``cty``, ``zip`` and
  ``enc`` reject the token: we follow no key URLs, trust no embedded keys,
  understand no critical extensions and accept no nested or encrypted
  tokens. Other unknown header parameters (e.g. ``x5t``) are ignored.
- ``typ`` must be one the issuer accepts (``at+jwt`` by default, compared
  case-insensitively, ``application/`` prefix optional; ``""`` in the
  issuer's ``typ`` accepts a token with no ``typ``).
- Required claims ``iss``, ``aud``, ``sub``, ``exp``, ``iat``, ``jti``;
  NumericDates are JSON integers (not floats, strings or booleans); ``exp``
  and ``nbf``/``iat`` are checked with a leeway of at most 30 s; ``exp - iat``
  is capped per issuer.
- The issuer's policy (:mod:`entitlements_client.issuers`) gives the token its
  meaning: the user id is ``subject_prefix + sub`` (at most 256 characters in
  all), and only the ``entitlements:*`` scopes in ``allowed_scopes`` count.
- Every failure is an :class:`InvalidTokenError` with a stable ``code``;
  unexpected exceptions from parsing or cryptography are converted too.

Verified tokens are remembered (bounded LRU keyed by the exact token string),
so a token seen before costs a dictionary lookup plus the expiry and
revocation checks, which run on every call. A remembered token is dropped as
soon as its key leaves the issuer's key set. Remembered tokens never cause I/O:
key sets are refreshed by the verifications that miss.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from ._errors import InvalidTokenError
from ._jose import TOKEN_RE, b64decode, fail, json_object
from .issuers import SCOPE_NAMESPACE, IssuerConfig, check_namespaces, parse_duration
from .jwks import ALGORITHMS, KeySet, PublicKey

__all__ = [
    "CacheInfo",
    "IssuerConfig",
    "TokenVerifier",
    "VerifiedToken",
    "check_binding",
    "parse_duration",
]

logger = logging.getLogger(__name__)

MAX_LEEWAY: Final = 30.0
MAX_CLAIM_LENGTH: Final = 256
# Integers beyond 2**53 do not survive a round trip through most JSON stacks.
_MAX_NUMERIC_DATE: Final = 2**53
# Header parameters that make us reject the token (see the module docstring).
_REJECTED_HEADERS: Final = frozenset(
    {"jku", "x5u", "jwk", "x5c", "crit", "b64", "cty", "zip", "enc"}
)


def _normalize_typ(typ: str) -> str:
    # RFC 7515 §4.1.9: media types are case-insensitive and "application/" may be omitted.
    typ = typ.lower()
    return typ[12:] if typ.startswith("application/") else typ


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a verified access token means, under its issuer's policy.

    ``subject`` is the user id: the issuer's ``subject_prefix`` followed by the
    token's ``sub`` (which stays in ``claims``), so users of different issuers
    never share an id unless configured to. ``scopes`` holds the scopes that
    count: the ``entitlements:*`` ones the issuer's ``allowed_scopes`` lists,
    and every other scope of the ``scope`` claim. ``claims`` is the whole
    payload, read-only and unfiltered.
    """

    issuer: str
    subject: str
    audience: tuple[str, ...]
    expires_at: int
    issued_at: int
    jti: str
    scopes: frozenset[str]
    roles: tuple[str, ...]
    tenant: str | None
    typ: str
    actor: Mapping[str, Any] | None
    claims: Mapping[str, Any]

    def has_scope(self, scope: str) -> bool:
        """Whether ``scope`` is among the scopes that count (see :attr:`scopes`)."""
        return scope in self.scopes

    def has_role(self, role: str) -> bool:
        """Whether ``role`` is among the token's roles."""
        return role in self.roles


class CacheInfo(NamedTuple):
    """Statistics of the remembered-token cache (as ``functools.lru_cache``)."""

    hits: int
    misses: int
    size: int
    maxsize: int


@dataclass(frozen=True, slots=True)
class _Issuer:
    """An IssuerConfig compiled for fast checks."""

    config: IssuerConfig
    algorithms: frozenset[str]
    typs: frozenset[str]
    roles_path: tuple[str, ...]
    prefix: str
    #: The entitlements scopes honoured; None: all of them.
    honoured: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class _Pending:
    """A token that passed every check that needs no key; waiting for key and signature."""

    token: str
    issuer: _Issuer
    header: dict[str, Any]
    payload: dict[str, Any]
    alg: str
    kid: str
    signing_input: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class _Remembered:
    verified: VerifiedToken
    keys: KeySet
    key: PublicKey


# -- claims ------------------------------------------------------------------------------


def _required_string(payload: Mapping[str, Any], name: str) -> str:
    if name not in payload:
        fail("missing_claim", f"missing '{name}' claim")
    value = payload[name]
    if not isinstance(value, str) or not value or len(value) > MAX_CLAIM_LENGTH:
        fail("bad_claim", f"'{name}' must be a non-empty string of at most 256 characters")
    return value


def _numeric_date(payload: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    if name not in payload:
        if required:
            fail("missing_claim", f"missing '{name}' claim")
        return None
    value = payload[name]
    # bool is an int subclass; floats, strings and huge numbers are refused (docs/design.md:
    # integer NumericDates), which also keeps all arithmetic below exact.
    if type(value) is not int or not 0 <= value < _MAX_NUMERIC_DATE:
        fail("bad_claim", f"'{name}' must be an integer NumericDate")
    return value


def _freeze(value: Any) -> Any:
    """Deep read-only copy: remembered tokens are shared between callers."""
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def check_binding(verified: VerifiedToken, method: str | None, path: str | None) -> VerifiedToken:
    """``verified``, if it is bound to the request ``method`` ``path`` (either may be None:
    not checked); else :class:`InvalidTokenError` ``unbound`` (the token names no request)
    or ``wrong_request`` (it names another).

    The gateway check mints per-request tokens with a ``method`` claim (as the proxy
    saw it) and a ``path`` claim: the raw path, still %-encoded, without the query.
    Compare with the path as your server received it (ASGI ``raw_path``, not the
    decoded ``path``); a ``?query`` on ``path`` is ignored. A token replayed on another
    path or method is refused; replayed on the same request after ``exp`` plus the
    verifier's leeway it is refused as ``expired``.
    """
    if method is None and path is None:
        return verified
    claims = verified.claims
    if method is not None:
        bound = claims.get("method")
        if not isinstance(bound, str):
            fail("unbound")
        if bound != method:
            fail("wrong_request")
    if path is not None:
        bound = claims.get("path")
        if not isinstance(bound, str):
            fail("unbound")
        if bound != path.split("?", 1)[0]:
            fail("wrong_request")
    return verified


class TokenVerifier:
    """Verify access tokens from one or more trusted issuers.

    ``leeway`` (0 to 30 s) absorbs clock skew. Tokens longer than
    ``max_token_bytes`` are refused before parsing. Up to ``cache_size``
    verified tokens are remembered (0 disables). ``is_revoked`` is called on
    every successful verification, remembered or not; returning True, or
    raising, rejects the token. ``clock`` returns wall-clock seconds.

    :meth:`verify` may fetch keys synchronously when a token names an unknown
    ``kid``; in async code use :meth:`averify`. Safe to share between threads.
    """

    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        *,
        leeway: float = 30.0,
        max_token_bytes: int = 8192,
        cache_size: int = 10_000,
        is_revoked: Callable[[VerifiedToken], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(issuers, IssuerConfig) or not issuers:
            raise ValueError("issuers must be a non-empty sequence of IssuerConfig")
        compiled: dict[str, _Issuer] = {}
        for config in issuers:
            if not isinstance(config, IssuerConfig):
                raise ValueError("issuers must be a non-empty sequence of IssuerConfig")
            if config.issuer in compiled:
                raise ValueError(f"issuer {config.issuer!r} is configured twice")
            compiled[config.issuer] = _Issuer(
                config=config,
                algorithms=frozenset(config.algorithms),
                typs=frozenset(_normalize_typ(t) for t in config.typ),
                roles_path=tuple(config.roles_claim.split(".")),
                prefix=config.subject_prefix or "",
                honoured=None if config.honours_all_scopes else frozenset(config.allowed_scopes),
            )
        check_namespaces(i.prefix for i in compiled.values())
        if (
            isinstance(leeway, bool)
            or not isinstance(leeway, int | float)
            or not 0 <= leeway <= MAX_LEEWAY
        ):
            raise ValueError("leeway must be between 0 and 30 seconds")
        if (
            isinstance(max_token_bytes, bool)
            or not isinstance(max_token_bytes, int)
            or max_token_bytes < 16
        ):
            raise ValueError("max_token_bytes must be an integer of at least 16")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError("cache_size must be a non-negative integer")
        self._issuers = compiled
        self._leeway = float(leeway)
        self._max_bytes = max_token_bytes
        self._cache_size = cache_size
        self._is_revoked = is_revoked
        self._clock = clock
        self._cache: OrderedDict[str, _Remembered] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    @property
    def issuers(self) -> tuple[IssuerConfig, ...]:
        """The trusted issuers, in configuration order."""
        return tuple(i.config for i in self._issuers.values())

    # -- public API --------------------------------------------------------------------

    def verify(
        self, token: str | bytes, *, method: str | None = None, path: str | None = None
    ) -> VerifiedToken:
        """Verify ``token`` and return its claims, or raise :class:`InvalidTokenError`.

        ``method`` and ``path`` (opt-in): the token must also be bound to this request —
        a per-request token minted by the gateway check carries the ``method`` and raw
        ``path`` it was minted for (see :func:`check_binding`).
        """
        try:
            step = self._begin(token)
            if isinstance(step, VerifiedToken):
                return check_binding(step, method, path)
            keys = step.issuer.config.keys
            key = keys.get(step.kid)
            if key is None or keys.stale:
                keys.refresh(force_unknown_kid=key is None)
                key = keys.get(step.kid)
            return check_binding(self._finish(step, key), method, path)
        except InvalidTokenError:
            raise
        except Exception as exc:  # the contract: only InvalidTokenError escapes
            raise self._unexpected(exc) from exc

    async def averify(
        self, token: str | bytes, *, method: str | None = None, path: str | None = None
    ) -> VerifiedToken:
        """Async :meth:`verify`: key fetches are async and shared between concurrent calls."""
        try:
            step = self._begin(token)
            if isinstance(step, VerifiedToken):
                return check_binding(step, method, path)
            keys = step.issuer.config.keys
            key = keys.get(step.kid)
            if key is None:
                await keys.arefresh(force_unknown_kid=True)
                key = keys.get(step.kid)
            elif keys.stale:
                # Known key, stale set: refresh in the background; this request need not wait.
                await keys.arefresh(wait=False)
            return check_binding(self._finish(step, key), method, path)
        except InvalidTokenError:
            raise
        except Exception as exc:  # the contract: only InvalidTokenError escapes
            raise self._unexpected(exc) from exc

    def verify_cached(self, token: str | bytes) -> VerifiedToken | None:
        """Return the remembered result for ``token``, or None if it was not verified before.

        Expiry and revocation are still checked (and raise); nothing is parsed.
        """
        try:
            text = self._as_text(token)
            return self._recall(text)
        except InvalidTokenError:
            raise
        except Exception as exc:
            raise self._unexpected(exc) from exc

    def forget(self, token: str | bytes) -> None:
        """Drop one remembered token (e.g. right after revoking it)."""
        text = token.decode("ascii", "replace") if isinstance(token, bytes) else token
        with self._lock:
            self._cache.pop(text, None)

    def clear(self) -> None:
        """Drop every remembered token."""
        with self._lock:
            self._cache.clear()

    def cache_info(self) -> CacheInfo:
        """Hits, misses and size of the remembered-token cache."""
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._cache), self._cache_size)

    # -- steps ---------------------------------------------------------------------------

    def _unexpected(self, exc: Exception) -> InvalidTokenError:
        logger.debug("token rejected after unexpected %s", type(exc).__name__, exc_info=True)
        return InvalidTokenError("malformed", "token could not be processed")

    def _as_text(self, token: object) -> str:
        if isinstance(token, bytes | bytearray):
            if len(token) > self._max_bytes:
                fail("too_large")
            try:
                return bytes(token).decode("ascii")
            except UnicodeDecodeError:
                fail("malformed", "token is not ASCII")
        if not isinstance(token, str):
            fail("malformed", "token must be a string")
        if len(token) > self._max_bytes:
            fail("too_large")
        if not token.isascii():
            fail("malformed", "token is not ASCII")
        return token

    def _recall(self, token: str) -> VerifiedToken | None:
        if not self._cache_size:
            return None
        with self._lock:
            entry = self._cache.get(token)
            if entry is None:
                return None
            self._cache.move_to_end(token)
        if entry.keys.get(entry.key.kid) is not entry.key:
            # The signing key was removed or replaced: verify from scratch.
            self.forget(token)
            return None
        verified = entry.verified
        if verified.expires_at <= self._clock() - self._leeway:
            self.forget(token)
            fail("expired")
        self._check_revoked(verified)
        with self._lock:
            self._hits += 1
        return verified

    def _begin(self, token: str | bytes) -> VerifiedToken | _Pending:
        """Everything up to the key lookup: size, cache, structure, JSON, header, issuer."""
        text = self._as_text(token)
        remembered = self._recall(text)
        if remembered is not None:
            return remembered
        with self._lock:
            self._misses += 1

        match = TOKEN_RE.fullmatch(text)
        if match is None:
            fail("malformed", "token is not three base64url segments")
        h64, p64, s64 = match.groups()
        if not h64 or not p64:
            fail("malformed", "token has an empty segment")
        header = json_object(b64decode(h64), "header")
        payload = json_object(b64decode(p64), "payload")
        signature = b64decode(s64)

        if not _REJECTED_HEADERS.isdisjoint(header):
            name = sorted(_REJECTED_HEADERS.intersection(header))[0]
            fail("unsupported_header", f"header parameter '{name}' is not supported")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            fail("bad_algorithm", "token algorithm is not accepted")

        if "iss" not in payload:
            fail("missing_claim", "missing 'iss' claim")
        iss = payload["iss"]
        if not isinstance(iss, str):
            fail("bad_claim", "'iss' must be a string")
        issuer = self._issuers.get(iss)
        if issuer is None:
            fail("bad_issuer")
        if alg not in issuer.algorithms:
            fail("bad_algorithm", "token algorithm is not accepted for this issuer")

        typ = header.get("typ", "")
        if not isinstance(typ, str) or _normalize_typ(typ) not in issuer.typs:
            fail("bad_type", "token 'typ' is not accepted for this issuer")

        if "kid" not in header:
            fail("unknown_key", "token has no 'kid'")
        kid = header["kid"]
        if not isinstance(kid, str) or not kid or len(kid) > MAX_CLAIM_LENGTH:
            fail("malformed", "'kid' must be a non-empty string of at most 256 characters")

        signing_input = text[: len(h64) + 1 + len(p64)].encode("ascii")
        return _Pending(text, issuer, header, payload, alg, kid, signing_input, signature)

    def _finish(self, step: _Pending, key: PublicKey | None) -> VerifiedToken:
        """Signature, claims, revocation, then remember."""
        keys = step.issuer.config.keys
        if key is None:
            if keys.remote and keys.last_success is None:
                fail("keys_unavailable")
            fail("unknown_key")
        if key.alg != step.alg:
            fail("bad_algorithm", "token algorithm does not match its key")
        if not key.verify(step.signature, step.signing_input):
            fail("bad_signature")
        verified = self._claims(step)
        self._check_revoked(verified)
        if self._cache_size:
            with self._lock:
                self._cache[step.token] = _Remembered(verified, keys, key)
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return verified

    def _claims(self, step: _Pending) -> VerifiedToken:
        payload, config = step.payload, step.issuer.config

        if "aud" not in payload:
            fail("missing_claim", "missing 'aud' claim")
        aud = payload["aud"]
        if isinstance(aud, str):
            audience: tuple[str, ...] = (aud,)
        elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
            audience = tuple(aud)
        else:
            fail("bad_claim", "'aud' must be a string or a non-empty list of strings")
        if config.audience not in audience:
            fail("bad_audience")

        # The user id is the issuer's namespace plus its sub; it obeys the length rule
        # of a claim as a whole, so it can travel in one of our tokens (exchange).
        subject = step.issuer.prefix + _required_string(payload, "sub")
        if len(subject) > MAX_CLAIM_LENGTH:
            fail(
                "bad_claim",
                f"'sub' with this issuer's subject_prefix exceeds {MAX_CLAIM_LENGTH} characters",
            )
        exp = _numeric_date(payload, "exp", required=True)
        iat = _numeric_date(payload, "iat", required=True)
        jti = _required_string(payload, "jti")
        nbf = _numeric_date(payload, "nbf", required=False)
        assert exp is not None and iat is not None

        if exp <= iat:
            fail("bad_claim", "'exp' must be after 'iat'")
        if exp - iat > config.max_lifetime:
            fail("lifetime_exceeded")
        now = self._clock()
        if exp <= now - self._leeway:
            fail("expired")
        if iat > now + self._leeway:
            fail("not_yet_valid", "token was issued in the future")
        if nbf is not None and nbf > now + self._leeway:
            fail("not_yet_valid")

        scope = payload.get("scope")
        if scope is None:
            scopes: frozenset[str] = frozenset()
        elif isinstance(scope, str):
            scopes = frozenset(s for s in scope.split(" ") if s)
        else:
            fail("bad_claim", "'scope' must be a space-delimited string")
        honoured = step.issuer.honoured
        if honoured is not None:
            scopes = frozenset(
                s for s in scopes if s in honoured or not s.startswith(SCOPE_NAMESPACE)
            )

        tenant = payload.get("tid")
        if tenant is not None and not isinstance(tenant, str):
            fail("bad_claim", "'tid' must be a string")
        act = payload.get("act")
        if act is not None and not isinstance(act, dict):
            fail("bad_claim", "'act' must be an object")

        claims = _freeze(payload)
        return VerifiedToken(
            issuer=config.issuer,
            subject=subject,
            audience=audience,
            expires_at=exp,
            issued_at=iat,
            jti=jti,
            scopes=scopes,
            roles=self._roles(payload, step.issuer.roles_path),
            tenant=tenant,
            typ=step.header.get("typ", ""),
            actor=claims.get("act"),
            claims=claims,
        )

    @staticmethod
    def _roles(payload: Mapping[str, Any], path: tuple[str, ...]) -> tuple[str, ...]:
        node: Any = payload
        for part in path:
            if not isinstance(node, dict):
                fail("bad_claim", "roles claim path does not lead through objects")
            if part not in node:
                return ()
            node = node[part]
        if not isinstance(node, list) or not all(isinstance(r, str) for r in node):
            fail("bad_claim", "roles claim must be a list of strings")
        return tuple(node)

    def _check_revoked(self, verified: VerifiedToken) -> None:
        if self._is_revoked is None:
            return
        try:
            revoked = self._is_revoked(verified)
        except Exception as exc:  # fail closed
            raise InvalidTokenError("revocation_check_failed") from exc
        if revoked:
            fail("revoked")
