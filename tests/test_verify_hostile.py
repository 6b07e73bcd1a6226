"""Every hostile token must raise InvalidTokenError (with the right code), sync and async.

The tokens come from tests/hostile_tokens.py, which the HTTP API tests reuse.
Most are correctly signed by a trusted key with exactly one property wrong, so
the expected ``code`` pins the one rule that must catch each of them.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
from hostile_tokens import (
    HOSTILE_CASE_IDS,
    HostileCase,
    KeyBundle,
    build_hostile_cases,
    build_hostile_tokens,
    make_token,
    mint,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entitlements_client._errors import InvalidTokenError
from entitlements_client.jwks import KeySet
from entitlements_client.verify import IssuerConfig, TokenVerifier

ISSUER = "https://id.example.test/realms/music"
AUDIENCE = "entitlements-api"


@pytest.fixture(scope="module")
def bundle() -> KeyBundle:
    return KeyBundle.generate()


@pytest.fixture(scope="module")
def cases(bundle: KeyBundle) -> dict[str, HostileCase]:
    return {case.id: case for case in build_hostile_cases(ISSUER, AUDIENCE, bundle)}


def make_verifier(bundle: KeyBundle, **options: object) -> TokenVerifier:
    config = IssuerConfig(
        ISSUER, AUDIENCE, KeySet(jwks=bundle.jwks), algorithms=KeyBundle.algorithms
    )
    return TokenVerifier([config], **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def verifier(bundle: KeyBundle) -> TokenVerifier:
    return make_verifier(bundle)


def test_there_are_at_least_40_distinct_hostile_cases() -> None:
    assert len(HOSTILE_CASE_IDS) >= 40
    assert len(set(HOSTILE_CASE_IDS)) == len(HOSTILE_CASE_IDS)


def test_a_valid_token_from_the_same_bundle_verifies(
    bundle: KeyBundle, verifier: TokenVerifier
) -> None:
    # Guards the suite itself: the hostile tokens fail for their defect, not the setup.
    for alg in KeyBundle.algorithms:
        assert verifier.verify(mint(bundle, ISSUER, AUDIENCE, alg=alg)).claims["sub"] == "user-1"


@pytest.mark.parametrize("case_id", HOSTILE_CASE_IDS)
def test_hostile_token_is_rejected(
    case_id: str, cases: dict[str, HostileCase], verifier: TokenVerifier
) -> None:
    case = cases[case_id]
    with pytest.raises(InvalidTokenError) as info:
        verifier.verify(case.token)
    assert info.value.code == case.code, info.value.message
    # Messages are safe to return to a client: they never echo the token.
    for segment in case.token.split("."):
        if len(segment) >= 8:
            assert segment not in str(info.value)


@pytest.mark.parametrize("case_id", HOSTILE_CASE_IDS)
async def test_hostile_token_is_rejected_async(
    case_id: str, cases: dict[str, HostileCase], verifier: TokenVerifier
) -> None:
    case = cases[case_id]
    with pytest.raises(InvalidTokenError) as info:
        await verifier.averify(case.token)
    assert info.value.code == case.code, info.value.message


@pytest.mark.parametrize("case_id", HOSTILE_CASE_IDS)
def test_hostile_token_is_rejected_as_bytes(
    case_id: str, cases: dict[str, HostileCase], verifier: TokenVerifier
) -> None:
    token = cases[case_id].token.encode("utf-8")
    with pytest.raises(InvalidTokenError):
        verifier.verify(token)


def test_rejection_is_not_remembered(
    cases: dict[str, HostileCase], verifier: TokenVerifier
) -> None:
    for _ in range(3):
        with pytest.raises(InvalidTokenError):
            verifier.verify(cases["alg_none_empty_sig"].token)
    assert verifier.verify_cached(cases["alg_none_empty_sig"].token) is None


def test_build_hostile_tokens_is_the_plain_list_the_api_tests_use(bundle: KeyBundle) -> None:
    tokens = build_hostile_tokens(ISSUER, AUDIENCE, bundle)
    assert [case_id for case_id, _ in tokens] == list(HOSTILE_CASE_IDS)
    assert all(isinstance(token, str) for _, token in tokens)


def _nested_payload(levels: int) -> bytes:
    claims = mint_claims()
    return json.dumps(claims).encode()[:-1] + b', "x": ' + b"[" * levels + b"]" * levels + b"}"


def mint_claims() -> dict[str, object]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "u", "iat": now, "exp": now + 60, "jti": "j"}


@pytest.mark.parametrize("levels", [17, 1_000, 10_000, 100_000])
def test_deep_nesting_is_malformed_even_when_the_size_limit_allows_it(
    bundle: KeyBundle, levels: int
) -> None:
    # With the default 8 KiB limit such tokens are refused as too large before parsing;
    # raise the limit so the depth rule itself is exercised (no RecursionError escapes).
    big = make_verifier(bundle, max_token_bytes=1 << 20)
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": "ed-1"}
    token = make_token(header, None, bundle.ed25519, raw_payload_bytes=_nested_payload(levels))
    with pytest.raises(InvalidTokenError) as info:
        big.verify(token)
    assert info.value.code == "malformed"


def test_depth_16_is_still_accepted(bundle: KeyBundle, verifier: TokenVerifier) -> None:
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": "ed-1"}
    token = make_token(header, None, bundle.ed25519, raw_payload_bytes=_nested_payload(15))
    assert verifier.verify(token).claims["x"]


@pytest.mark.parametrize(
    "value",
    [None, 42, 4.2, ["a.b.c"], {"t": 1}, object(), bytearray(b"\xff")],
    ids=["none", "int", "float", "list", "dict", "object", "bytearray"],
)
def test_non_string_input_is_invalid_token(verifier: TokenVerifier, value: object) -> None:
    with pytest.raises(InvalidTokenError) as info:
        verifier.verify(value)  # type: ignore[arg-type]
    assert info.value.code == "malformed"


def test_oversized_bytes_are_refused_before_decoding(verifier: TokenVerifier) -> None:
    with pytest.raises(InvalidTokenError) as info:
        verifier.verify(b"\xff" * 9000)
    assert info.value.code == "too_large"


def test_size_limit_is_exact(bundle: KeyBundle) -> None:
    token = mint(bundle, ISSUER, AUDIENCE)
    assert make_verifier(bundle, max_token_bytes=len(token)).verify(token)
    with pytest.raises(InvalidTokenError) as info:
        make_verifier(bundle, max_token_bytes=len(token) - 1).verify(token)
    assert info.value.code == "too_large"


def test_unexpected_internal_errors_become_invalid_token(
    bundle: KeyBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = make_verifier(bundle)
    keys = verifier.issuers[0].keys

    def explode(kid: str) -> None:
        raise TypeError("boom")

    monkeypatch.setattr(keys, "get", explode)
    with pytest.raises(InvalidTokenError) as info:
        verifier.verify(mint(bundle, ISSUER, AUDIENCE))
    assert info.value.code == "malformed"
    assert isinstance(info.value.__cause__, TypeError)


def test_alg_none_is_rejected_even_if_an_issuer_has_no_keys(bundle: KeyBundle) -> None:
    verifier = TokenVerifier([IssuerConfig(ISSUER, AUDIENCE, KeySet())])
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"at+jwt"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps(mint_claims()).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidTokenError) as info:
        verifier.verify(f"{header}.{payload}.")
    assert info.value.code == "bad_algorithm"


# -- property tests: nothing but InvalidTokenError escapes, and no mutation is accepted ----

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ é\x00"


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), alg=st.sampled_from(KeyBundle.algorithms))
def test_any_single_edit_of_a_valid_token_is_rejected(
    bundle: KeyBundle, verifier: TokenVerifier, data: st.DataObject, alg: str
) -> None:
    # Canonical base64url means every distinct text is a distinct signed message, so no
    # edit (replace, insert or delete one character) may leave the token acceptable.
    token = mint(bundle, ISSUER, AUDIENCE, alg=alg)
    index = data.draw(st.integers(0, len(token) - 1))
    char = data.draw(st.sampled_from(_ALPHABET))
    edit = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    if edit == "replace":
        mutated = token[:index] + char + token[index + 1 :]
    elif edit == "insert":
        mutated = token[:index] + char + token[index:]
    else:
        mutated = token[:index] + token[index + 1 :]
    if mutated == token:
        return
    with pytest.raises(InvalidTokenError):
        verifier.verify(mutated)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(garbage=st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_garbage_raises_only_invalid_token(verifier: TokenVerifier, garbage: str | bytes) -> None:
    with pytest.raises(InvalidTokenError):
        verifier.verify(garbage)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "x5t", "cty"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.sampled_from(["EdDSA", "ES256", "none", "ed-1", "at+jwt", "JWT", ""]),
            st.lists(st.text(max_size=5), max_size=3),
        ),
    )
)
def test_signed_tokens_with_arbitrary_headers_raise_only_invalid_token(
    bundle: KeyBundle, verifier: TokenVerifier, header: dict[str, object]
) -> None:
    token = make_token(header, mint_claims(), bundle.ed25519)
    try:
        verifier.verify(token)
    except InvalidTokenError:
        return
    assert header.get("alg") == "EdDSA" and header.get("kid") == "ed-1"
