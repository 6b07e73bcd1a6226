"""The issuer policy in the one verifier: subject namespaces and scope allow-lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hostile_tokens import KeyBundle, mint

from entitlements_client import (
    InvalidTokenError,
    IssuerConfig,
    KeySet,
    TokenVerifier,
    service_issuer,
)

IDP_A = "https://idp-a.example.test"
IDP_B = "https://idp-b.example.test"
AUDIENCE = "entitlements"
NOW = 1_800_000_000
OURS = (
    "entitlements:check",
    "entitlements:check:any",
    "entitlements:admin",
    "entitlements:import",
    "entitlements:exchange",
)


@pytest.fixture(scope="module")
def bundle() -> KeyBundle:
    return KeyBundle.generate()


def issuer(bundle: KeyBundle, name: str = IDP_A, **policy: Any) -> IssuerConfig:
    return IssuerConfig(name, AUDIENCE, KeySet(jwks=bundle.jwks), **policy)


def verifier(*issuers: IssuerConfig) -> TokenVerifier:
    return TokenVerifier(list(issuers), clock=lambda: NOW)


def token(bundle: KeyBundle, name: str = IDP_A, sub: str = "bob", scope: str = "") -> str:
    return mint(bundle, name, AUDIENCE, now=NOW, claims={"sub": sub, "scope": scope})


def test_the_user_id_is_the_issuers_prefix_and_the_sub(bundle: KeyBundle) -> None:
    # Both issuers sign with the same keys and send the same sub: still two users.
    v = verifier(issuer(bundle), issuer(bundle, IDP_B))
    from_a = token(bundle)
    a, b = v.verify(from_a), v.verify(token(bundle, IDP_B))
    assert (a.subject, b.subject) == (f"{IDP_A}|bob", f"{IDP_B}|bob")
    assert a.claims["sub"] == b.claims["sub"] == "bob", "the raw sub stays in the claims"
    # A remembered token answers the same.
    assert v.verify(from_a).subject == f"{IDP_A}|bob"
    assert v.cache_info().hits == 1


@pytest.mark.parametrize(
    ("prefix", "subject"), [("", "bob"), ("acme:", "acme:bob"), ("eu|", "eu|bob")]
)
def test_an_explicit_prefix_is_used_as_given(bundle: KeyBundle, prefix: str, subject: str) -> None:
    config = issuer(bundle, subject_prefix=prefix)
    assert config.subject_prefix == prefix
    assert verifier(config).verify(token(bundle)).subject == subject


def test_the_default_prefix_is_resolved_at_construction(bundle: KeyBundle) -> None:
    assert issuer(bundle).subject_prefix == f"{IDP_A}|"
    assert issuer(bundle).allowed_scopes == ("entitlements:check",)


def test_only_allowed_entitlements_scopes_count(bundle: KeyBundle) -> None:
    scope = " ".join((*OURS, "orders:read", "entitlements"))
    others = {"orders:read", "entitlements"}  # not ours to filter
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({}, {"entitlements:check"}),
        ({"allowed_scopes": []}, set()),
        (
            {"allowed_scopes": ["entitlements:admin", "entitlements:check:any"]},
            {"entitlements:admin", "entitlements:check:any"},
        ),
        ({"allowed_scopes": ["entitlements:*"]}, set(OURS)),
    ]
    for policy, honoured in cases:
        verified = verifier(issuer(bundle, **policy)).verify(token(bundle, scope=scope))
        assert verified.scopes == frozenset(honoured | others), policy
        assert verified.has_scope("entitlements:admin") == ("entitlements:admin" in honoured)
        assert verified.claims["scope"] == scope, "the claim itself is left as sent"


def test_a_user_id_longer_than_a_claim_is_refused_not_cut(bundle: KeyBundle) -> None:
    v = verifier(issuer(bundle))
    room = 256 - len(IDP_A) - 1
    assert len(v.verify(token(bundle, sub="b" * room)).subject) == 256
    with pytest.raises(InvalidTokenError) as caught:
        v.verify(token(bundle, sub="b" * (room + 1)))
    assert caught.value.code == "bad_claim"


def test_overlapping_namespaces_are_refused(bundle: KeyBundle) -> None:
    # With "idp|" and "idp|eu|", A's sub "eu|bob" and B's sub "bob" would be one user.
    with pytest.raises(ValueError, match="overlap"):
        verifier(
            issuer(bundle, subject_prefix="idp|"),
            issuer(bundle, IDP_B, subject_prefix="idp|eu|"),
        )
    # Equal prefixes share on purpose; "" is the service's own, bare namespace.
    shared = verifier(
        issuer(bundle, subject_prefix="idp|"),
        issuer(bundle, IDP_B, subject_prefix="idp|"),
        issuer(bundle, "https://entitlements.test", subject_prefix=""),
    )
    assert shared.verify(token(bundle, IDP_B)).subject == "idp|bob"


@pytest.mark.parametrize(
    "policy",
    [
        {"subject_prefix": "idp one|"},
        {"subject_prefix": "x" * 129},
        {"subject_prefix": 7},
        {"allowed_scopes": ["orders:write"]},
        {"allowed_scopes": ["entitlements:"]},
        {"allowed_scopes": [None]},
        {"allowed_scopes": {"entitlements:admin": True}},
    ],
)
def test_unusable_policies_are_refused_at_construction(
    bundle: KeyBundle, policy: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        issuer(bundle, **policy)


def test_an_issuer_whose_default_prefix_is_unusable_must_choose_one(bundle: KeyBundle) -> None:
    with pytest.raises(ValueError, match="set subject_prefix explicitly"):
        issuer(bundle, "https://idp.example.test/realms/a b")
    assert issuer(bundle, "https://idp.example.test/realms/a b", subject_prefix="ab|")


def test_from_mapping_takes_the_same_items_as_the_service(
    tmp_path: Path, bundle: KeyBundle
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(bundle.jwks))
    item = {"issuer": IDP_A, "jwks_file": str(path), "audience": AUDIENCE}
    default = IssuerConfig.from_mapping(item)
    assert default.subject_prefix == f"{IDP_A}|"
    assert default.allowed_scopes == ("entitlements:check",)
    assert IssuerConfig.from_mapping(item | {"subject_prefix": None}).subject_prefix == (
        f"{IDP_A}|"
    )
    chosen = IssuerConfig.from_mapping(
        item | {"subject_prefix": "", "allowed_scopes": ["entitlements:admin"]}
    )
    assert (chosen.subject_prefix, chosen.allowed_scopes) == ("", ("entitlements:admin",))
    with pytest.raises(ValueError):
        IssuerConfig.from_mapping(item | {"allowed_scopes": ["admin"]})


def test_the_service_issuer_is_ours(bundle: KeyBundle) -> None:
    config = service_issuer("https://entitlements.test", issuer=IDP_A, audience=AUDIENCE)
    assert config.subject_prefix == ""
    assert config.honours_all_scopes
