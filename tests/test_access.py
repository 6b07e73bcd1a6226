"""Every rule of who may ask what is the service's: an adapter that hands
``AccessService.check`` a verified caller and a question gets what ``/v1/check``
answers, refusals included; the admin service refuses a caller without the scope
whoever calls it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from support import Api
from test_exchange import exchange

from entitlements.domain.decision import decision_json
from entitlements.errors import PermissionDeniedError
from entitlements.service.access import Question
from entitlements_client import InvalidTokenError, VerifiedToken

AT = datetime(2026, 6, 1, tzinfo=UTC)
QUESTIONS: list[dict[str, Any]] = [
    {"resource": "track:x", "action": "stream", "territory": "GB"},
    {"resource": "track:x", "action": "stream", "territory": "DE"},
    {"resource": "track:y", "action": "stream", "territory": "GB"},
    {"resource": "track:x", "action": "stream", "territory": "GB", "subject": "alice"},
    {"resource": "track:x", "action": "stream", "territory": "GB", "subject": "bob"},
    {"resource": "track:y", "action": "stream", "territory": "GB", "subject": "bob"},
    {"resource": "track:x", "action": "stream", "territory": "GB", "roles": ["plan:premium"]},
    {
        "resource": "track:y",
        "action": "stream",
        "territory": "GB",
        "subject": "bob",
        "roles": ["plan:premium"],
    },
]


EXPECTED = {
    "alice": {"allowed": 2, "refused": 4},
    "service": {"allowed": 3, "refused": 0},
    "exchanged": {"allowed": 2, "refused": 5},
}


def question(body: dict[str, Any]) -> Question:
    roles = body.get("roles")
    return Question(
        resource=body["resource"],
        action=body["action"],
        territory=body["territory"],
        at=AT,
        subject=body.get("subject"),
        roles=None if roles is None else tuple(roles),
    )


async def verified(api: Api, token: str) -> VerifiedToken:
    try:
        return await api.state.auth.access.averify(token)
    except InvalidTokenError:  # an exchanged token has its own verifier
        return await api.state.auth.exchanged.averify(token)


@pytest.fixture
async def callers(api: Api) -> dict[str, str]:
    await api.put_grant(
        "premium",
        subject="role:plan:premium",
        resource="track:x",
        actions=["stream"],
        territories=["GB"],
    )
    await api.put_grant(
        "bob-y", subject="user:bob", resource="track:y", actions=["stream"], territories=["*"]
    )
    alice = api.token("alice", roles=("plan:premium",), scopes=("entitlements:check",))
    r = await exchange(
        api, alice, audience="entitlements", scope="entitlements:check", resource="track:x"
    )
    assert r.status_code == 200, r.text
    return {
        "alice": alice,
        "service": api.token("svc-player", scopes=("entitlements:check:any",)),
        "exchanged": r.json()["access_token"],
    }


@pytest.mark.parametrize("caller", ["alice", "service", "exchanged"])
async def test_an_adapter_calling_the_service_gets_what_v1_check_answers(
    api: Api, callers: dict[str, str], caller: str
) -> None:
    token = callers[caller]
    answers = {"allowed": 0, "refused": 0}
    for body in QUESTIONS:
        r = await api.client.post(
            "/v1/check",
            json={**body, "at": "2026-06-01T00:00:00Z"},
            headers=api.headers(token),
        )
        try:
            decision = await api.state.access.check(await verified(api, token), question(body))
        except PermissionDeniedError as exc:
            assert r.status_code == 403, (caller, body, r.text)
            assert r.json()["detail"] == str(exc)
            answers["refused"] += 1
            continue
        assert r.status_code == 200, (caller, body, r.text)
        assert r.json() == decision_json(decision), (caller, body)
        answers["allowed"] += decision.allowed
    # alice may not ask about bob or name roles; the service may; the exchanged token
    # (alice's, limited to track:x) may not leave track:x either.
    assert answers == EXPECTED[caller]


async def test_the_batch_applies_the_same_rules_in_order(api: Api, callers: dict[str, str]) -> None:
    caller = await verified(api, callers["service"])
    decisions = await api.state.access.check_many(caller, [question(b) for b in QUESTIONS])
    r = await api.client.post(
        "/v1/check/batch",
        json={"checks": [{**b, "at": "2026-06-01T00:00:00Z"} for b in QUESTIONS]},
        headers=api.headers(callers["service"]),
    )
    assert r.status_code == 200, r.text
    assert r.json()["results"] == [decision_json(d) for d in decisions]
    alice = await verified(api, callers["alice"])
    with pytest.raises(PermissionDeniedError, match="entitlements:check:any"):
        await api.state.access.check_many(alice, [question(b) for b in QUESTIONS])


async def test_an_exchanged_token_limited_to_resources_cannot_list(
    api: Api, callers: dict[str, str]
) -> None:
    caller = await verified(api, callers["exchanged"])
    with pytest.raises(PermissionDeniedError, match="cannot list"):
        await api.state.access.list_entitlements(
            caller, action="stream", territory="GB", type_=None, cursor=None, limit=10
        )
    r = await api.client.get(
        "/v1/entitlements?action=stream&territory=GB", headers=api.headers(callers["exchanged"])
    )
    assert r.status_code == 403


async def test_the_admin_service_refuses_a_caller_without_the_scope(
    api: Api, callers: dict[str, str]
) -> None:
    caller = await verified(api, callers["service"])

    async def body() -> object:
        raise AssertionError("the body of a refused write is never read")

    with pytest.raises(PermissionDeniedError, match="entitlements:admin"):
        await api.state.admin.put_grant(caller, "premium", body)
    with pytest.raises(PermissionDeniedError, match="entitlements:admin"):
        await api.state.admin.get_grant(caller, "premium")
    with pytest.raises(PermissionDeniedError, match="entitlements:admin"):
        await api.state.admin.delete_grant(caller, "premium")
    assert (await api.client.get("/v1/grants/premium", headers=api.admin)).status_code == 200
