"""KeySet: JWKS parsing and pinning, and fetching from a real HTTP server on loopback.

The server is http.server in a thread: it counts requests, can switch keys, can
answer 500, redirect, stall, send junk, or be stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hostile_tokens import KeyBundle, b64url, jwk_for, mint, sign

from entitlements_client._errors import InvalidTokenError
from entitlements_client.jwks import KeySet, PublicKey, parse_jwks
from entitlements_client.verify import IssuerConfig, TokenVerifier

ISSUER = "https://id.example.test"
AUDIENCE = "entitlements-api"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hang up on purpose here (oversized bodies, timeouts)


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 with a random port."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.status = 200
        self.cache_control: str | None = None
        self.body: bytes | None = None  # raw body instead of the JWKS
        self.send_length = True
        self.location: str | None = None
        self.delay = 0.0
        self.requests = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server names it so
                with outer._lock:
                    outer.requests += 1
                    status, body = outer.status, outer.body or json.dumps(outer.jwks).encode()
                    cache_control, location = outer.cache_control, outer.location
                    delay, send_length = outer.delay, outer.send_length
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if send_length:
                    self.send_header("Content-Length", str(len(body)))
                if cache_control:
                    self.send_header("Cache-Control", cache_control)
                if location:
                    self.send_header("Location", location)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="jwks-server",
            daemon=True,
        )
        self._thread.start()
        self._stopped = False
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/jwks.json"

    def publish(self, *jwks: dict[str, Any]) -> None:
        with self._lock:
            self.jwks = {"keys": list(jwks)}

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()


@pytest.fixture
def server() -> Iterator[JwksServer]:
    srv = JwksServer()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def bundle() -> KeyBundle:
    return KeyBundle.generate()


@pytest.fixture(scope="module")
def new_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def ed_jwk(bundle: KeyBundle) -> dict[str, Any]:
    return jwk_for(bundle.ed25519.public_key(), "ed-1")


def verifier_over(keys: KeySet) -> TokenVerifier:
    return TokenVerifier([IssuerConfig(ISSUER, AUDIENCE, keys, algorithms=KeyBundle.algorithms)])


def tok(bundle: KeyBundle, kid: str = "ed-1", key: Any = None, **claims: Any) -> str:
    return mint(
        bundle,
        ISSUER,
        AUDIENCE,
        header={"kid": kid},
        key=key,
        claims={"jti": f"{kid}-{time.perf_counter_ns()}", **claims},
    )


def code_of(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidTokenError) as info:
        verifier.verify(token)
    return info.value.code


# -- parsing and pinning -----------------------------------------------------------------


def test_keys_are_pinned_to_their_algorithm(bundle: KeyBundle) -> None:
    keys = parse_jwks(bundle.jwks)
    assert {kid: key.alg for kid, key in keys.items()} == {
        "ed-1": "EdDSA",
        "ec-1": "ES256",
        "rsa-1": "RS256",
    }
    no_alg = [{k: v for k, v in jwk.items() if k != "alg"} for jwk in bundle.jwks["keys"][:3]]
    assert [k.alg for k in parse_jwks({"keys": no_alg}).values()] == ["EdDSA", "ES256", "RS256"]


def _jwk_cases(bundle: KeyBundle) -> dict[str, dict[str, Any]]:
    ed = ed_jwk(bundle)
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
    x384 = b64url(p384.x.to_bytes(48, "big"))
    return {
        "use_enc": {**ed, "use": "enc"},
        "key_ops_without_verify": {**ed, "key_ops": ["encrypt"]},
        "key_ops_not_a_list": {**ed, "key_ops": "verify"},
        "oct": {"kty": "oct", "kid": "ed-1", "k": b64url(b"secret")},
        "rsa_1024": jwk_for(bundle.weak_rsa.public_key(), "ed-1"),
        "no_kid": {k: v for k, v in ed.items() if k != "kid"},
        "kid_not_string": {**ed, "kid": 7},
        "kid_too_long": {**ed, "kid": "k" * 257},
        "alg_mismatch": {**ed, "alg": "ES256"},
        "alg_unsupported": {**jwk_for(bundle.rsa.public_key(), "ed-1"), "alg": "RS512"},
        "alg_none": {**ed, "alg": "none"},
        "p384": {"kty": "EC", "crv": "P-384", "kid": "ed-1", "x": x384, "y": x384},
        "ec_point_off_curve": {
            **jwk_for(bundle.p256.public_key(), "ed-1"),
            "y": b64url(b"\x01" * 32),
        },
        "ed25519_short_x": {**ed, "x": b64url(b"\x01" * 31)},
        "x_not_base64url": {**ed, "x": ed["x"][:-2] + "+/"},
        "not_an_object": ["kty", "OKP"],  # type: ignore[dict-item]
        "x448": {**ed, "crv": "X25519"},
    }


@pytest.mark.parametrize(
    "case",
    [
        "use_enc",
        "key_ops_without_verify",
        "key_ops_not_a_list",
        "oct",
        "rsa_1024",
        "no_kid",
        "kid_not_string",
        "kid_too_long",
        "alg_mismatch",
        "alg_unsupported",
        "alg_none",
        "p384",
        "ec_point_off_curve",
        "ed25519_short_x",
        "x_not_base64url",
        "not_an_object",
        "x448",
    ],
)
def test_unusable_keys_are_skipped(bundle: KeyBundle, case: str) -> None:
    assert parse_jwks({"keys": [_jwk_cases(bundle)[case]]}) == {}


def test_key_ops_with_verify_is_accepted_and_first_duplicate_kid_wins(bundle: KeyBundle) -> None:
    first = {**ed_jwk(bundle), "key_ops": ["verify"]}
    second = jwk_for(bundle.attacker.public_key(), "ed-1")
    keys = parse_jwks({"keys": [first, second]})
    assert list(keys) == ["ed-1"]
    assert keys["ed-1"].key == bundle.ed25519.public_key()


def test_private_members_public_part_in_process_skipped_over_http(bundle: KeyBundle) -> None:
    d = bundle.ed25519.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    private_jwk = {**ed_jwk(bundle), "d": b64url(d)}
    keys = parse_jwks({"keys": [private_jwk]})
    assert isinstance(keys["ed-1"].key, ed25519.Ed25519PublicKey)  # public part only
    assert parse_jwks({"keys": [private_jwk]}, allow_private=False) == {}


@pytest.mark.parametrize("document", [[], {"keys": {}}, {"key": []}, "keys", None])
def test_a_non_jwks_document_is_an_error(document: Any) -> None:
    with pytest.raises(ValueError):
        parse_jwks(document)
    if document is not None:  # jwks=None means "no keys yet"
        with pytest.raises(ValueError):
            KeySet(jwks=document)


def test_es256_signature_must_be_raw_r_s_in_range(bundle: KeyBundle) -> None:
    key = parse_jwks(bundle.jwks)["ec-1"]
    data = b"header.payload"
    good = sign(bundle.p256, data)
    assert key.verify(good, data)
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    r, s = int.from_bytes(good[:32], "big"), int.from_bytes(good[32:], "big")

    def raw(r: int, s: int) -> bytes:
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    for bad_r, bad_s in ((0, s), (r, 0), (n, s), (r, n), (0, 0), (n, n)):
        assert not key.verify(raw(bad_r, bad_s), data)
    # The other valid s (n - s) is accepted: JWS does not require low-s, and the
    # verifier remembers tokens by their exact text, so malleability gains nothing.
    assert key.verify(raw(r, n - s), data)
    assert not key.verify(good + b"\x00", data)
    assert not key.verify(good[:-1], data)


def test_rsa_signature_length_must_match_the_modulus(bundle: KeyBundle) -> None:
    key: PublicKey = parse_jwks(bundle.jwks)["rsa-1"]
    data = b"header.payload"
    good = sign(bundle.rsa, data)
    assert key.verify(good, data)
    assert not key.verify(b"\x00" + good, data)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://idp.example/jwks", True),
        ("http://127.0.0.1:9/jwks", True),
        ("http://localhost:9/jwks", True),
        ("http://[::1]:9/jwks", True),
        ("http://idp.example/jwks", False),
        ("ftp://idp.example/jwks", False),
        ("file:///etc/passwd", False),
        ("/jwks.json", False),
    ],
)
def test_url_must_be_https_except_on_loopback(url: str, ok: bool) -> None:
    if ok:
        KeySet(url=url)
    else:
        with pytest.raises(ValueError):
            KeySet(url=url)
    assert KeySet(url="http://idp.example/jwks", allow_insecure_http=True).url


@pytest.mark.parametrize(
    "options",
    [
        {"url": "https://a/j", "file": "x"},
        {"min_refetch_interval": 0},
        {"timeout": -1},
        {"default_max_age": float("nan")},
    ],
)
def test_keyset_options_are_validated(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        KeySet(**options)


# -- rotation --------------------------------------------------------------------------------


def test_rotation_without_downtime(
    server: JwksServer, bundle: KeyBundle, new_key: ed25519.Ed25519PrivateKey
) -> None:
    clock = Clock()
    server.publish(ed_jwk(bundle))
    keys = KeySet(url=server.url, clock=clock)
    verifier = verifier_over(keys)
    old_token = tok(bundle)
    assert verifier.verify(old_token)
    assert server.requests == 1

    # The issuer publishes the next key before signing with it.
    server.publish(ed_jwk(bundle), jwk_for(new_key.public_key(), "ed-2"))
    assert verifier.verify(tok(bundle))
    assert server.requests == 1  # known kid: no fetch

    # A token with the new kid arrives right away: one refetch per interval at most...
    clock.advance(30)
    assert verifier.verify(tok(bundle, "ed-2", key=new_key)).claims["sub"] == "user-1"
    assert server.requests == 2
    assert verifier.verify(old_token)  # ...and the old key keeps working

    # Later the old key is withdrawn; after max-age its tokens stop, remembered or not.
    server.publish(jwk_for(new_key.public_key(), "ed-2"))
    clock.advance(301)
    assert verifier.verify(tok(bundle, "ed-2", key=new_key))  # stale set refreshed inline
    assert server.requests == 3
    assert code_of(verifier, old_token) == "unknown_key"


async def test_rotation_without_downtime_async(
    server: JwksServer, bundle: KeyBundle, new_key: ed25519.Ed25519PrivateKey
) -> None:
    clock = Clock()
    server.publish(ed_jwk(bundle))
    keys = KeySet(url=server.url, clock=clock)
    verifier = verifier_over(keys)
    old_token = tok(bundle)
    assert await verifier.averify(old_token)
    server.publish(ed_jwk(bundle), jwk_for(new_key.public_key(), "ed-2"))
    clock.advance(30)
    assert await verifier.averify(tok(bundle, "ed-2", key=new_key))
    assert server.requests == 2
    assert await verifier.averify(old_token)

    server.publish(jwk_for(new_key.public_key(), "ed-2"))
    clock.advance(301)
    # Stale but known key: the request does not wait; the refresh runs in the background.
    assert await verifier.averify(tok(bundle, "ed-2", key=new_key))
    await keys.arefresh()  # joins the in-flight background fetch
    assert server.requests == 3
    with pytest.raises(InvalidTokenError) as info:
        await verifier.averify(old_token)
    assert info.value.code == "unknown_key"


def test_new_kid_within_the_interval_is_refused_until_the_next_fetch(
    server: JwksServer, bundle: KeyBundle, new_key: ed25519.Ed25519PrivateKey
) -> None:
    clock = Clock()
    server.publish(ed_jwk(bundle))
    verifier = verifier_over(KeySet(url=server.url, clock=clock))
    assert verifier.verify(tok(bundle))
    server.publish(ed_jwk(bundle), jwk_for(new_key.public_key(), "ed-2"))
    new_token = tok(bundle, "ed-2", key=new_key)
    clock.advance(29)
    assert code_of(verifier, new_token) == "unknown_key"
    assert server.requests == 1
    clock.advance(1)
    assert verifier.verify(new_token)
    assert server.requests == 2


# -- refetch storms -----------------------------------------------------------------------------


def test_1000_unknown_kids_cause_one_fetch_sync(server: JwksServer, bundle: KeyBundle) -> None:
    server.publish(ed_jwk(bundle))
    verifier = verifier_over(KeySet(url=server.url))
    tokens = [tok(bundle, f"unknown-{i}") for i in range(1000)]
    for token in tokens:
        assert code_of(verifier, token) == "unknown_key"
    assert server.requests == 1
    assert verifier.verify(tok(bundle))  # known keys unaffected
    assert server.requests == 1


def test_1000_unknown_kids_from_threads_cause_one_fetch(
    server: JwksServer, bundle: KeyBundle
) -> None:
    server.publish(ed_jwk(bundle))
    server.delay = 0.05  # keep the first fetch in flight while the others pile up
    verifier = verifier_over(KeySet(url=server.url))
    tokens = [tok(bundle, f"unknown-{i}") for i in range(1000)]
    codes: list[str] = []

    def work(chunk: list[str]) -> None:
        for token in chunk:
            try:
                verifier.verify(token)
            except InvalidTokenError as exc:
                codes.append(exc.code)

    threads = [threading.Thread(target=work, args=(tokens[i::10],)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == ["unknown_key"] * 1000
    assert server.requests == 1


async def test_1000_concurrent_unknown_kids_cause_one_fetch_async(
    server: JwksServer, bundle: KeyBundle
) -> None:
    server.publish(ed_jwk(bundle))
    verifier = verifier_over(KeySet(url=server.url))
    tokens = [tok(bundle, f"unknown-{i}") for i in range(1000)]
    results = await asyncio.gather(*(verifier.averify(t) for t in tokens), return_exceptions=True)
    assert all(isinstance(r, InvalidTokenError) and r.code == "unknown_key" for r in results)
    assert server.requests == 1


async def test_concurrent_first_use_shares_one_fetch_and_succeeds(
    server: JwksServer, bundle: KeyBundle
) -> None:
    server.publish(ed_jwk(bundle))
    server.delay = 0.05
    verifier = verifier_over(KeySet(url=server.url))
    results = await asyncio.gather(*(verifier.averify(tok(bundle)) for _ in range(200)))
    assert {r.claims["sub"] for r in results} == {"user-1"}
    assert server.requests == 1


# -- failures keep the last good keys -----------------------------------------------------------


def test_endpoint_down_known_keys_still_verify(server: JwksServer, bundle: KeyBundle) -> None:
    clock = Clock()
    server.publish(ed_jwk(bundle))
    keys = KeySet(url=server.url, clock=clock)
    verifier = verifier_over(keys)
    assert verifier.verify(tok(bundle))

    server.status = 500
    clock.advance(301)  # stale: the next verify tries to refresh
    for _ in range(100):
        assert verifier.verify(tok(bundle))
    assert server.requests == 2  # one failed attempt, no retry storm
    assert keys.last_failure == clock.now
    for i in range(100):
        assert code_of(verifier, tok(bundle, f"unknown-{i}")) == "unknown_key"
    assert server.requests == 2

    server.stop()  # connection refused from now on
    clock.advance(31)
    assert verifier.verify(tok(bundle))
    assert keys.last_failure == clock.now
    assert keys.kids == ("ed-1",)


@pytest.mark.parametrize(
    "failure",
    [
        "status_404",
        "bad_json",
        "not_jwks",
        "oversized",
        "oversized_unannounced",
        "redirect",
        "timeout",
    ],
)
def test_bad_responses_keep_the_last_good_keys(
    server: JwksServer, bundle: KeyBundle, failure: str
) -> None:
    clock = Clock()
    server.publish(ed_jwk(bundle))
    keys = KeySet(url=server.url, clock=clock, timeout=0.3)
    assert keys.refresh(force_unknown_kid=True)
    if failure == "status_404":
        server.status = 404
    elif failure == "bad_json":
        server.body = b'{"keys": [}'
    elif failure == "not_jwks":
        server.body = b'{"jwks": []}'
    elif failure.startswith("oversized"):
        server.body = b'{"keys": [' + b" " * (300 * 1024) + b"]}"
        server.send_length = failure == "oversized"
    elif failure == "redirect":
        server.status, server.location = 302, "http://127.0.0.1:9/evil.json"
    else:
        server.delay = 1.0
    clock.advance(31)
    started = time.monotonic()
    assert keys.refresh(force_unknown_kid=True) is False
    assert time.monotonic() - started < 0.9
    assert keys.kids == ("ed-1",)
    assert keys.last_failure == clock.now


def test_never_loaded_keys_are_reported_as_unavailable(
    server: JwksServer, bundle: KeyBundle
) -> None:
    server.status = 503
    verifier = verifier_over(KeySet(url=server.url))
    assert code_of(verifier, tok(bundle)) == "keys_unavailable"
    assert code_of(verifier, tok(bundle)) == "keys_unavailable"
    assert server.requests == 1


def test_private_key_published_over_http_is_not_trusted(
    server: JwksServer, bundle: KeyBundle
) -> None:
    d = bundle.ed25519.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    server.publish({**ed_jwk(bundle), "d": b64url(d)}, jwk_for(bundle.p256.public_key(), "ec-1"))
    keys = KeySet(url=server.url)
    assert keys.refresh(force_unknown_kid=True)
    assert keys.kids == ("ec-1",)


# -- caching rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cache_control", "ttl"),
    [
        ("public, max-age=120", 120),
        ("max-age=1", 30),
        ("max-age=999999999", 86400),
        ("no-store", 30),
        ("no-cache, max-age=600", 30),
        (None, 300),
        ("max-age=abc", 300),
    ],
)
def test_cache_control_max_age_is_honoured_within_bounds(
    server: JwksServer, bundle: KeyBundle, cache_control: str | None, ttl: float
) -> None:
    clock = Clock()
    server.publish(ed_jwk(bundle))
    server.cache_control = cache_control
    keys = KeySet(url=server.url, clock=clock)
    assert keys.stale
    assert keys.refresh()
    clock.advance(ttl - 0.5)
    assert not keys.stale
    assert keys.refresh() is False
    clock.advance(1)
    assert keys.stale
    keys.refresh()
    assert server.requests == 2


def test_max_age_drives_refetches_during_verification(
    server: JwksServer, bundle: KeyBundle
) -> None:
    clock = Clock()
    server.publish(ed_jwk(bundle))
    server.cache_control = "max-age=120"
    verifier = verifier_over(KeySet(url=server.url, clock=clock))
    assert verifier.verify(tok(bundle))
    clock.advance(119)
    assert verifier.verify(tok(bundle))
    assert server.requests == 1
    clock.advance(2)
    assert verifier.verify(tok(bundle))
    assert server.requests == 2


# -- file source, injected clients, in-process replace --------------------------------------------


def test_file_source_reloads_when_its_mtime_changes(
    tmp_path: Path, bundle: KeyBundle, new_key: ed25519.Ed25519PrivateKey
) -> None:
    clock = Clock()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [ed_jwk(bundle)]}))
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    keys = KeySet(file=path, clock=clock)
    verifier = verifier_over(keys)
    assert keys.kids == ("ed-1",)
    assert verifier.verify(tok(bundle))

    path.write_text(json.dumps({"keys": [ed_jwk(bundle), jwk_for(new_key.public_key(), "ed-2")]}))
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    new_token = tok(bundle, "ed-2", key=new_key)
    assert code_of(verifier, new_token) == "unknown_key"  # checked at most once per interval
    clock.advance(30)
    assert verifier.verify(new_token)
    reads = keys.fetch_count
    clock.advance(30)
    assert keys.refresh() is False  # same mtime: not re-read
    assert keys.fetch_count == reads + 1 and list(keys.kids) == ["ed-1", "ed-2"]

    path.write_text("{not json")
    os.utime(path, ns=(3_000_000_000, 3_000_000_000))
    clock.advance(30)
    assert keys.refresh() is False
    assert list(keys.kids) == ["ed-1", "ed-2"] and keys.last_failure == clock.now


def test_file_source_fails_fast_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        KeySet(file=tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    with pytest.raises(ValueError):
        KeySet(file=bad)


def test_file_private_key_takes_the_public_part(tmp_path: Path, bundle: KeyBundle) -> None:
    d = bundle.ed25519.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**ed_jwk(bundle), "d": b64url(d)}]}))
    assert KeySet(file=path).kids == ("ed-1",)


def test_injected_sync_client_is_used_and_left_open(server: JwksServer, bundle: KeyBundle) -> None:
    server.publish(ed_jwk(bundle))
    seen: list[str] = []
    with httpx.Client(
        event_hooks={"request": [lambda request: seen.append(str(request.url))]}
    ) as client:
        keys = KeySet(url=server.url, http_client=client)
        assert verifier_over(keys).verify(tok(bundle))
        assert seen == [server.url]
        assert not client.is_closed


async def test_injected_async_client_is_used(server: JwksServer, bundle: KeyBundle) -> None:
    server.publish(ed_jwk(bundle))
    seen: list[str] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(str(request.url))

    async with httpx.AsyncClient(event_hooks={"request": [hook]}) as client:
        keys = KeySet(url=server.url, async_http_client=client)
        assert await verifier_over(keys).averify(tok(bundle))
        assert seen == [server.url]


def test_static_keyset_never_fetches_and_replace_swaps_keys(
    bundle: KeyBundle, new_key: ed25519.Ed25519PrivateKey
) -> None:
    keys = KeySet(jwks={"keys": [ed_jwk(bundle)]})
    assert not keys.remote and not keys.stale
    assert keys.refresh(force_unknown_kid=True) is False
    keys.replace({"keys": [jwk_for(new_key.public_key(), "ed-2")]})
    assert keys.kids == ("ed-2",) and "ed-2" in keys and len(keys) == 1
    assert keys.get("ed-1") is None


def test_rsa_keys_over_8192_bits_are_skipped(bundle: KeyBundle) -> None:
    n = (1 << 8192) + 1  # not a real modulus; the size check comes first
    jwk = {"kty": "RSA", "kid": "huge", "n": b64url(n.to_bytes(1025, "big")), "e": "AQAB"}
    assert parse_jwks({"keys": [jwk]}) == {}
    assert isinstance(parse_jwks(bundle.jwks)["rsa-1"].key, rsa.RSAPublicKey)
