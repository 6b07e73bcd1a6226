"""The SDK against the real service on a real socket, every test over both clients.

Each test takes ``sdks`` (parametrized sync/async, see ``sdk_support``) and is
written once. The service is uvicorn on loopback over real Postgres; HTTP
requests are counted by event hooks on the SDK's injected httpx client.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sdk_support import (  # noqa: F401  (fixtures)
    AUDIENCE,
    ISSUER,
    SdkFactory,
    ServiceServer,
    eventually,
    free_port,
    sdks_fixture,
    service_fixture,
    unique,
)

from entitlements.keys.signing import SigningKey, generate, mint
from entitlements.store.postgres import bump_revision
from entitlements_client import (
    AsyncEntitlements,
    Decision,
    ForbiddenError,
    InvalidRequestError,
    InvalidTokenError,
    IssuerConfig,
    KeySet,
    NotAllowedError,
    TokenRejectedError,
    TokenVerifier,
    UnavailableError,
)

PREMIUM = "plan:premium"


@dataclass
class Catalogue:
    """label ← release ← tracks, with a premium deal, a takedown and a purchase."""

    label: str
    release: str
    tracks: list[str]
    user: str
    premium: str  # a premium user's token
    free: str  # a free user's token
    buyer: str  # the buyer's token (free plan)


@pytest.fixture
def catalogue(service: ServiceServer) -> Catalogue:
    label, release = unique("label:"), unique("release:")
    tracks = [unique("track:") for _ in range(4)]
    service.put_resource(release, [label])
    for track in tracks:
        service.put_resource(track, [release])
    service.put_grant(
        unique("deal-"),
        subject=f"role:{PREMIUM}",
        resource=label,
        actions=["stream"],
        territories=["GB", "DE", "FR"],
        attributes={"quality": "lossless"},
    )
    service.put_grant(
        unique("takedown-"),
        subject="*",
        resource=tracks[1],
        actions=["stream"],
        territories=["DE"],
        effect="deny",
    )
    buyer = unique("buyer-")
    service.put_grant(
        unique("purchase-"),
        subject=f"user:{buyer}",
        resource=tracks[2],
        actions=["download"],
        territories=["*"],
    )
    return Catalogue(
        label=label,
        release=release,
        tracks=tracks,
        user=buyer,
        premium=service.token(unique("alice-"), roles=(PREMIUM,)),
        free=service.token(unique("bob-"), roles=("plan:free",)),
        buyer=service.token(buyer, roles=("plan:free",)),
    )


def questions(cat: Catalogue) -> list[tuple[str, str, str, str]]:
    """(token, resource, action, territory) covering every reason the service gives."""
    t0, t1, t2, t3 = cat.tracks
    return [
        (cat.premium, t0, "stream", "GB"),  # granted through the label
        (cat.premium, t0, "stream", "JP"),  # territory
        (cat.premium, t1, "stream", "DE"),  # denied (takedown)
        (cat.premium, t1, "stream", "FR"),  # granted
        (cat.free, t0, "stream", "GB"),  # not_licensed
        (cat.buyer, t2, "download", "US"),  # granted (purchase)
        (cat.buyer, t3, "download", "US"),  # not_licensed
        (cat.premium, unique("track:unknown"), "stream", "GB"),  # never heard of: not_licensed
    ]


def same(decision: Decision, answer: dict[str, object]) -> bool:
    ours = decision.to_json()
    return {k: v for k, v in ours.items() if k != "revision"} == {
        k: v for k, v in answer.items() if k != "revision"
    }


@pytest.mark.parametrize("mode", ["service_token", "forwarded"])
async def test_answers_match_the_service(
    sdks: SdkFactory, service: ServiceServer, catalogue: Catalogue, mode: str
) -> None:
    token = service.service_token() if mode == "service_token" else None
    sdk = sdks(service_token=token)
    asked = questions(catalogue)
    reasons = set()
    for tok, resource, action, territory in asked:
        decision = await sdk.authorize(tok, resource, action, territory)
        expected = service.check(tok, resource=resource, action=action, territory=territory)
        assert same(decision, expected), (resource, territory, decision, expected)
        assert bool(decision) is decision.allowed
        reasons.add(decision.reason)
    assert reasons == {"granted", "territory", "denied", "not_licensed"}
    granted = await sdk.authorize(catalogue.premium, catalogue.tracks[0], "stream", "GB")
    assert granted.attributes == {"quality": "lossless"}
    # authorize_many answers the same, in order, in one batch request at most.
    sdk.log.reset()
    fresh = sdks(service_token=token)
    t0, t1, _, _ = catalogue.tracks
    checks = [
        (t0, "stream", "GB"),
        (t0, "stream", "JP"),
        (t1, "stream", "DE"),
        (t1, "stream", "FR"),
    ]
    many = await fresh.authorize_many(catalogue.premium, checks)
    assert [d.reason for d in many] == ["granted", "territory", "denied", "granted"]
    assert fresh.log.paths["/v1/check/batch"] == 1
    assert fresh.log.checks == 1


async def test_a_repeated_question_is_answered_from_the_cache(
    sdks: SdkFactory, service: ServiceServer, catalogue: Catalogue
) -> None:
    sdk = sdks(service_token=service.service_token())
    track = catalogue.tracks[0]
    first = await sdk.authorize(catalogue.premium, track, "stream", "GB")
    for _ in range(50):
        assert await sdk.authorize(catalogue.premium, track, "stream", "GB") == first
    assert sdk.log.checks == 1
    stats = sdk.client.stats()
    assert stats.cache_hits >= 50
    assert stats.requests == 1


async def test_no_is_an_answer_and_ensure_raises_it(sdks: SdkFactory, catalogue: Catalogue) -> None:
    sdk = sdks()
    no = await sdk.authorize(catalogue.premium, catalogue.tracks[0], "stream", "JP")
    assert not no.allowed and no.reason == "territory"
    with pytest.raises(NotAllowedError) as caught:
        await sdk.ensure(catalogue.premium, catalogue.tracks[0], "stream", "JP")
    assert isinstance(caught.value, ForbiddenError)
    assert caught.value.decision == no
    yes = await sdk.ensure(catalogue.premium, catalogue.tracks[0], "stream", "GB")
    assert yes.allowed and yes.grant is not None


async def test_the_coarse_gate_never_calls_the_service(
    sdks: SdkFactory, service: ServiceServer, catalogue: Catalogue
) -> None:
    # Nothing listens at this address: any request would fail as Unavailable.
    sdk = sdks(base_url=f"http://127.0.0.1:{free_port()}", timeout=0.5, retries=0)
    token = service.token(unique("carol-"), roles=("plan:free",), scopes=("library:read",))
    track = catalogue.tracks[0]
    with pytest.raises(ForbiddenError, match="role"):
        await sdk.authorize(token, track, "stream", "GB", require_roles=[PREMIUM])
    with pytest.raises(ForbiddenError, match="scope"):
        await sdk.authorize(token, track, "stream", "GB", require_scopes=["library:write"])
    with pytest.raises(ForbiddenError):
        await sdk.authorize_many(token, [(track, "stream", "GB")], require_roles=PREMIUM)
    assert sum(sdk.log.paths.values()) == 0
    # Passing the gate is what leads to the network (and here to a closed failure).
    with pytest.raises(UnavailableError):
        await sdk.authorize(token, track, "stream", "GB", require_roles=["plan:free"])
    assert sdk.log.checks == 1


async def test_bad_tokens_and_bad_questions_are_refused_before_any_request(
    sdks: SdkFactory, service: ServiceServer, catalogue: Catalogue
) -> None:
    sdk = sdks(service_token=service.service_token())
    track = catalogue.tracks[0]
    header, payload, _ = catalogue.premium.split(".")
    for bad in ("", "not-a-jwt", f"{header}.{payload}.AAAA", catalogue.premium + "x"):
        with pytest.raises(InvalidTokenError):
            await sdk.authorize(bad, track, "stream", "GB")
    for resource, action, territory in [
        ("track", "stream", "GB"),
        (track, "Stream", "GB"),
        (track, "stream", "gb"),
        (track, "stream", ""),
    ]:
        with pytest.raises(InvalidRequestError):
            await sdk.authorize(catalogue.premium, resource, action, territory)
    with pytest.raises(InvalidRequestError):
        await sdk.authorize(catalogue.premium, track, "stream", "GB", datetime(2026, 1, 1))
    assert sum(sdk.log.paths.values()) == 0
    # "ZZ" looks like a code but is none: the service refuses it, as a bad request.
    with pytest.raises(InvalidRequestError) as caught:
        await sdk.authorize(catalogue.premium, track, "stream", "ZZ")
    assert caught.value.response is not None and caught.value.response.status_code == 422


async def test_a_bad_question_in_a_batch_fails_alone(
    sdks: SdkFactory, service: ServiceServer, catalogue: Catalogue
) -> None:
    sdk = sdks(service_token=service.service_token())
    t0 = catalogue.tracks[0]
    calls = [
        (catalogue.premium, t0, "stream", "GB"),
        (catalogue.premium, t0, "stream", "ZZ"),
        (catalogue.free, t0, "stream", "GB"),
    ]
    results = await sdk.concurrently(calls)
    assert isinstance(results[0], Decision) and results[0].allowed
    assert isinstance(results[1], InvalidRequestError)
    assert isinstance(results[2], Decision) and results[2].reason == "not_licensed"


async def test_a_token_the_service_refuses_is_invalid(
    sdks: SdkFactory, service: ServiceServer, catalogue: Catalogue
) -> None:
    # An issuer the SDK trusts but the service does not: forwarded, the service says 401.
    private, jwk = generate("EdDSA")
    key = SigningKey(jwk["kid"], "EdDSA", "active", jwk, datetime.now(UTC), None, private)
    other = IssuerConfig(
        issuer="https://idp.other.test", audience="entitlements", keys=KeySet(jwks={"keys": [jwk]})
    )
    verifier = TokenVerifier([*service.verifier().issuers, other])
    token, _ = mint(
        key, issuer="https://idp.other.test", audience="entitlements", subject="eve", ttl=300
    )
    sdk = sdks(verifier=verifier)
    with pytest.raises(TokenRejectedError) as caught:
        await sdk.authorize(token, catalogue.tracks[0], "stream", "GB")
    assert isinstance(caught.value, InvalidTokenError)
    assert caught.value.response is not None and caught.value.response.status_code == 401
    # With a service token the SDK vouches for the user itself: it is asked by subject.
    trusted = sdks(verifier=verifier, service_token=service.service_token())
    assert (await trusted.authorize(token, catalogue.tracks[0], "stream", "GB")).reason == (
        "not_licensed"
    )


async def test_a_refused_service_token_is_unavailable_not_the_users_fault(
    sdks: SdkFactory, service: ServiceServer, catalogue: Catalogue
) -> None:
    bad = sdks(service_token="not-a-token", retries=0)
    with pytest.raises(UnavailableError) as caught:
        await bad.authorize(catalogue.premium, catalogue.tracks[0], "stream", "GB")
    assert caught.value.response is not None and caught.value.response.status_code == 401
    # A valid token without entitlements:check:any may not ask about others: 403.
    weak = sdks(service_token=service.token("svc-weak"), retries=0)
    with pytest.raises(ForbiddenError) as denied:
        await weak.authorize(catalogue.premium, catalogue.tracks[0], "stream", "GB")
    assert denied.value.response is not None and denied.value.response.status_code == 403


@pytest.mark.parametrize("mode", ["service_token", "forwarded"])
async def test_a_thousand_different_checks_take_a_handful_of_requests(
    sdks: SdkFactory, service: ServiceServer, catalogue: Catalogue, mode: str
) -> None:
    token = service.service_token() if mode == "service_token" else None
    sdk = sdks(service_token=token, timeout=10.0)
    await sdk.authorize(catalogue.premium, catalogue.tracks[0], "stream", "GB")  # token seen
    sdk.log.reset()
    calls = [(catalogue.premium, unique("track:c"), "stream", "GB") for _ in range(1000)]
    calls[0] = (catalogue.premium, catalogue.tracks[3], "stream", "GB")
    results = await sdk.concurrently(calls)
    assert all(isinstance(r, Decision) for r in results), [
        r for r in results if not isinstance(r, Decision)
    ][:3]
    assert results[0].allowed  # type: ignore[union-attr]
    assert not any(r.allowed for r in results[1:])  # type: ignore[union-attr]
    # asyncio: every call lands in one loop turn, so one batch. Threads: 1,000 threads
    # released by a barrier wake over ~150 ms (measured), so the sender thread's group
    # commit takes a few batches (1-4 seen on a quiet machine, up to 13 while the
    # machine was busy with other test runs): still 50x fewer than one per call.
    assert sdk.log.checks <= (2 if sdk.kind == "async" else 20), sdk.log.paths
    assert sdk.log.paths["/v1/check/batch"] >= 1


async def test_a_burst_of_single_requests_never_freezes_the_event_loop(
    service: ServiceServer,
) -> None:
    """400 concurrent checks, one request each (``max_batch=1``), on the SDK's own httpx
    client (100 connections). The SDK used to hand all 400 to httpx at once; httpx's
    pool then scans (queued requests x connections) on every request and answer, on
    the event loop: the loop froze for seconds (3.6 s in a run here; at 1,000 checks
    longer than the 30 s timeout, so every call failed with
    UnavailableError(TimeoutError) although the service had answered: the crash of
    bench_sdk.py's burst phase). Bounded requests in flight keep the loop running."""
    ent = AsyncEntitlements(
        service.url,
        verifier=service.verifier(),
        service_token=service.service_token(),
        timeout=30.0,
        max_batch=1,
        follow_changes=False,
    )
    user = service.token(unique("burst-"), roles=(PREMIUM,))
    tracks = [unique("track:burst-") for _ in range(400)]
    worst = 0.0
    stop = asyncio.Event()

    async def watch_the_loop() -> None:
        nonlocal worst
        while not stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.02)
            worst = max(worst, time.monotonic() - before - 0.02)

    try:
        await ent.verify(user)
        watcher = asyncio.create_task(watch_the_loop())
        results = await asyncio.gather(
            *(ent.authorize(user, t, "stream", "GB") for t in tracks), return_exceptions=True
        )
        stop.set()
        await watcher
    finally:
        await ent.aclose()
    failed = [r for r in results if not isinstance(r, Decision)]
    assert not failed, (len(failed), failed[:3])
    assert all(isinstance(r, Decision) and r.reason == "not_licensed" for r in results)
    assert ent.stats().requests == len(tracks)
    assert worst < 1.0, f"the event loop stood still for {worst:.2f} s"


async def test_a_thousand_identical_checks_take_one_request(
    sdks: SdkFactory, service: ServiceServer, catalogue: Catalogue
) -> None:
    sdk = sdks(service_token=service.service_token(), timeout=10.0)
    sdk.client.verifier.verify(catalogue.premium)  # token seen; the JWKS fetch is not counted
    calls = [(catalogue.premium, catalogue.tracks[0], "stream", "GB")] * 1000
    results = await sdk.concurrently(calls)
    assert all(isinstance(r, Decision) and r.allowed for r in results)
    assert sdk.log.checks == 1, sdk.log.paths


async def test_a_revoked_grant_stops_within_the_bound(
    sdks: SdkFactory, service: ServiceServer, catalogue: Catalogue
) -> None:
    """Service token: the change feed drops the cached allow; the bound is `staleness`."""
    sdk = sdks(service_token=service.service_token(), staleness=2.0)
    track = unique("track:rv")
    grant = unique("g-")
    service.put_grant(
        grant, subject=f"role:{PREMIUM}", resource=track, actions=["stream"], territories=["*"]
    )
    assert (await sdk.authorize(catalogue.premium, track, "stream", "GB")).allowed
    await eventually(lambda: sdk.client.stats().feed_fresh, timeout=5)
    assert (await sdk.authorize(catalogue.premium, track, "stream", "GB")).allowed
    assert sdk.log.checks == 1  # served from the cache until...
    service.delete_grant(grant)

    async def revoked() -> bool:
        decision = await sdk.authorize(catalogue.premium, track, "stream", "GB")
        return not decision.allowed

    took = await eventually(revoked, timeout=5)
    assert took <= 2.0, took
    assert (await sdk.authorize(catalogue.premium, track, "stream", "GB")).reason == "not_licensed"


async def test_a_revoked_purchase_stops_within_the_bound_when_forwarding(
    sdks: SdkFactory, service: ServiceServer
) -> None:
    """Forwarded user token, no feed: cached decisions live `staleness` seconds."""
    sdk = sdks(staleness=1.0)
    user, track, grant = unique("u-"), unique("track:p"), unique("g-")
    token = service.token(user)
    service.put_grant(
        grant, subject=f"user:{user}", resource=track, actions=["download"], territories=["*"]
    )
    assert (await sdk.authorize(token, track, "download", "GB")).allowed
    assert (await sdk.authorize(token, track, "download", "GB")).allowed
    assert sdk.log.checks == 1
    service.delete_grant(grant)
    start = time.monotonic()

    async def revoked() -> bool:
        return not (await sdk.authorize(token, track, "download", "GB")).allowed

    await eventually(revoked, timeout=5)
    # The cache's 1 s plus the service's own bound (2 s here) at worst.
    assert time.monotonic() - start <= 3.2


@pytest.mark.parametrize("mode", ["service_token", "forwarded"])
async def test_the_revokes_revision_is_seen_at_once(
    sdks: SdkFactory, service: ServiceServer, catalogue: Catalogue, mode: str
) -> None:
    token = service.service_token() if mode == "service_token" else None
    sdk = sdks(service_token=token, staleness=30.0, max_age=300.0)
    track, grant = unique("track:mr"), unique("g-")
    service.put_grant(
        grant, subject=f"role:{PREMIUM}", resource=track, actions=["stream"], territories=["*"]
    )
    assert (await sdk.authorize(catalogue.premium, track, "stream", "GB")).allowed
    revision = service.delete_grant(grant)
    decision = await sdk.authorize(catalogue.premium, track, "stream", "GB", min_revision=revision)
    assert not decision.allowed and decision.revision >= revision
    # The fresh answer replaced the cached allow.
    assert not (await sdk.authorize(catalogue.premium, track, "stream", "GB")).allowed


async def test_a_cached_answer_ends_at_its_valid_until(
    sdks: SdkFactory, service: ServiceServer, catalogue: Catalogue
) -> None:
    sdk = sdks(service_token=service.service_token())
    track = unique("track:w")
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    service.put_grant(
        unique("g-"),
        subject=f"role:{PREMIUM}",
        resource=track,
        actions=["stream"],
        territories=["*"],
        valid_until=until.isoformat().replace("+00:00", "Z"),
    )
    first = await sdk.authorize(catalogue.premium, track, "stream", "GB")
    assert first.allowed and first.valid_until == until
    later = await sdk.authorize(catalogue.premium, track, "stream", "GB", at=until)
    assert later.reason == "expired"  # `at` asks about another instant; not cached
    assert sdk.log.checks == 2
    assert (await sdk.authorize(catalogue.premium, track, "stream", "GB")).allowed
    assert sdk.log.checks == 2
    await asyncio.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.01)
    assert (await sdk.authorize(catalogue.premium, track, "stream", "GB")).reason == "expired"
    assert sdk.log.checks == 3


async def test_the_change_feed_drops_what_changed(
    sdks: SdkFactory, service: ServiceServer, catalogue: Catalogue
) -> None:
    sdk = sdks(service_token=service.service_token())
    t0, t1, t2, _ = catalogue.tracks
    await sdk.authorize(catalogue.premium, t0, "stream", "GB")
    await sdk.authorize(catalogue.premium, t1, "stream", "GB")
    await sdk.authorize(catalogue.buyer, t2, "download", "US")
    await eventually(lambda: sdk.client.stats().feed_fresh, timeout=5)
    assert sdk.client.stats().cache_size == 3
    # A new purchase by the buyer: only the buyer's decisions go.
    service.put_grant(
        unique("g-"),
        subject=f"user:{catalogue.user}",
        resource=t0,
        actions=["stream"],
        territories=["GB"],
    )
    await eventually(lambda: sdk.client.stats().cache_size == 2, timeout=5)
    # A track of the cached type changed: that track's decisions go.
    service.put_grant(
        unique("g-"), subject="*", resource=t1, actions=["preview"], territories=["GB"]
    )
    await eventually(lambda: sdk.client.stats().cache_size == 1, timeout=5)
    # The release changed: tracks under it may change, and the SDK cannot see which.
    service.put_grant(
        unique("g-"),
        subject="*",
        resource=catalogue.release,
        actions=["preview"],
        territories=["GB"],
    )
    await eventually(lambda: sdk.client.stats().cache_size == 0, timeout=5)
    assert (await sdk.authorize(catalogue.premium, t0, "stream", "GB")).allowed


async def test_a_release_change_drops_only_the_answers_under_it(
    sdks: SdkFactory, service: ServiceServer, catalogue: Catalogue
) -> None:
    sdk = sdks(service_token=service.service_token())
    other_release, other_track = unique("release:o"), unique("track:o")
    service.put_resource(other_release, [catalogue.label])
    service.put_resource(other_track, [other_release])
    here = await sdk.authorize(catalogue.premium, catalogue.tracks[0], "stream", "GB")
    there = await sdk.authorize(catalogue.premium, other_track, "stream", "GB")
    assert catalogue.release in (here.ancestors or ())
    assert (there.ancestors or ()) == tuple(sorted((catalogue.label, other_release)))
    await eventually(lambda: sdk.client.stats().feed_fresh, timeout=5)
    assert sdk.client.stats().cache_size == 2
    service.put_grant(
        unique("g-"), subject="*", resource=other_release, actions=["preview"], territories=["GB"]
    )
    await eventually(lambda: sdk.client.stats().cache_size == 1, timeout=5)
    sdk.log.reset()
    assert (await sdk.authorize(catalogue.premium, catalogue.tracks[0], "stream", "GB")).allowed
    assert sdk.log.checks == 0  # still cached: the other release's change did not touch it


async def test_the_feed_gets_past_a_revision_bigger_than_its_page(
    sdks: SdkFactory, service: ServiceServer, catalogue: Catalogue
) -> None:
    """One revision recording more keys than the SDK asks for per page (1,000; a bulk
    import records up to 10,000) is taken whole, and the feed goes on."""
    sdk = sdks(service_token=service.service_token())
    t0 = catalogue.tracks[0]
    await sdk.authorize(catalogue.buyer, t0, "stream", "GB")
    await eventually(lambda: sdk.client.stats().feed_fresh, timeout=5)
    assert sdk.client.stats().cache_size == 1
    assert service.settings.database_url is not None
    conn = await asyncpg.connect(service.settings.database_url)
    try:
        async with conn.transaction():
            keys = [("user", f"bulk{k}") for k in range(1_499)] + [("user", catalogue.user)]
            big = await bump_revision(conn, keys)
    finally:
        await conn.close()
    sdk.log.reset()
    await eventually(lambda: (sdk.client.stats().feed_revision or 0) >= big, timeout=5)
    assert sdk.client.stats().cache_size == 0  # the buyer was in it
    await asyncio.sleep(0.5)  # a feed stuck on the big revision would keep asking
    assert sdk.log.paths["/v1/changes"] <= 4


async def test_a_revoked_exchanged_token_is_refused_within_the_bound(
    sdks: SdkFactory, service: ServiceServer, catalogue: Catalogue
) -> None:
    """The feed's ``token`` changes: a revoked jti is refused even though the token
    itself still verifies (and was remembered)."""
    jwks = KeySet(url=service.url + "/.well-known/jwks.json")
    accepts_exchanged = TokenVerifier(
        [
            IssuerConfig(
                issuer=ISSUER,
                audience=AUDIENCE,
                keys=jwks,
                typ=("at+jwt", "exchange+jwt"),
                subject_prefix="",  # the service's own tokens, as service_issuer() trusts them
            )
        ]
    )
    sdk = sdks(verifier=accepts_exchanged, service_token=service.service_token(), staleness=2.0)
    user = service.token(unique("dora-"), roles=(PREMIUM,), scopes=("library:read",))
    exchanged, jti = service.exchange(user, "library:read", [catalogue.tracks[0]])
    assert (await sdk.authorize(exchanged, catalogue.tracks[0], "stream", "GB")).allowed
    # It names its resources: others are refused here, as the service would refuse them.
    with pytest.raises(ForbiddenError, match="limited"):
        await sdk.authorize(exchanged, catalogue.tracks[1], "stream", "GB")
    await eventually(lambda: sdk.client.stats().feed_fresh, timeout=5)
    service.revoke(jti)

    async def refused() -> bool:
        try:
            await sdk.authorize(exchanged, catalogue.tracks[0], "stream", "GB")
        except InvalidTokenError as exc:
            return exc.code == "revoked"
        return False

    assert await eventually(refused, timeout=5) <= 2.0
    # The user's own token is untouched.
    assert (await sdk.authorize(user, catalogue.tracks[0], "stream", "GB")).allowed
