"""Tokens at the API: a trusted external IdP, every hostile token a 401, JWKS, rotation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hostile_tokens import KeyBundle, build_hostile_tokens, mint
from support import running, settings_for

from entitlements.store.postgres import PostgresStore

IDP = "https://idp.example.test/realms/music"
CHECK = {"resource": "track:x", "action": "stream", "territory": "GB"}


@pytest.fixture(scope="module")
def bundle() -> KeyBundle:
    return KeyBundle.generate()


@pytest.fixture
def idp_settings(pg_dsn: str, tmp_path: Path, bundle: KeyBundle) -> dict[str, object]:
    jwks_file = tmp_path / "idp-jwks.json"
    jwks_file.write_text(json.dumps(bundle.jwks))
    return {
        "trusted_issuers": [
            {
                "issuer": IDP,
                "jwks_file": str(jwks_file),
                "audience": "entitlements",
                "algorithms": ["EdDSA", "ES256", "RS256"],
            }
        ]
    }


async def test_trusted_idp_token_works_and_every_hostile_token_is_401(
    clean: PostgresStore, pg_dsn: str, bundle: KeyBundle, idp_settings: dict[str, object]
) -> None:
    async with running(settings_for(pg_dsn, **idp_settings)) as (client, state):
        from entitlements.domain.model import grant_from_mapping

        await state.store.put_grant(
            grant_from_mapping(
                {
                    "id": "g",
                    "subject": "role:plan:premium",
                    "resource": "track:x",
                    "actions": ["stream"],
                    "territories": ["*"],
                }
            )
        )
        for alg in ("EdDSA", "ES256", "RS256"):
            good = mint(
                bundle,
                IDP,
                "entitlements",
                alg=alg,
                claims={"roles": ["plan:premium"]},
            )
            r = await client.post(
                "/v1/check", json=CHECK, headers={"Authorization": f"Bearer {good}"}
            )
            assert r.status_code == 200, (alg, r.text)
            assert r.json()["allowed"] is True, "roles come from the IdP token"
        hostile = build_hostile_tokens(IDP, "entitlements", bundle)
        assert len(hostile) >= 40
        for name, token in hostile:
            # bytes: some hostile tokens are not ASCII, which a str header cannot carry
            header = f"Bearer {token}".encode()
            r = await client.post("/v1/check", json=CHECK, headers={b"Authorization": header})
            assert r.status_code == 401, (name, r.status_code, r.text[:200])
            assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"', name
            assert r.headers["content-type"].startswith("application/problem+json"), name


async def test_jwks_is_published_with_cache_control(api: object) -> None:
    from support import Api

    assert isinstance(api, Api)
    r = await api.client.get("/.well-known/jwks.json")
    assert r.status_code == 200
    assert "max-age" in r.headers["cache-control"]
    keys = r.json()["keys"]
    assert keys and all("d" not in k for k in keys), "no private key material"
    assert {k["alg"] for k in keys} <= {"EdDSA", "ES256"}


async def test_rotation_keeps_old_tokens_valid_and_new_kid_verifies(
    clean: PostgresStore, pg_dsn: str
) -> None:
    async with running(settings_for(pg_dsn)) as (client, state):
        old = state.tokens.mint_access("alice", ttl=600)
        old_kid = state.tokens._signing_key().kid
        # Rotate in "another process": straight in the database, as `entitlements keys rotate` does.
        from entitlements.store.keys import PostgresKeyStore

        new_key = await PostgresKeyStore(clean.pool).rotate(publish_for=86400)
        assert new_key.kid != old_kid
        from entitlements.keys.signing import mint as sign

        new_token, _ = sign(
            new_key, issuer=state.settings.issuer, audience="entitlements", subject="bob", ttl=600
        )
        # This worker has not reloaded keys yet: the unknown kid triggers one reload and verifies.
        state.tokens._last_reload = 0.0
        r = await client.post(
            "/v1/check", json=CHECK, headers={"Authorization": f"Bearer {new_token}"}
        )
        assert r.status_code == 200, r.text
        r = await client.post("/v1/check", json=CHECK, headers={"Authorization": f"Bearer {old}"})
        assert r.status_code == 200, "a token signed before the rotation still verifies"
        published = {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
        assert {old_kid, new_key.kid} <= published
