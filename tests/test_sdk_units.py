"""The SDK's pure logic on its own: the decision cache, the breaker, backoff, parsing,
coalescing bookkeeping. No network; clocks are injected."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from entitlements_client import (
    AsyncEntitlements,
    BreakerPolicy,
    Decision,
    Entitlements,
    ForbiddenError,
    InvalidRequestError,
    IssuerConfig,
    KeySet,
    RetryPolicy,
    TokenRejectedError,
    TokenVerifier,
    UnavailableError,
)
from entitlements_client._base import BaseEntitlements
from entitlements_client._cache import DecisionCache
from entitlements_client._coalescer import Coalescer
from entitlements_client._questions import Item
from entitlements_client._retry import retry_after
from entitlements_client.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def decision(
    allowed: bool = True,
    revision: int = 10,
    until: datetime | None = None,
    ancestors: tuple[str, ...] | None = None,
) -> Decision:
    return Decision(
        allowed=allowed,
        reason="granted" if allowed else "not_licensed",
        grant="g" if allowed else None,
        valid_until=until,
        revision=revision,
        ancestors=ancestors,
    )


def key(subject: str = "alice", resource: str = "track:1") -> Any:
    return (subject, ("plan:premium",), resource, "stream", "GB")


def verifier() -> TokenVerifier:
    keys = KeySet(jwks={"keys": []})
    return TokenVerifier([IssuerConfig(issuer="https://i.test", audience="a", keys=keys)])


# -- the decision cache --------------------------------------------------------------------


def test_the_cache_is_a_bounded_lru() -> None:
    clock = Clock()
    cache = DecisionCache(2, max_age=60, staleness=5, clock=clock)
    cache.put(key(resource="track:1"), decision())
    cache.put(key(resource="track:2"), decision())
    assert cache.get(key(resource="track:1")) is not None  # now most recently used
    cache.put(key(resource="track:3"), decision())
    assert len(cache) == 2
    assert cache.get(key(resource="track:2")) is None
    assert cache.get(key(resource="track:1")) is not None


def test_without_a_feed_entries_live_staleness_seconds() -> None:
    clock = Clock()
    cache = DecisionCache(10, max_age=60, staleness=5, clock=clock)
    cache.put(key(), decision())
    clock.now += 4.9
    assert cache.get(key()) is not None
    clock.now += 0.2
    assert cache.get(key()) is None


def test_an_entry_never_outlives_valid_until() -> None:
    clock = Clock()
    wall = [1_700_000_000.0]
    cache = DecisionCache(10, max_age=60, staleness=5, clock=clock, wallclock=lambda: wall[0])
    until = datetime.fromtimestamp(wall[0] + 2, UTC)
    cache.put(key(), decision(until=until))
    clock.now += 1.9
    assert cache.get(key()) is not None
    clock.now += 0.2
    assert cache.get(key()) is None
    assert not cache.put(key(), decision(until=datetime.fromtimestamp(wall[0] - 1, UTC)))


def test_with_a_live_feed_entries_live_max_age_but_only_while_the_feed_answers() -> None:
    clock = Clock()
    cache = DecisionCache(10, max_age=60, staleness=5, clock=clock)
    cache.follow()
    cache.put(key(), decision(revision=10))
    assert cache.cursor == 10  # the first answer sets where the feed starts
    cache.apply([], 10, caught_up=True)
    clock.now += 30
    assert cache.get(key()) is None  # older than the bound and the feed has been silent
    cache.apply([], 10, caught_up=True)
    assert cache.get(key()) is not None
    clock.now += 5.1
    assert cache.get(key()) is None  # the feed went quiet for longer than the bound
    cache.apply([], 11, caught_up=True)
    clock.now += 25
    assert cache.get(key()) is None  # max_age


def test_an_answer_older_than_a_change_already_seen_is_not_cached() -> None:
    cache = DecisionCache(10, max_age=60, staleness=5, clock=Clock())
    cache.follow()
    cache.put(key("bob"), decision(revision=10))
    cache.apply([(12, "user", "carol")], 12, caught_up=True)
    assert not cache.put(key(), decision(revision=11))
    assert cache.put(key(), decision(revision=12))


def test_min_revision_needs_an_entry_at_least_that_fresh() -> None:
    cache = DecisionCache(10, max_age=60, staleness=5, clock=Clock())
    cache.put(key(), decision(revision=10))
    assert cache.get(key(), min_revision=10) is not None
    assert cache.get(key(), min_revision=11) is None


def test_feed_changes_drop_what_they_name() -> None:
    cache = DecisionCache(100, max_age=60, staleness=5, clock=Clock())
    cache.follow()
    for subject in ("alice", "bob"):
        for track in ("track:1", "track:2"):
            cache.put(key(subject, track), decision(revision=1))
    cache.apply([(2, "user", "alice")], 2, caught_up=True)
    assert len(cache) == 2 and cache.get(key("bob", "track:1")) is not None
    cache.apply([(3, "resource", "track:1")], 3, caught_up=True)
    assert len(cache) == 1 and cache.get(key("bob", "track:2")) is not None
    cache.apply([(4, "token", "jti-1")], 4, caught_up=True)
    assert "jti-1" in cache.revoked_jtis and len(cache) == 1
    cache.apply([(5, "all", "*")], 5, caught_up=True)
    assert len(cache) == 0
    assert cache.cursor == 5


def test_a_change_drops_the_answers_under_it_and_keeps_the_rest() -> None:
    """With the ancestors the service sends, a label or release change drops exactly the
    answers about resources under it."""
    cache = DecisionCache(100, max_age=60, staleness=5, clock=Clock())
    cache.follow()
    acme = ("label:acme", "release:a1")
    cache.put(key("a", "track:1"), decision(revision=1, ancestors=acme))
    cache.put(key("b", "track:1"), decision(revision=1, ancestors=acme))
    cache.put(key("a", "track:2"), decision(revision=1, ancestors=("label:acme", "release:a2")))
    cache.put(key("a", "track:3"), decision(revision=1, ancestors=("label:indie", "release:i1")))
    cache.put(key("a", "release:a1"), decision(revision=1, ancestors=("label:acme",)))
    cache.apply([(2, "resource", "release:a1")], 2, caught_up=True)
    assert sorted(k[2] for k in cache._entries) == ["track:2", "track:3"]
    cache.apply([(3, "resource", "label:acme")], 3, caught_up=True)
    assert [k[2] for k in cache._entries] == ["track:3"]
    cache.apply([(4, "resource", "label:other")], 4, caught_up=True)
    assert [k[2] for k in cache._entries] == ["track:3"]
    # An entry replaced or evicted leaves no trace in the indexes.
    cache.put(key("a", "track:3"), decision(revision=5, ancestors=("label:new",)))
    cache.apply([(6, "resource", "label:indie")], 6, caught_up=True)
    assert len(cache) == 1
    cache.apply([(7, "resource", "label:new")], 7, caught_up=True)
    assert len(cache) == 0 and not cache._by_resource and not cache._by_subject


def test_without_ancestors_a_change_above_the_cached_type_drops_them() -> None:
    cache = DecisionCache(100, max_age=60, staleness=5, clock=Clock())
    cache.follow()
    cache.put(key("a", "track:9"), decision(revision=1, ancestors=("label:indie",)))
    cache.put(key("a", "label:x"), decision(revision=1))
    cache.apply([(2, "resource", "release:7")], 2, caught_up=True)
    # The track's ancestry is known and lacks release:7: it stays. The label's answer
    # came without ancestors and is of another type than a release: it may sit under
    # it, so it goes.
    assert [k[2] for k in cache._entries] == ["track:9"]


def test_a_change_above_the_cached_type_drops_everything() -> None:
    """Answers from a service that sends no ancestors."""
    cache = DecisionCache(100, max_age=60, staleness=5, clock=Clock())
    cache.follow()
    cache.put(key("a", "track:1"), decision(revision=1))
    cache.put(key("a", "track:2"), decision(revision=1))
    cache.apply([(2, "resource", "label:acme")], 2, caught_up=True)
    assert len(cache) == 0
    # Same type and nesting declared: every resource change clears too.
    nested = DecisionCache(100, max_age=60, staleness=5, clock=Clock(), nested_same_type=True)
    nested.put(key("a", "release:1"), decision())
    nested.put(key("a", "release:2"), decision())
    nested.apply([(2, "resource", "release:9")], 2, caught_up=True)
    assert len(nested) == 0
    # An unknown kind: be safe.
    other = DecisionCache(100, max_age=60, staleness=5, clock=Clock())
    other.put(key(), decision())
    other.apply([(2, "something-new", "x")], 2, caught_up=True)
    assert len(other) == 0


def test_a_malformed_feed_page_changes_nothing() -> None:
    cache = DecisionCache(10, max_age=60, staleness=5, clock=Clock())
    cache.put(key(), decision())
    pages: list[object] = [
        [],
        {"revision": "3", "changes": [], "more": False},
        {"revision": 3, "changes": [{"revision": 3, "kind": "all"}], "more": False},
        {"revision": 3, "changes": [], "more": "no"},
    ]
    for page in pages:
        with pytest.raises(ValueError):
            cache.apply_page(page)
    assert len(cache) == 1 and cache.cursor is None


# -- breaker, backoff, Retry-After -------------------------------------------------------------


def test_the_breaker_opens_then_lets_one_trial_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerPolicy(failures=3, reset_after=2.0), clock)
    for _ in range(2):
        breaker.failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 2.0
    assert breaker.state == "half_open"
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # only one at a time
    breaker.failure()  # the trial failed: open again at once
    assert breaker.state == "open"
    clock.now += 2.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


def test_an_abandoned_trial_does_not_block_forever() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerPolicy(failures=1, reset_after=1.0), clock)
    breaker.failure()
    clock.now += 1.0
    assert breaker.allow()
    clock.now += 1.0
    assert breaker.allow()


def test_backoff_is_full_jitter_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(attempts=5, base_delay=0.1, max_delay=0.3, max_retry_after=2.0)
    for attempt, cap in ((1, 0.1), (2, 0.2), (3, 0.3), (4, 0.3)):
        pauses = [policy.pause(attempt) for _ in range(200)]
        assert all(p is not None and 0 <= p <= cap for p in pauses)
        assert max(p for p in pauses if p is not None) > cap / 2  # jitter spreads them
    assert policy.pause(1, 1.5) == pytest.approx(1.5, abs=0.1)
    assert policy.pause(1, 2.5) is None  # longer than we accept: give up now


def test_retry_after_reads_seconds_and_dates() -> None:
    now = 1_700_000_000.0
    assert retry_after("3", now) == 3.0
    assert retry_after(None, now) is None
    assert retry_after("soon", now) is None
    date = "Tue, 14 Nov 2023 22:13:30 GMT"  # now + 10 s
    assert retry_after(date, now) == pytest.approx(10.0)


# -- reading answers ---------------------------------------------------------------------------


def test_decisions_are_read_strictly() -> None:
    good = {
        "allowed": True,
        "reason": "granted",
        "grant": "g1",
        "valid_until": "2030-01-01T00:00:00Z",
        "revision": 7,
        "attributes": {"quality": "lossless"},
    }
    parsed = Decision.from_json(good)
    assert parsed.valid_until == datetime(2030, 1, 1, tzinfo=UTC)
    assert parsed.to_json() == good
    with pytest.raises(TypeError):
        parsed.attributes["quality"] = "low"  # type: ignore[index]
    for bad in (
        {**good, "allowed": "yes"},
        {**good, "allowed": False},  # contradicts the reason
        {**good, "reason": "because"},
        {**good, "revision": -1},
        {**good, "revision": True},
        {**good, "valid_until": "2030-01-01T00:00:00"},  # no offset
        {**good, "attributes": [1]},
        [good],
    ):
        with pytest.raises(ValueError):
            Decision.from_json(bad)


def make_base(**options: Any) -> BaseEntitlements[Any]:
    return BaseEntitlements("http://127.0.0.1:1", verifier=verifier(), **options)


def items(n: int, group: str | None = None) -> list[Item]:
    return [
        Item(
            (group, "u", (), f"track:{i}", "stream", "GB", None, None),
            ("u", (), f"track:{i}", "stream", "GB"),
            {"resource": f"track:{i}"},
            group,
            1e12,
        )
        for i in range(n)
    ]


def answer(status: int, body: Any, **headers: str) -> httpx.Response:
    request = httpx.Request("POST", "http://127.0.0.1:1/v1/check/batch")
    return httpx.Response(status, json=body, headers=headers, request=request)


def test_answers_map_to_typed_errors_and_never_to_an_allow() -> None:
    base = make_base()
    two = items(2)
    ok, _ = base._read(answer(200, {"results": [decision().to_json()] * 2}), two, None)
    assert all(isinstance(o, Decision) for o in ok)
    short, _ = base._read(answer(200, {"results": [decision().to_json()]}), two, None)
    assert all(isinstance(o, UnavailableError) for o in short)
    forbidden, _ = base._read(answer(403, {"detail": "needs scope"}), two, None)
    assert isinstance(forbidden[0], ForbiddenError) and forbidden[0].response is not None
    ours, _ = base._read(
        answer(401, {"detail": "token rejected: expired", "token_error": "expired"}), two, None
    )
    assert isinstance(ours[0], UnavailableError)  # the service token: not the user's fault
    theirs, _ = base._read(
        answer(401, {"detail": "token rejected: expired", "token_error": "expired"}), two, "tok"
    )
    assert isinstance(theirs[0], TokenRejectedError) and theirs[0].code == "expired"
    busy, _ = base._read(answer(503, {"title": "down"}), two, None)
    assert isinstance(busy[0], UnavailableError)


def test_a_batch_refused_for_one_item_resends_the_others() -> None:
    base = make_base()
    three = items(3)
    refused = answer(422, {"errors": [{"field": "checks.1.territory", "message": "not a code"}]})
    outcomes, resend = base._read(refused, three, None)
    assert resend == [0, 2]
    assert isinstance(outcomes[1], InvalidRequestError)
    vague, resend = base._read(answer(422, {"errors": [{"field": "checks"}]}), three, None)
    assert resend == [] and all(isinstance(o, InvalidRequestError) for o in vague)


def test_retries_stop_at_the_attempts_and_the_deadline() -> None:
    clock = Clock()
    base: BaseEntitlements[Any] = BaseEntitlements(
        "http://127.0.0.1:1",
        verifier=verifier(),
        service_token="svc",
        retries=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.01),
        clock=clock,
    )
    flow = base._run(None, items(1))
    sends = 0
    action = next(flow)
    with pytest.raises(StopIteration) as done:
        while True:
            if type(action).__name__ == "Send":
                sends += 1
                action = flow.send(httpx.ConnectError("refused"))
            else:
                clock.now += action.seconds  # type: ignore[union-attr]
                action = flow.send(None)
    assert sends == 3
    assert all(isinstance(o, UnavailableError) for o in done.value.value)
    # A deadline already passed: nothing is sent at all.
    late = [Item(i.flight, i.cache_key, i.body, i.group, clock.now) for i in items(2)]
    with pytest.raises(StopIteration) as none_sent:
        next(base._run(None, late))
    assert all(isinstance(o, UnavailableError) for o in none_sent.value.value)


# -- coalescing and the gate ---------------------------------------------------------------------


def test_identical_checks_share_one_waiter_and_batches_are_capped() -> None:
    coalescer: Coalescer[Future[Decision]] = Coalescer(max_batch=2)
    first = coalescer.join(items(3), Future, lambda item: None)
    again = coalescer.join(items(3), Future, lambda item: None)
    assert [a is b for a, b in zip(first, again, strict=True)] == [True, True, True]
    assert coalescer.joined == 3 and coalescer.pending == 3
    chunks = coalescer.drain()
    assert [len(c) for _, c in chunks] == [2, 1]
    coalescer.settle(items(3), [decision()] * 3)
    assert all(f.result() == decision() for f in first)
    separate = coalescer.join(items(1, group="tok"), Future, lambda item: None)
    landed = coalescer.join(items(1, group="x"), Future, lambda item: decision())
    assert landed[0].result() == decision() and coalescer.pending == 1  # nothing queued
    assert separate[0] is not first[0]  # another identity: another flight


def test_a_limited_drain_sends_the_oldest_checks_and_keeps_the_rest() -> None:
    coalescer: Coalescer[Future[Decision]] = Coalescer(max_batch=2)
    a, b = items(5, group="a"), items(2, group="b")
    asked = [a[0], b[0], a[1], a[2], a[3], b[1], a[4]]  # the order the calls came in
    for item in asked:
        coalescer.join([item], Future, lambda item: None)
    chunks = coalescer.drain(2)
    # Two chunks, opened by the two oldest checks; a younger check rides along in an
    # open chunk of its group, and what stays is younger than each chunk's first check.
    assert chunks == [("a", [a[0], a[1]]), ("b", [b[0], b[1]])]
    assert coalescer.pending == 3
    assert coalescer.drain(1) == [("a", [a[2], a[3]])]
    assert coalescer.drain() == [("a", [a[4]])]
    assert coalescer.pending == 0


def test_options_are_validated_up_front() -> None:
    for bad in (
        {"timeout": 0},
        {"max_batch": 1001},
        {"max_batch": 0},
        {"coalesce_window": -1},
        {"coalesce_window": 2},
        {"max_batch": 1.5},
        {"cache_size": -1},
        {"retries": -1},
        {"staleness": 0},
        {"service_token": ""},
    ):
        with pytest.raises(ValueError):
            make_base(**bad)
    with pytest.raises(ValueError):
        BaseEntitlements("ftp://x", verifier=verifier())


def test_clients_never_guess_sync_or_async_and_import_no_framework() -> None:
    assert hasattr(Entitlements, "close") and not hasattr(Entitlements, "aclose")
    assert hasattr(AsyncEntitlements, "aclose")
    probe = (
        "import sys, entitlements_client;"
        "print(sorted(m for m in ('fastapi', 'starlette', 'entitlements') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    import entitlements_client

    assert entitlements_client.__all__ == sorted(
        entitlements_client.__all__, key=lambda n: (not n.isupper(), not n[0].isupper(), n)
    )
    for name in entitlements_client.__all__:
        assert getattr(entitlements_client, name).__doc__ or name.isupper() or name == "Reason"


def test_the_gate_needs_every_role_and_scope() -> None:
    class Token:
        roles = ("plan:premium",)
        scopes = frozenset({"read"})

    BaseEntitlements._gate(Token(), ["plan:premium"], ["read"])  # type: ignore[arg-type]
    BaseEntitlements._gate(Token(), "plan:premium", ())  # type: ignore[arg-type]
    with pytest.raises(ForbiddenError):
        BaseEntitlements._gate(Token(), ["plan:premium", "staff"], ())  # type: ignore[arg-type]
    with pytest.raises(ForbiddenError):
        BaseEntitlements._gate(Token(), (), ["write"])  # type: ignore[arg-type]
