"""TokenVerifier: valid tokens, issuer policy, leeway, several issuers, the remembered-token cache."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hostile_tokens import KeyBundle, jwk_for, make_token, mint

from entitlements_client._errors import (
    EntitlementsClientError,
    Forbidden,
    ForbiddenError,
    InvalidToken,
    InvalidTokenError,
    Unavailable,
    UnavailableError,
)
from entitlements_client.jwks import KeySet, PublicKey
from entitlements_client.verify import (
    IssuerConfig,
    TokenVerifier,
    VerifiedToken,
    parse_duration,
)

ISSUER = "https://id.example.test"
AUDIENCE = "entitlements-api"
NOW = 1_800_000_000
# The user id of the test tokens (sub "user-1"): in the issuer's namespace by default.
USER = ISSUER + "|user-1"


class Clock:
    """A settable clock (wall or monotonic seconds)."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def bundle() -> KeyBundle:
    return KeyBundle.generate()


def config(bundle: KeyBundle, **options: Any) -> IssuerConfig:
    options.setdefault("algorithms", KeyBundle.algorithms)
    return IssuerConfig(ISSUER, AUDIENCE, KeySet(jwks=bundle.jwks), **options)


def verifier_for(
    bundle: KeyBundle,
    clock: Clock | None = None,
    *,
    issuer: dict[str, Any] | None = None,
    **options: Any,
) -> TokenVerifier:
    return TokenVerifier([config(bundle, **(issuer or {}))], clock=clock or Clock(), **options)


def token(bundle: KeyBundle, alg: str = "EdDSA", **options: Any) -> str:
    options.setdefault("now", NOW)
    return mint(bundle, ISSUER, AUDIENCE, alg=alg, **options)


def code_of(call: Callable[[], object]) -> str:
    with pytest.raises(InvalidTokenError) as info:
        call()
    return info.value.code


# -- valid tokens ------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_valid_token_verifies(bundle: KeyBundle, alg: str) -> None:
    verified = verifier_for(bundle).verify(
        token(bundle, alg, claims={"scope": "a b  c", "act": {"sub": "svc"}})
    )
    assert isinstance(verified, VerifiedToken)
    assert verified.issuer == ISSUER
    assert verified.subject == USER
    assert verified.audience == (AUDIENCE,)
    assert (verified.issued_at, verified.expires_at) == (NOW, NOW + 600)
    assert verified.scopes == frozenset({"a", "b", "c"})
    assert verified.has_scope("b") and not verified.has_scope("d")
    assert verified.roles == ("listener",) and verified.has_role("listener")
    assert verified.tenant == "tenant-1"
    assert verified.typ == "at+jwt"
    assert verified.actor == {"sub": "svc"}
    assert verified.claims["sub"] == "user-1"


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
async def test_valid_token_verifies_async(bundle: KeyBundle, alg: str) -> None:
    verified = await verifier_for(bundle).averify(token(bundle, alg))
    assert verified.subject == USER


def test_bytes_token_verifies(bundle: KeyBundle) -> None:
    assert verifier_for(bundle).verify(token(bundle).encode()).subject == USER


def test_claims_are_deeply_read_only(bundle: KeyBundle) -> None:
    verified = verifier_for(bundle).verify(
        token(bundle, claims={"act": {"sub": "svc", "act": {"sub": "x"}}})
    )
    with pytest.raises(TypeError):
        verified.claims["sub"] = "admin"  # type: ignore[index]
    assert verified.actor is not None
    with pytest.raises(TypeError):
        verified.actor["act"]["sub"] = "admin"
    assert isinstance(verified.claims["roles"], tuple)


def test_optional_claims_absent(bundle: KeyBundle) -> None:
    verified = verifier_for(bundle).verify(token(bundle, drop=["scope", "roles", "tid"]))
    assert verified.scopes == frozenset()
    assert verified.roles == ()
    assert verified.tenant is None and verified.actor is None


def test_audience_list_containing_us(bundle: KeyBundle) -> None:
    verified = verifier_for(bundle).verify(token(bundle, claims={"aud": ["other", AUDIENCE]}))
    assert verified.audience == ("other", AUDIENCE)


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"])
def test_typ_forms_of_at_jwt(bundle: KeyBundle, typ: str) -> None:
    assert verifier_for(bundle).verify(token(bundle, header={"typ": typ})).typ == typ


def test_typ_is_configurable_per_issuer(bundle: KeyBundle) -> None:
    jwt_issuer = verifier_for(bundle, issuer={"typ": ("JWT",)})
    assert jwt_issuer.verify(token(bundle, header={"typ": "JWT"}))
    assert code_of(lambda: jwt_issuer.verify(token(bundle))) == "bad_type"
    no_typ = verifier_for(bundle, issuer={"typ": ("",)})
    assert no_typ.verify(token(bundle, drop=["typ"])).typ == ""
    assert code_of(lambda: no_typ.verify(token(bundle))) == "bad_type"


def test_algorithm_must_be_allowed_for_the_issuer(bundle: KeyBundle) -> None:
    eddsa_only = verifier_for(bundle, issuer={"algorithms": ("EdDSA",)})
    assert eddsa_only.verify(token(bundle, "EdDSA"))
    assert code_of(lambda: eddsa_only.verify(token(bundle, "ES256"))) == "bad_algorithm"
    assert code_of(lambda: eddsa_only.verify(token(bundle, "RS256"))) == "bad_algorithm"


def test_key_without_alg_is_pinned_by_its_type(bundle: KeyBundle) -> None:
    jwks = {"keys": [{k: v for k, v in jwk.items() if k != "alg"} for jwk in bundle.jwks["keys"]]}
    verifier = TokenVerifier(
        [IssuerConfig(ISSUER, AUDIENCE, KeySet(jwks=jwks), algorithms=KeyBundle.algorithms)],
        clock=Clock(),
    )
    for alg in KeyBundle.algorithms:
        assert verifier.verify(token(bundle, alg))
    wrong = make_token(
        {"alg": "ES256", "kid": "ed-1", "typ": "at+jwt"},
        json.loads(
            json.dumps(
                {
                    "iss": ISSUER,
                    "aud": AUDIENCE,
                    "sub": "u",
                    "iat": NOW,
                    "exp": NOW + 60,
                    "jti": "j",
                }
            )
        ),
        bundle.ed25519,
    )
    assert code_of(lambda: verifier.verify(wrong)) == "bad_algorithm"


# -- roles ------------------------------------------------------------------------------


def test_roles_claim_dotted_path(bundle: KeyBundle) -> None:
    keycloak = verifier_for(bundle, issuer={"roles_claim": "realm_access.roles"})
    verified = keycloak.verify(token(bundle, claims={"realm_access": {"roles": ["admin", "ops"]}}))
    assert verified.roles == ("admin", "ops")
    assert keycloak.verify(token(bundle, claims={"realm_access": {}})).roles == ()
    assert keycloak.verify(token(bundle, drop=["roles"])).roles == ()
    assert (
        code_of(lambda: keycloak.verify(token(bundle, claims={"realm_access": ["admin"]})))
        == "bad_claim"
    )
    assert (
        code_of(lambda: keycloak.verify(token(bundle, claims={"realm_access": {"roles": "admin"}})))
        == "bad_claim"
    )


# -- time and leeway --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leeway", "exp_offset", "ok"),
    [
        (30, -29, True),
        (30, -30, False),
        (0, 1, True),
        (0, 0, False),
        (10, -9, True),
        (10, -10, False),
    ],
)
def test_expiry_leeway_boundary(
    bundle: KeyBundle, leeway: float, exp_offset: int, ok: bool
) -> None:
    verifier = verifier_for(bundle, leeway=leeway)
    tok = token(bundle, claims={"iat": NOW - 600, "exp": NOW + exp_offset})
    if ok:
        assert verifier.verify(tok)
    else:
        assert code_of(lambda: verifier.verify(tok)) == "expired"


@pytest.mark.parametrize("claim", ["iat", "nbf"])
@pytest.mark.parametrize(("offset", "ok"), [(30, True), (31, False)])
def test_issued_and_not_before_leeway_boundary(
    bundle: KeyBundle, claim: str, offset: int, ok: bool
) -> None:
    verifier = verifier_for(bundle, leeway=30)
    claims = {"iat": NOW, "exp": NOW + 600, claim: NOW + offset}
    tok = token(bundle, claims=claims)
    if ok:
        assert verifier.verify(tok)
    else:
        assert code_of(lambda: verifier.verify(tok)) == "not_yet_valid"


@pytest.mark.parametrize("leeway", [-1, 30.5, 31, float("nan"), True])
def test_leeway_must_be_between_0_and_30(bundle: KeyBundle, leeway: float) -> None:
    with pytest.raises(ValueError):
        verifier_for(bundle, leeway=leeway)


def test_lifetime_cap_per_issuer(bundle: KeyBundle) -> None:
    short = verifier_for(bundle, issuer={"max_lifetime": 900})
    assert short.verify(token(bundle, ttl=900))
    assert code_of(lambda: short.verify(token(bundle, ttl=901))) == "lifetime_exceeded"
    week = verifier_for(bundle, issuer={"max_lifetime": parse_duration("7d")})
    assert week.verify(token(bundle, ttl=7 * 86400))


# -- several issuers ----------------------------------------------------------------------


def test_several_issuers_each_with_its_own_keys(bundle: KeyBundle) -> None:
    other = KeyBundle.generate()
    # Both issuers publish a key under the same kid: the token's iss decides whose key is used.
    ours = IssuerConfig(ISSUER, AUDIENCE, KeySet(jwks=bundle.jwks))
    theirs = IssuerConfig(
        "https://other.example", "other-aud", KeySet(jwks=other.jwks), typ=("JWT",)
    )
    verifier = TokenVerifier([ours, theirs], clock=Clock())
    assert verifier.verify(token(bundle)).issuer == ISSUER
    their_token = mint(other, "https://other.example", "other-aud", now=NOW, header={"typ": "JWT"})
    assert verifier.verify(their_token).issuer == "https://other.example"
    # Their issuer name, our key (same kid): the signature must not verify.
    forged = mint(bundle, "https://other.example", "other-aud", now=NOW, header={"typ": "JWT"})
    assert code_of(lambda: verifier.verify(forged)) == "bad_signature"
    # Our issuer, their audience.
    assert (
        code_of(lambda: verifier.verify(mint(bundle, ISSUER, "other-aud", now=NOW)))
        == "bad_audience"
    )
    # Our issuer, but a typ only they may use.
    assert code_of(lambda: verifier.verify(token(bundle, header={"typ": "JWT"}))) == "bad_type"


def test_issuers_must_be_unique_and_present(bundle: KeyBundle) -> None:
    with pytest.raises(ValueError):
        TokenVerifier([])
    with pytest.raises(ValueError):
        TokenVerifier([config(bundle), config(bundle)])


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize("algorithms", [("HS256",), ("none",), ("EdDSA", "RS512"), (), ("eddsa",)])
def test_unsupported_algorithms_are_refused_at_construction(
    bundle: KeyBundle, algorithms: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError):
        IssuerConfig(ISSUER, AUDIENCE, KeySet(), algorithms=algorithms)


def test_issuer_config_from_mapping(tmp_path: Path, bundle: KeyBundle) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(bundle.jwks))
    cfg = IssuerConfig.from_mapping(
        {
            "issuer": ISSUER,
            "jwks_file": str(path),
            "audience": AUDIENCE,
            "algorithms": ["EdDSA", "ES256"],
            "roles_claim": "realm_access.roles",
            "typ": ["at+jwt", "JWT"],
            "max_lifetime": "15m",
        }
    )
    assert cfg.algorithms == ("EdDSA", "ES256")
    assert cfg.typ == ("at+jwt", "JWT")
    assert cfg.max_lifetime == 900
    assert cfg.keys.kids == ("ed-1", "ec-1", "rsa-1")
    verifier = TokenVerifier([cfg], clock=Clock())
    assert verifier.verify(
        token(bundle, "ES256", ttl=900, claims={"realm_access": {"roles": ["r"]}})
    ).roles == ("r",)

    defaults = IssuerConfig.from_mapping(
        {"issuer": ISSUER, "jwks_file": str(path), "audience": AUDIENCE}
    )
    assert (defaults.algorithms, defaults.typ, defaults.max_lifetime) == (
        ("EdDSA",),
        ("at+jwt",),
        86400,
    )
    no_typ = IssuerConfig.from_mapping(
        {"issuer": ISSUER, "jwks_file": str(path), "audience": AUDIENCE, "typ": None}
    )
    assert no_typ.typ == ("",)


@pytest.mark.parametrize(
    "item",
    [
        {"issuer": ISSUER, "audience": AUDIENCE},
        {"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": "https://a/jwks", "jwks_file": "x"},
        {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "jwks_url": "https://a/jwks",
            "algorithm": ["EdDSA"],
        },
        {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "jwks_url": "https://a/jwks",
            "algorithms": ["HS256"],
        },
        {"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": "http://idp.example/jwks"},
        {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "jwks_url": "https://a/jwks",
            "max_lifetime": "forever",
        },
        {"issuer": "", "audience": AUDIENCE, "jwks_url": "https://a/jwks"},
        {"issuer": ISSUER, "jwks_url": "https://a/jwks"},
    ],
    ids=[
        "no-keys",
        "two-key-sources",
        "typo",
        "hs256",
        "plain-http",
        "bad-lifetime",
        "empty-issuer",
        "no-audience",
    ],
)
def test_issuer_config_from_mapping_rejects_bad_items(item: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        IssuerConfig.from_mapping(item)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("24h", 86400),
        ("7d", 604800),
        ("1h30m", 5400),
        ("90", 90),
        ("500ms", 0.5),
        ("50ms", 0.05),
        ("0.5", 0.5),
        ("1m30s", 90),
        (120, 120),
        (1.5, 1.5),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "0", "0ms", "-5m", "5 minutes", "1w", True, "1e3", "ms", ".5", float("inf")]
)
def test_parse_duration_rejects(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_error_tree_and_aliases() -> None:
    assert issubclass(InvalidTokenError, EntitlementsClientError)
    assert issubclass(ForbiddenError, EntitlementsClientError)
    assert issubclass(UnavailableError, EntitlementsClientError)
    assert (InvalidToken, Forbidden, Unavailable) == (
        InvalidTokenError,
        ForbiddenError,
        UnavailableError,
    )
    err = ForbiddenError()
    assert err.request is None and err.response is None
    assert InvalidTokenError("expired").message == "token has expired"
    assert "expired" in repr(InvalidTokenError("expired"))


# -- remembered tokens ------------------------------------------------------------------------


@pytest.fixture
def signature_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every signature verification (instrumentation, not a mock: the real code runs)."""
    calls: list[str] = []
    real = PublicKey.verify

    def counting(self: PublicKey, signature: bytes, signing_input: bytes) -> bool:
        calls.append(self.kid)
        return real(self, signature, signing_input)

    monkeypatch.setattr(PublicKey, "verify", counting)
    return calls


def test_second_verify_is_served_from_memory(bundle: KeyBundle, signature_calls: list[str]) -> None:
    verifier = verifier_for(bundle)
    tok = token(bundle)
    first = verifier.verify(tok)
    second = verifier.verify(tok)
    assert second is first
    assert signature_calls == ["ed-1"]
    info = verifier.cache_info()
    assert (info.hits, info.misses, info.size, info.maxsize) == (1, 1, 1, 10_000)
    assert verifier.verify_cached(tok) is first


async def test_async_verify_shares_the_memory(
    bundle: KeyBundle, signature_calls: list[str]
) -> None:
    verifier = verifier_for(bundle)
    tok = token(bundle)
    assert verifier.verify(tok) is await verifier.averify(tok)
    assert signature_calls == ["ed-1"]


def test_remembered_token_still_expires(bundle: KeyBundle) -> None:
    clock = Clock()
    verifier = verifier_for(bundle, clock, leeway=5)
    tok = token(bundle, ttl=60)
    assert verifier.verify(tok)
    clock.now = NOW + 64
    assert verifier.verify(tok)
    clock.now = NOW + 65
    assert code_of(lambda: verifier.verify(tok)) == "expired"
    assert verifier.cache_info().size == 0
    assert verifier.verify_cached(tok) is None
    # The fast path applies the same rule.
    clock.now = NOW
    verifier.verify(tok)
    clock.now = NOW + 65
    assert code_of(lambda: verifier.verify_cached(tok)) == "expired"


def test_revocation_is_checked_on_every_verify_including_remembered(bundle: KeyBundle) -> None:
    revoked: set[str] = set()
    seen: list[str] = []

    def is_revoked(verified: VerifiedToken) -> bool:
        seen.append(verified.jti)
        return verified.jti in revoked

    verifier = verifier_for(bundle, is_revoked=is_revoked)
    tok = token(bundle, claims={"jti": "order-42"})
    assert verifier.verify(tok)
    assert verifier.verify(tok)
    revoked.add("order-42")
    assert code_of(lambda: verifier.verify(tok)) == "revoked"
    assert code_of(lambda: verifier.verify_cached(tok)) == "revoked"
    assert seen == ["order-42"] * 4
    revoked.clear()
    assert verifier.verify(tok)  # revocation lifted: still remembered


def test_revocation_check_failure_fails_closed(bundle: KeyBundle) -> None:
    def broken(verified: VerifiedToken) -> bool:
        raise RuntimeError("revocation store down")

    verifier = verifier_for(bundle, is_revoked=broken)
    assert code_of(lambda: verifier.verify(token(bundle))) == "revocation_check_failed"


def test_memory_is_bounded_lru(bundle: KeyBundle) -> None:
    verifier = verifier_for(bundle, cache_size=2)
    a, b, c = (token(bundle, claims={"jti": j}) for j in "abc")
    verifier.verify(a)
    verifier.verify(b)
    verifier.verify(a)  # a is now the most recent
    verifier.verify(c)  # evicts b
    assert verifier.verify_cached(a) and verifier.verify_cached(c)
    assert verifier.verify_cached(b) is None
    assert verifier.cache_info().size == 2


def test_memory_can_be_disabled_forgotten_and_cleared(
    bundle: KeyBundle, signature_calls: list[str]
) -> None:
    off = verifier_for(bundle, cache_size=0)
    tok = token(bundle)
    off.verify(tok)
    off.verify(tok)
    assert len(signature_calls) == 2 and off.cache_info().size == 0

    on = verifier_for(bundle)
    on.verify(tok)
    on.forget(tok)
    assert on.verify_cached(tok) is None
    on.verify(tok)
    on.clear()
    assert on.cache_info().size == 0


def test_removing_a_key_stops_its_remembered_tokens(
    bundle: KeyBundle, signature_calls: list[str]
) -> None:
    verifier = verifier_for(bundle)
    keys = verifier.issuers[0].keys
    tok = token(bundle)
    verifier.verify(tok)
    # A refetch returning the same key material keeps the remembered token.
    keys.replace(json.loads(json.dumps(bundle.jwks)))
    verifier.verify(tok)
    assert signature_calls == ["ed-1"]
    # The key is withdrawn (compromised): the remembered token is dropped at once.
    keys.replace({"keys": [k for k in bundle.jwks["keys"] if k["kid"] != "ed-1"]})
    assert code_of(lambda: verifier.verify(tok)) == "unknown_key"
    # The same kid now names a different key: not trusted for the old token either.
    keys.replace({"keys": [jwk_for(bundle.attacker.public_key(), "ed-1")]})
    assert code_of(lambda: verifier.verify(tok)) == "bad_signature"


def test_tokens_differing_only_in_encoding_are_not_confused(bundle: KeyBundle) -> None:
    verifier = verifier_for(bundle)
    tok = token(bundle)
    verifier.verify(tok)
    with pytest.raises(InvalidTokenError):
        verifier.verify(tok + "=")
    with pytest.raises(InvalidTokenError):
        verifier.verify(" " + tok)


def test_threads_share_one_verifier_safely(bundle: KeyBundle) -> None:
    verifier = verifier_for(bundle, cache_size=16)
    tokens = [
        token(bundle, alg, claims={"jti": f"{alg}-{i}"})
        for alg in KeyBundle.algorithms
        for i in range(20)
    ]
    bad = token(bundle, claims={"aud": "nope"})
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(300):
                tok = tokens[(i * 7 + offset) % len(tokens)]
                assert verifier.verify(tok).jti == json.loads(_payload(tok))["jti"]
                with pytest.raises(InvalidTokenError):
                    verifier.verify(bad)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert verifier.cache_info().size <= 16


def _payload(tok: str) -> bytes:
    seg = tok.split(".")[1]
    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))
