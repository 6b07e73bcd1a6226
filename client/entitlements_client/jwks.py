"""One issuer's public signing keys: parse a JWKS, pin each key to one algorithm, keep it fresh.

A :class:`KeySet` holds ``kid -> PublicKey``. Keys come from a JWKS document
given in process (``jwks=`` / :meth:`KeySet.replace`), a local file
(``file=``, reloaded when its mtime changes) or an HTTPS endpoint (``url=``).

Decisions (docs/design.md "Tokens"):

- Every key is pinned to exactly one algorithm: the JWK's ``alg`` if present,
  else the one its type implies (OKP/Ed25519 -> EdDSA, EC/P-256 -> ES256,
  RSA -> RS256). A token may only use the algorithm its key is pinned to.
- Keys that could be abused or that we do not support are skipped, never
  guessed at: ``use`` other than ``sig``; ``key_ops`` without ``verify``;
  symmetric (``oct``) keys; RSA under 2048 bits; other curves; keys without
  a ``kid``. The first key with a given ``kid`` wins.
- Only the public part of a key is ever loaded. A key published *over HTTP*
  with private members (``d``…) is skipped outright: whoever could fetch the
  document holds that private key, so tokens it signs prove nothing.
- Refetching is rate limited: an unknown ``kid`` causes at most one fetch per
  ``min_refetch_interval`` however many callers ask (threads wait for the one
  fetch; asyncio tasks share one in-flight task). A failed fetch keeps the
  last good keys. ``Cache-Control: max-age`` is honoured within
  ``[min_refetch_interval, 24 h]``.
"""

from __future__ import annotations

import asyncio
import binascii
import ipaddress
import logging
import math
import os
import re
import threading
import time
from base64 import urlsafe_b64decode
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import httpx
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = ["ALGORITHMS", "KeySet", "PublicKey", "parse_jwks"]

logger = logging.getLogger(__name__)

#: The only JWS algorithms this package will ever verify.
ALGORITHMS: Final = frozenset({"EdDSA", "ES256", "RS256"})

MAX_JWKS_BYTES: Final = 256 * 1024
MAX_CACHE_SECONDS: Final = 86_400.0
MIN_RSA_BITS: Final = 2048
# Verifying with a huge modulus is a cheap way to burn our CPU; no real issuer needs more.
MAX_RSA_BITS: Final = 8192
MAX_KID_LENGTH: Final = 256

_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_MAX_AGE_RE: Final = re.compile(r"max-age\s*=\s*\"?([0-9]{1,12})\"?")

VerifyingKey: TypeAlias = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


@dataclass(frozen=True, slots=True, eq=False)
class PublicKey:
    """A public key pinned to one algorithm.

    ``fingerprint`` identifies the key material (algorithm + SubjectPublicKeyInfo);
    when a refetch returns the same material under the same ``kid`` the old
    object is kept, so callers can compare keys by identity.
    """

    kid: str
    alg: str
    key: VerifyingKey
    fingerprint: bytes = field(repr=False)

    def verify(self, signature: bytes, signing_input: bytes) -> bool:
        """Return whether ``signature`` is this key's valid JWS signature over ``signing_input``."""
        key = self.key
        try:
            if self.alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey):
                if len(signature) != 64:
                    return False
                key.verify(signature, signing_input)
            elif self.alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
                # JWS ECDSA signatures are raw r||s (RFC 7518 §3.4), never DER. r and s
                # must be in [1, n-1]: accepting 0 is the "psychic signature" bug.
                if len(signature) != 64:
                    return False
                r = int.from_bytes(signature[:32], "big")
                s = int.from_bytes(signature[32:], "big")
                if not (0 < r < _P256_ORDER and 0 < s < _P256_ORDER):
                    return False
                key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))
            elif self.alg == "RS256" and isinstance(key, rsa.RSAPublicKey):
                if len(signature) != (key.key_size + 7) // 8:
                    return False
                key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            else:  # pragma: no cover - parse_jwks never builds such a key
                return False
        except InvalidSignature:
            return False
        return True


class _SkipKey(Exception):
    """A JWK we will not use; the message says why (logged, never raised to callers)."""


def _b64url_field(jwk: Mapping[str, Any], name: str) -> bytes:
    # Lenient on padding and trailing bits (they do not matter for a public key
    # and some issuers emit them), strict on the alphabet.
    value = jwk.get(name)
    if not isinstance(value, str) or not value or not _B64URL_RE.fullmatch(value):
        raise _SkipKey(f"missing or invalid {name!r}")
    value = value.rstrip("=")
    try:
        return urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _SkipKey(f"invalid base64url in {name!r}") from exc


def _implied_alg(kty: object, crv: object) -> str:
    if kty == "OKP" and crv == "Ed25519":
        return "EdDSA"
    if kty == "EC" and crv == "P-256":
        return "ES256"
    if kty == "RSA":
        return "RS256"
    raise _SkipKey(f"unsupported key type {kty!r}/{crv!r}")


def _load_public_key(jwk: Mapping[str, Any], alg: str) -> VerifyingKey:
    # Built from the public members only: private members are never read.
    if alg == "EdDSA":
        x = _b64url_field(jwk, "x")
        if len(x) != 32:
            raise _SkipKey("Ed25519 'x' must be 32 bytes")
        return ed25519.Ed25519PublicKey.from_public_bytes(x)
    if alg == "ES256":
        x, y = _b64url_field(jwk, "x"), _b64url_field(jwk, "y")
        if len(x) != 32 or len(y) != 32:
            raise _SkipKey("P-256 coordinates must be 32 bytes")
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
        )
        return numbers.public_key()  # raises ValueError for a point off the curve
    n = int.from_bytes(_b64url_field(jwk, "n"), "big")
    e = int.from_bytes(_b64url_field(jwk, "e"), "big")
    if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
        raise _SkipKey(f"RSA modulus of {n.bit_length()} bits is outside [2048, 8192]")
    return rsa.RSAPublicNumbers(e, n).public_key()


def _parse_jwk(jwk: object, *, allow_private: bool) -> PublicKey:
    if not isinstance(jwk, Mapping):
        raise _SkipKey("not a JSON object")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
        raise _SkipKey("missing or invalid 'kid'")
    kty = jwk.get("kty")
    if kty == "oct":
        raise _SkipKey("symmetric keys are never trusted from a JWKS")
    if "use" in jwk and jwk["use"] != "sig":
        raise _SkipKey("'use' is not 'sig'")
    if "key_ops" in jwk:
        ops = jwk["key_ops"]
        if not isinstance(ops, list) or "verify" not in ops:
            raise _SkipKey("'key_ops' does not allow 'verify'")
    if not allow_private and _PRIVATE_MEMBERS.intersection(jwk):
        raise _SkipKey("private key material was published; the key is compromised")
    implied = _implied_alg(kty, jwk.get("crv"))
    alg = jwk.get("alg", implied)
    if alg != implied:
        raise _SkipKey(f"'alg' {alg!r} does not fit the key type or is not supported")
    key = _load_public_key(jwk, alg)
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PublicKey(kid=kid, alg=alg, key=key, fingerprint=alg.encode() + b"\0" + spki)


def parse_jwks(document: object, *, allow_private: bool = True) -> dict[str, PublicKey]:
    """Parse a JWKS document (``{"keys": [...]}``) into ``kid -> PublicKey``.

    Unusable keys are skipped and logged. ``allow_private=False`` also skips
    keys carrying private members instead of taking their public part.
    Raises :class:`ValueError` if the document itself is not a JWKS.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWKS must be a JSON object with a 'keys' list")
    keys: dict[str, PublicKey] = {}
    for index, jwk in enumerate(document["keys"]):
        try:
            parsed = _parse_jwk(jwk, allow_private=allow_private)
        except (_SkipKey, ValueError, TypeError, OverflowError) as exc:
            logger.warning("skipping JWKS key #%d: %s", index, exc)
            continue
        if parsed.kid in keys:
            logger.warning("skipping JWKS key #%d: duplicate kid %r", index, parsed.kid)
            continue
        keys[parsed.kid] = parsed
    return keys


class _FetchError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Document:
    body: bytes
    cache_control: str | None = None
    mtime_ns: int | None = None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class KeySet:
    """The trusted public keys of one issuer, cached and refreshed safely.

    Give at most one remote source, ``url`` or ``file``; ``jwks`` (a parsed
    JWKS mapping) supplies keys up front, alone or until the first fetch. A
    KeySet with neither ``url`` nor ``file`` is static and changes only
    through :meth:`replace`.

    ``url`` must be ``https`` except on loopback, unless
    ``allow_insecure_http=True``: a JWKS fetched in clear text can be replaced
    by anyone on the path. ``clock`` is monotonic seconds (injectable for
    tests). Pass ``http_client``/``async_http_client`` to reuse your own httpx
    clients (they are not closed here); otherwise a short-lived client is
    opened per fetch, which is rare by design.

    Sync and async refreshes share every decision; only the I/O differs.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        file: str | os.PathLike[str] | None = None,
        jwks: Mapping[str, Any] | None = None,
        min_refetch_interval: float = 30.0,
        default_max_age: float = 300.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        if url is not None and file is not None:
            raise ValueError("give KeySet at most one of url= and file=")
        for name, value in (
            ("min_refetch_interval", min_refetch_interval),
            ("default_max_age", default_max_age),
            ("timeout", timeout),
        ):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")
        if url is not None:
            parsed = httpx.URL(url)
            if parsed.scheme not in ("https", "http") or not parsed.host:
                raise ValueError("JWKS url must be an absolute https URL")
            if parsed.scheme == "http" and not (allow_insecure_http or _is_loopback(parsed.host)):
                raise ValueError("JWKS url must use https (allow_insecure_http=True to override)")
        self.url = url
        self.file = os.fspath(file) if file is not None else None
        self._min_interval = float(min_refetch_interval)
        self._default_max_age = float(default_max_age)
        self._timeout = float(timeout)
        self._clock = clock
        self._http_client = http_client
        self._async_http_client = async_http_client

        self._keys: dict[str, PublicKey] = {}
        # _lock guards state changes and fetch decisions; it is never held across I/O.
        self._lock = threading.Lock()
        # Held for the whole of a sync fetch, so threads wanting an unknown kid
        # wait for the fetch in progress instead of failing before it lands.
        self._sync_fetch_lock = threading.Lock()
        self._inflight: asyncio.Task[bool] | None = None
        self._last_attempt = -math.inf
        self._expires_at = math.inf if url is None and file is None else -math.inf
        self._file_mtime_ns: int | None = None
        #: Monotonic times of the last successful load / failed fetch (None if never).
        self.last_success: float | None = None
        self.last_failure: float | None = None
        #: Number of fetches attempted (HTTP requests made or file reads tried).
        self.fetch_count = 0

        if jwks is not None:
            self.replace(jwks)
        if self.file is not None:
            # Fail fast on a bad path or document: this is configuration, not traffic.
            self._last_attempt = self._clock()
            self.fetch_count += 1
            try:
                document = self._read_file()
            except (OSError, _FetchError) as exc:
                raise ValueError(f"cannot read JWKS file {self.file!r}: {exc}") from exc
            assert document is not None  # nothing was read before, so the mtime differs
            self._accept(document, self._last_attempt, strict=True)

    # -- lookups ---------------------------------------------------------------------

    def get(self, kid: str) -> PublicKey | None:
        """Return the key with this ``kid``, or None. Pure cache lookup, no I/O."""
        return self._keys.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def kids(self) -> tuple[str, ...]:
        """The ``kid`` of every trusted key, in document order."""
        return tuple(self._keys)

    @property
    def stale(self) -> bool:
        """Whether the keys are older than their max-age (always False for a static set)."""
        return self._clock() >= self._expires_at

    @property
    def remote(self) -> bool:
        """Whether the keys come from a URL or file and can be refreshed."""
        return self.url is not None or self.file is not None

    def __repr__(self) -> str:
        source = self.url or self.file or "static"
        return f"<KeySet {source} kids={list(self._keys)!r}>"

    def replace(self, jwks: Mapping[str, Any]) -> None:
        """Swap in the keys of ``jwks`` (e.g. the service's own keys after a rotation).

        Takes the public part of keys that carry private members. Raises
        ValueError if ``jwks`` is not a JWKS document.
        """
        self._install(parse_jwks(jwks, allow_private=True))
        with self._lock:
            self.last_success = self._clock()

    # -- refresh decisions (shared by sync and async) -----------------------------

    def _claim(self, force_unknown_kid: bool) -> bool:
        """Decide, atomically, whether this caller may fetch now; reserve the slot if so."""
        if not self.remote:
            return False
        now = self._clock()
        with self._lock:
            if now < self._last_attempt + self._min_interval:
                return False
            if not force_unknown_kid and now < self._expires_at:
                return False
            self._last_attempt = now
            self.fetch_count += 1
            return True

    def _ttl(self, cache_control: str | None) -> float:
        ttl = self._default_max_age
        if cache_control:
            directives = [d.strip() for d in cache_control.lower().split(",")]
            if "no-store" in directives or "no-cache" in directives:
                ttl = self._min_interval
            else:
                for directive in directives:
                    match = _MAX_AGE_RE.fullmatch(directive)
                    if match:
                        ttl = float(match.group(1))
                        break
        return min(max(ttl, self._min_interval), MAX_CACHE_SECONDS)

    def _install(self, keys: dict[str, PublicKey]) -> bool:
        with self._lock:
            old = self._keys
            # Keep the old object for unchanged material so identity comparisons
            # (the verifier's remembered tokens) survive a refetch.
            merged = {
                kid: old[kid] if kid in old and old[kid].fingerprint == key.fingerprint else key
                for kid, key in keys.items()
            }
            changed = merged.keys() != old.keys() or any(merged[k] is not old[k] for k in merged)
            self._keys = merged
            return changed

    def _accept(self, document: _Document, now: float, *, strict: bool = False) -> bool:
        """Parse and install a fetched document; on any problem keep the last good keys."""
        try:
            if len(document.body) > MAX_JWKS_BYTES:
                raise _FetchError("JWKS document is too large")
            try:
                parsed = orjson.loads(document.body)
            except orjson.JSONDecodeError as exc:
                raise _FetchError("JWKS document is not valid JSON") from exc
            # Private members published over HTTP mean a leaked key; from a local file or
            # in process they are the operator's own keys and only the public part is used.
            keys = parse_jwks(parsed, allow_private=self.url is None)
        except (_FetchError, ValueError) as exc:
            if strict:
                raise ValueError(f"cannot load JWKS: {exc}") from exc
            self._fail(now, str(exc))
            return False
        if not keys:
            logger.warning("JWKS from %s contains no usable keys", self.url or self.file)
        changed = self._install(keys)
        with self._lock:
            self._expires_at = now + (
                self._ttl(document.cache_control) if self.url is not None else self._min_interval
            )
            self.last_success = now
            if document.mtime_ns is not None:
                self._file_mtime_ns = document.mtime_ns
        return changed

    def _fail(self, now: float, reason: str) -> None:
        logger.warning(
            "JWKS refresh from %s failed (keeping %d known keys): %s",
            self.url or self.file,
            len(self._keys),
            reason,
        )
        with self._lock:
            self.last_failure = now
            # No retry storm: the next attempt waits a full interval whatever the cause.
            self._expires_at = max(self._expires_at, now + self._min_interval)

    def _not_modified(self, now: float) -> bool:
        with self._lock:
            self._expires_at = now + self._min_interval
        return False

    def _read_file(self) -> _Document | None:
        """Read the JWKS file, or return None if its mtime has not changed."""
        assert self.file is not None
        stat = os.stat(self.file)
        if stat.st_mtime_ns == self._file_mtime_ns:
            return None
        if stat.st_size > MAX_JWKS_BYTES:
            raise _FetchError("JWKS file is too large")
        with open(self.file, "rb") as fh:
            return _Document(body=fh.read(MAX_JWKS_BYTES + 1), mtime_ns=stat.st_mtime_ns)

    def _check_response(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            raise _FetchError(f"HTTP status {response.status_code}")
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_JWKS_BYTES:
            raise _FetchError("JWKS document is too large")

    def _request_args(self) -> dict[str, Any]:
        assert self.url is not None
        return {
            "method": "GET",
            "url": self.url,
            # identity: a compressed body could expand far beyond our size bound.
            "headers": {"Accept": "application/json", "Accept-Encoding": "identity"},
            "timeout": self._timeout,
        }

    # -- sync I/O ----------------------------------------------------------------------

    def refresh(self, *, force_unknown_kid: bool = False) -> bool:
        """Refetch the keys if allowed now; return whether the key set changed.

        ``force_unknown_kid=True`` (a token named a kid we do not have) fetches
        even before max-age, but still at most once per ``min_refetch_interval``,
        and waits for a fetch another thread has in progress. Without it the
        fetch happens only when the keys are stale, and never waits. Never raises
        for a failed fetch: the last good keys stay in place.
        """
        if not self.remote:
            return False
        if force_unknown_kid:
            acquired = self._sync_fetch_lock.acquire(timeout=2 * self._timeout + 1)
        else:
            acquired = self._sync_fetch_lock.acquire(blocking=False)
        if not acquired:
            return False
        try:
            if not self._claim(force_unknown_kid):
                return False
            return self._fetch_sync()
        finally:
            self._sync_fetch_lock.release()

    def _fetch_sync(self) -> bool:
        now = self._clock()
        try:
            if self.file is not None:
                document = self._read_file()
                if document is None:
                    return self._not_modified(now)
            elif self._http_client is not None:
                document = self._get_sync(self._http_client)
            else:
                with httpx.Client(follow_redirects=False) as client:
                    document = self._get_sync(client)
        except Exception as exc:  # a refresh must never break verification
            self._fail(now, f"{type(exc).__name__}: {exc}")
            return False
        return self._accept(document, now)

    def _get_sync(self, client: httpx.Client) -> _Document:
        with client.stream(**self._request_args()) as response:
            self._check_response(response)
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise _FetchError("JWKS document is too large")
            return _Document(bytes(body), response.headers.get("cache-control"))

    # -- async I/O ---------------------------------------------------------------------

    async def arefresh(self, *, force_unknown_kid: bool = False, wait: bool = True) -> bool:
        """Async :meth:`refresh`. Concurrent callers share one in-flight fetch.

        With ``wait=False`` a due fetch is started in the background and the
        call returns at once (used for stale-but-known keys, so no request pays
        the fetch latency).
        """
        if not self.remote:
            return False
        loop = asyncio.get_running_loop()
        task = self._inflight
        if task is not None and not task.done() and task.get_loop() is loop:
            # shield: a cancelled waiter must not cancel the fetch others wait for.
            return await asyncio.shield(task) if wait else False
        if not self._claim(force_unknown_kid):
            return False
        task = loop.create_task(self._fetch_async())
        self._inflight = task
        if not wait:
            return False
        return await asyncio.shield(task)

    async def _fetch_async(self) -> bool:
        now = self._clock()
        try:
            if self.file is not None:
                # A local JWKS is a few KiB; reading it inline is cheaper than a thread hop.
                document = self._read_file()
                if document is None:
                    return self._not_modified(now)
            elif self._async_http_client is not None:
                document = await self._get_async(self._async_http_client)
            else:
                async with httpx.AsyncClient(follow_redirects=False) as client:
                    document = await self._get_async(client)
        except Exception as exc:  # a refresh must never break verification
            self._fail(now, f"{type(exc).__name__}: {exc}")
            return False
        return self._accept(document, now)

    async def _get_async(self, client: httpx.AsyncClient) -> _Document:
        async with client.stream(**self._request_args()) as response:
            self._check_response(response)
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise _FetchError("JWKS document is too large")
            return _Document(bytes(body), response.headers.get("cache-control"))
