"""The SDK when the service fails for real: stopped, slow, back again. Both clients.

Fail closed means: no allow the service did not give, ever — an
``UnavailableError`` within the configured timeout instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from sdk_support import (  # noqa: F401  (fixtures)
    SdkFactory,
    ServiceServer,
    SlowProxy,
    eventually,
    free_port,
    sdks_fixture,
    service_fixture,
    unique,
)

from entitlements.settings import Settings
from entitlements_client import BreakerPolicy, Decision, UnavailableError

PREMIUM = "plan:premium"


@pytest.fixture
def own_service(service: ServiceServer) -> Iterator[ServiceServer]:
    """A second service process-in-a-thread on its own port, free to be stopped."""
    settings: Settings = service.settings
    server = ServiceServer(settings)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def proxy(service: ServiceServer) -> Iterator[SlowProxy]:
    p = SlowProxy(service.port)
    try:
        yield p
    finally:
        p.close()


async def test_a_stopped_service_is_unavailable_in_time_and_recovers(
    sdks: SdkFactory, own_service: ServiceServer
) -> None:
    track, grant = unique("track:s"), unique("g-")
    own_service.put_grant(
        grant, subject=f"role:{PREMIUM}", resource=track, actions=["stream"], territories=["*"]
    )
    token = own_service.token(unique("alice-"), roles=(PREMIUM,))
    sdk = sdks(
        base_url=own_service.url,
        verifier=own_service.verifier(),
        timeout=0.5,
        breaker=BreakerPolicy(failures=3, reset_after=0.2),
    )
    assert (await sdk.authorize(token, track, "stream", "GB")).allowed
    own_service.stop()
    for territory in ("DE", "FR", "JP", "US", "BR"):  # not cached: must ask
        start = time.monotonic()
        with pytest.raises(UnavailableError):
            await sdk.authorize(token, track, "stream", territory)
        assert time.monotonic() - start <= 0.6
    assert sdk.client.stats().breaker == "open"
    own_service.start()

    async def answered() -> bool:
        try:
            return (await sdk.authorize(token, track, "stream", "DE")).allowed
        except UnavailableError:
            return False

    took = await eventually(answered, timeout=5)
    assert took < 2.0
    assert sdk.client.stats().breaker == "closed"


async def test_cached_answers_stop_when_the_feed_is_gone_for_longer_than_the_bound(
    sdks: SdkFactory, service: ServiceServer, proxy: SlowProxy
) -> None:
    track, grant = unique("track:f"), unique("g-")
    service.put_grant(
        grant, subject=f"role:{PREMIUM}", resource=track, actions=["stream"], territories=["*"]
    )
    token = service.token(unique("alice-"), roles=(PREMIUM,))
    sdk = sdks(
        base_url=proxy.url,
        service_token=service.service_token(),
        staleness=1.0,
        timeout=0.3,
    )
    assert (await sdk.authorize(token, track, "stream", "GB")).allowed
    await eventually(lambda: sdk.client.stats().feed_fresh, timeout=5)
    await asyncio.sleep(1.2)  # the entry is now older than the bound: only the live feed keeps it
    assert (await sdk.authorize(token, track, "stream", "GB")).allowed
    assert sdk.log.checks == 1
    gone = time.monotonic()
    proxy.close()  # the service can no longer be reached at all
    seen: list[Decision | UnavailableError] = []
    while time.monotonic() - gone < 3.0:
        try:
            seen.append(await sdk.authorize(token, track, "stream", "GB"))
        except UnavailableError as exc:
            seen.append(exc)
            break
        await asyncio.sleep(0.05)
    assert isinstance(seen[0], Decision) and seen[0].allowed  # within the bound: served
    assert isinstance(seen[-1], UnavailableError)  # beyond it: asked, and failed closed
    assert all(isinstance(s, UnavailableError) or s.allowed for s in seen)
    # The last feed answer came at most one long poll (0.5 s) before; then 1 s of bound.
    assert time.monotonic() - gone <= 0.5 + 1.0 + 0.3 + 0.2


async def test_a_slow_service_times_out_then_recovers(
    sdks: SdkFactory, service: ServiceServer, proxy: SlowProxy
) -> None:
    token = service.token(unique("alice-"), roles=(PREMIUM,))
    sdk = sdks(base_url=proxy.url, timeout=0.4, breaker=BreakerPolicy(failures=2, reset_after=0.2))
    sdk.client.verifier.verify(token)
    proxy.delay = 1.5
    start = time.monotonic()
    with pytest.raises(UnavailableError):
        await sdk.authorize(token, unique("track:slow"), "stream", "GB")
    assert 0.35 <= time.monotonic() - start <= 0.6
    proxy.delay = 0.0

    async def answered() -> bool:
        try:
            await sdk.authorize(token, unique("track:ok"), "stream", "GB")
        except UnavailableError:
            return False
        return True

    await eventually(answered, timeout=5)


async def test_the_breaker_fails_fast_without_sending(
    sdks: SdkFactory, service: ServiceServer
) -> None:
    token = service.token(unique("alice-"), roles=(PREMIUM,))
    sdk = sdks(
        base_url=f"http://127.0.0.1:{free_port()}",
        timeout=1.0,
        retries=0,
        breaker=BreakerPolicy(failures=2, reset_after=60.0),
    )
    for _ in range(2):
        with pytest.raises(UnavailableError):
            await sdk.authorize(token, unique("track:b"), "stream", "GB")
    sent = sdk.log.checks
    assert sent == 2
    start = time.monotonic()
    with pytest.raises(UnavailableError, match="circuit open"):
        await sdk.authorize(token, unique("track:b"), "stream", "GB")
    assert time.monotonic() - start < 0.05
    assert sdk.log.checks == sent
