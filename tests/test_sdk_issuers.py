"""The SDK with IdP tokens in service-token mode: it asks about, and caches under, the
user id of the issuer that verified the token (``<issuer>|<sub>``), never the bare sub.

The IdPs here are trusted by the SDK only, not by the service: with a service token
the SDK vouches for the user and names it in the body, so any answer the service gives
about an IdP user is an answer about the subject the SDK sent.
"""

from __future__ import annotations

import pytest
from hostile_tokens import KeyBundle, mint
from sdk_support import (  # noqa: F401  (fixtures)
    SdkFactory,
    ServiceServer,
    eventually,
    sdks_fixture,
    service_fixture,
    unique,
)

from entitlements_client import ForbiddenError, IssuerConfig, KeySet, TokenVerifier

IDP_A = "https://idp-a.example.test"
IDP_B = "https://idp-b.example.test"


@pytest.fixture(scope="module")
def idp_keys() -> KeyBundle:
    return KeyBundle.generate()


def idp_token(keys: KeyBundle, issuer: str, sub: str, scope: str = "entitlements:check") -> str:
    return mint(keys, issuer, "entitlements", claims={"sub": sub, "scope": scope, "roles": []})


def sdk_verifier(service: ServiceServer, keys: KeyBundle) -> TokenVerifier:
    """The service's own tokens, and two IdPs (the same keys, which must not matter)."""
    idps = [IssuerConfig(i, "entitlements", KeySet(jwks=keys.jwks)) for i in (IDP_A, IDP_B)]
    return TokenVerifier([*service.verifier().issuers, *idps])


async def test_service_token_mode_names_and_caches_the_namespaced_user(
    sdks: SdkFactory, service: ServiceServer, idp_keys: KeyBundle
) -> None:
    bob = unique("bob-")  # the same sub at both IdPs and at the service
    bought, bare = unique("track:"), unique("track:")
    purchase = unique("buy-")
    service.put_grant(
        purchase,
        subject=f"user:{IDP_A}|{bob}",
        resource=bought,
        actions=["stream"],
        territories=["*"],
    )
    service.put_grant(
        unique("buy-"),
        subject=f"user:{bob}",
        resource=bare,
        actions=["stream"],
        territories=["*"],
    )
    sdk = sdks(
        verifier=sdk_verifier(service, idp_keys),
        service_token=service.service_token(),
        staleness=2.0,
    )
    bob_a = idp_token(idp_keys, IDP_A, bob)
    bob_b = idp_token(idp_keys, IDP_B, bob)
    bob_ours = service.token(bob)
    for _ in range(2):  # the second round answers from the cache
        assert (await sdk.authorize(bob_a, bought, "stream", "GB")).allowed
        assert not (await sdk.authorize(bob_a, bare, "stream", "GB")).allowed
        assert not (await sdk.authorize(bob_b, bought, "stream", "GB")).allowed
        assert not (await sdk.authorize(bob_b, bare, "stream", "GB")).allowed
        assert (await sdk.authorize(bob_ours, bare, "stream", "GB")).allowed
        assert not (await sdk.authorize(bob_ours, bought, "stream", "GB")).allowed
    assert sdk.client.stats().cache_size == 6

    # The feed names the user a changed grant is for: A's bob's cached answer goes.
    await eventually(lambda: sdk.client.stats().feed_fresh, timeout=5)
    checks = sdk.log.checks
    service.delete_grant(purchase)

    async def refused() -> bool:
        return not (await sdk.authorize(bob_a, bought, "stream", "GB")).allowed

    assert await eventually(refused, timeout=5) <= 2.0
    assert sdk.log.checks > checks
    # The other users' answers were not about that user: they stay cached.
    checks = sdk.log.checks
    assert (await sdk.authorize(bob_ours, bare, "stream", "GB")).allowed
    assert not (await sdk.authorize(bob_b, bought, "stream", "GB")).allowed
    assert sdk.log.checks == checks


async def test_an_idps_entitlements_scopes_do_not_pass_the_sdks_gate(
    sdks: SdkFactory, service: ServiceServer, idp_keys: KeyBundle
) -> None:
    sdk = sdks(verifier=sdk_verifier(service, idp_keys), service_token=service.service_token())
    track = unique("track:")
    token = idp_token(idp_keys, IDP_A, unique("ops-"), "entitlements:admin orders:read")
    with pytest.raises(ForbiddenError, match="entitlements:admin"):
        await sdk.authorize(token, track, "stream", "GB", require_scopes=("entitlements:admin",))
    decision = await sdk.authorize(token, track, "stream", "GB", require_scopes=("orders:read",))
    assert decision.reason == "not_licensed"
