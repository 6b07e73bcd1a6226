"""The AuthZEN Authorization API 1.0 adapter, end to end over the real Postgres.

The spec's request examples (with the ``context.territory`` every question here
needs), defaults and per-item overrides, each ``evaluations_semantic``, the 400s
the spec asks for, ``X-Request-ID``, discovery, resource search — and a property:
every AuthZEN decision equals ``/v1/check``'s for the same question.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import Api, running, settings_for

from entitlements.store.postgres import PostgresStore

CHECK_ANY = "entitlements:check:any"


@pytest.fixture
async def az(clean: PostgresStore, pg_dsn: str) -> AsyncIterator[Api]:
    async with running(settings_for(pg_dsn)) as (client, state):
        api = Api(client, state)
        await api.put_resource("account:123", ["bank:acme"])
        await api.put_resource("document:boxcarring.md", ["folder:specs"])
        await api.put_resource("document:subject-search.md", ["folder:drafts"])
        await api.put_resource("document:resource-search.md", ["folder:specs"])
        await api.put_grant(
            "readers",
            subject="user:alice@acmecorp.com",
            resource="folder:specs",
            actions=["can_read"],
            territories=["*"],
        )
        await api.put_grant(
            "banking",
            subject="user:alice@acmecorp.com",
            resource="bank:acme",
            actions=["can_read"],
            territories=["US"],
        )
        await api.put_grant(
            "no-drafts",
            subject="*",
            resource="folder:drafts",
            actions=["can_read", "can_edit"],
            territories=["*"],
            effect="deny",
        )
        yield api


def auth(api: Api, sub: str = "alice@acmecorp.com", **kw: Any) -> dict[str, str]:
    return api.headers(api.token(sub, **kw))


async def test_spec_evaluation_example(az: Api) -> None:
    # The spec's example request, plus the territory every question here needs.
    body = {
        "subject": {"type": "user", "id": "alice@acmecorp.com"},
        "resource": {"type": "account", "id": "123"},
        "action": {"name": "can_read", "properties": {"method": "GET"}},
        "context": {"time": "1985-10-26T01:22-07:00", "territory": "US"},
    }
    r = await az.client.post("/access/v1/evaluation", json=body, headers=auth(az))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["decision"] is True
    assert answer["context"]["reason"] == "granted"
    assert answer["context"]["grant"] == "banking"
    assert answer["context"]["valid_until"] is None
    assert isinstance(answer["context"]["revision"], int)
    body["context"] = {"territory": "GB"}
    r = await az.client.post("/access/v1/evaluation", json=body, headers=auth(az))
    assert r.json()["decision"] is False
    assert r.json()["context"]["reason"] == "territory"


SPEC_EVALUATIONS = {
    "subject": {"type": "user", "id": "alice@acmecorp.com"},
    "action": {"name": "can_read"},
    "context": {"territory": "GB"},
    "evaluations": [
        {"resource": {"type": "document", "id": "boxcarring.md"}},
        {"resource": {"type": "document", "id": "subject-search.md"}},
        {"action": {"name": "can_edit"}, "resource": {"type": "document", "id": "resource-search.md"}},
    ],
    "options": {"evaluations_semantic": "execute_all"},
}  # fmt: skip


async def test_spec_evaluations_example_defaults_and_overrides(az: Api) -> None:
    r = await az.client.post("/access/v1/evaluations", json=SPEC_EVALUATIONS, headers=auth(az))
    assert r.status_code == 200, r.text
    got = [(e["decision"], e["context"]["reason"]) for e in r.json()["evaluations"]]
    # the default action can_read; the third overrides it with can_edit (not granted)
    assert got == [(True, "granted"), (False, "denied"), (False, "not_licensed")]


async def test_item_context_replaces_the_default(az: Api) -> None:
    body = {
        "subject": {"type": "user", "id": "alice@acmecorp.com"},
        "resource": {"type": "account", "id": "123"},
        "action": {"name": "can_read"},
        "context": {"territory": "GB"},
        "evaluations": [{}, {"context": {"territory": "US"}}],
    }
    r = await az.client.post("/access/v1/evaluations", json=body, headers=auth(az))
    assert [e["decision"] for e in r.json()["evaluations"]] == [False, True]


@pytest.mark.parametrize(
    ("semantic", "expected"),
    [
        ("execute_all", [True, False, True, False]),
        ("deny_on_first_deny", [True, False]),
        ("permit_on_first_permit", [True]),
    ],
)
async def test_each_semantic(az: Api, semantic: str, expected: list[bool]) -> None:
    doc = {"type": "document"}
    body = {
        "subject": {"type": "user", "id": "alice@acmecorp.com"},
        "action": {"name": "can_read"},
        "context": {"territory": "GB"},
        "evaluations": [
            {"resource": {**doc, "id": "boxcarring.md"}},
            {"resource": {**doc, "id": "subject-search.md"}},
            {"resource": {**doc, "id": "resource-search.md"}},
            {"resource": {**doc, "id": "nothing.md"}},
        ],
        "options": {"evaluations_semantic": semantic, "unknown_option": 1},
    }
    r = await az.client.post("/access/v1/evaluations", json=body, headers=auth(az))
    assert r.status_code == 200, r.text
    assert [e["decision"] for e in r.json()["evaluations"]] == expected


async def test_permit_on_first_permit_past_the_first_batch(az: Api) -> None:
    items = [{"resource": {"type": "document", "id": f"n{i}.md"}} for i in range(40)]
    items.append({"resource": {"type": "document", "id": "boxcarring.md"}})
    items.append({"resource": {"type": "document", "id": "n99.md"}})
    body = {
        "subject": {"type": "user", "id": "alice@acmecorp.com"},
        "action": {"name": "can_read"},
        "context": {"territory": "GB"},
        "evaluations": items,
        "options": {"evaluations_semantic": "permit_on_first_permit"},
    }
    r = await az.client.post("/access/v1/evaluations", json=body, headers=auth(az))
    decisions = [e["decision"] for e in r.json()["evaluations"]]
    assert decisions == [False] * 40 + [True]


async def test_no_evaluations_array_is_a_single_evaluation(az: Api) -> None:
    body = {k: v for k, v in SPEC_EVALUATIONS.items() if k not in {"evaluations", "options"}}
    body["resource"] = {"type": "document", "id": "boxcarring.md"}
    extras: list[dict[str, Any]] = [{}, {"evaluations": []}]
    for extra in extras:
        r = await az.client.post("/access/v1/evaluations", json={**body, **extra}, headers=auth(az))
        assert r.status_code == 200, r.text
        assert r.json()["decision"] is True


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"subject": None}, "subject"),
        ({"resource": {"type": "account"}}, "resource.id"),
        ({"action": {}}, "action.name"),
        ({"context": {}}, "context.territory"),
        ({"context": {"territory": "XX"}}, "context.territory"),
        ({"context": {"territory": "GB", "time": "yesterday"}}, "context.time"),
        ({"subject": {"type": "group", "id": "x"}}, "subject.type"),
        ({"resource": {"type": "Account", "id": "1"}}, "resource"),
    ],
)
async def test_bad_requests_are_400_naming_the_field(
    az: Api, change: dict[str, Any], field: str
) -> None:
    body: dict[str, Any] = {
        "subject": {"type": "user", "id": "alice@acmecorp.com"},
        "resource": {"type": "account", "id": "123"},
        "action": {"name": "can_read"},
        "context": {"territory": "US"},
        "unknown": "ignored",
    }
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    r = await az.client.post("/access/v1/evaluation", json=body, headers=auth(az))
    assert r.status_code == 400, r.text
    assert field in [e["field"] for e in r.json()["errors"]]


async def test_bad_batches(az: Api) -> None:
    base = {k: v for k, v in SPEC_EVALUATIONS.items() if k != "evaluations"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"evaluations": [{}] * 1001}, "evaluations"),
        ({"evaluations": [{"resource": {"type": "document"}}]}, "evaluations.0.resource.id"),
        ({"evaluations": ["x"]}, "evaluations.0"),
        (
            {"evaluations": [{}], "options": {"evaluations_semantic": "first_one"}},
            "options.evaluations_semantic",
        ),
    ]
    for extra, field in cases:
        r = await az.client.post("/access/v1/evaluations", json={**base, **extra}, headers=auth(az))
        assert r.status_code == 400, r.text
        assert field in [e["field"] for e in r.json()["errors"]]
    r = await az.client.post(
        "/access/v1/evaluation",
        content=b"[]",
        headers={**auth(az), "content-type": "application/json"},
    )
    assert r.status_code == 400


async def test_scope_rules_as_v1_check(az: Api) -> None:
    body = {
        "subject": {"type": "user", "id": "alice@acmecorp.com"},
        "resource": {"type": "account", "id": "123"},
        "action": {"name": "can_read"},
        "context": {"territory": "US"},
    }
    bob = auth(az, "bob")
    r = await az.client.post("/access/v1/evaluation", json=body, headers=bob)
    assert r.status_code == 403
    with_roles = {**body, "subject": {**body["subject"], "properties": {"roles": ["x"]}}}
    r = await az.client.post("/access/v1/evaluation", json=with_roles, headers=auth(az))
    assert r.status_code == 403
    service = auth(az, "svc", scopes=(CHECK_ANY,))
    r = await az.client.post("/access/v1/evaluation", json=with_roles, headers=service)
    assert r.status_code == 200
    assert r.json()["decision"] is True
    r = await az.client.post("/access/v1/evaluation", json=body)
    assert r.status_code == 401


async def test_request_id_is_echoed(az: Api) -> None:
    headers = {**auth(az), "X-Request-ID": "req-42"}
    for body in ({"subject": {"type": "user", "id": "alice@acmecorp.com"}}, SPEC_EVALUATIONS):
        path = "/access/v1/evaluations" if "evaluations" in body else "/access/v1/evaluation"
        r = await az.client.post(path, json=body, headers=headers)
        assert r.headers["x-request-id"] == "req-42", (path, r.status_code)


async def test_discovery_omits_what_has_no_value(az: Api) -> None:
    r = await az.client.get("/.well-known/authzen-configuration")
    assert r.status_code == 200
    meta = r.json()
    assert meta == {
        "policy_decision_point": "http://test",
        "access_evaluation_endpoint": "http://test/access/v1/evaluation",
        "access_evaluations_endpoint": "http://test/access/v1/evaluations",
        "search_resource_endpoint": "http://test/access/v1/search/resource",
    }
    assert None not in meta.values()


async def test_resource_search_is_the_callers_listing(az: Api) -> None:
    body: dict[str, Any] = {
        "subject": {"type": "user", "id": "alice@acmecorp.com"},
        "action": {"name": "can_read"},
        "resource": {"type": "document"},
        "context": {"territory": "GB"},
        "page": {"limit": 1},
    }
    r = await az.client.post("/access/v1/search/resource", json=body, headers=auth(az))
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["results"] == [{"type": "document", "id": "boxcarring.md"}]
    body["page"] = {"limit": 1, "token": first["page"]["next_token"]}
    r = await az.client.post("/access/v1/search/resource", json=body, headers=auth(az))
    assert r.json()["results"] == [{"type": "document", "id": "resource-search.md"}]
    other = {**body, "subject": {"type": "user", "id": "bob"}}
    r = await az.client.post("/access/v1/search/resource", json=other, headers=auth(az))
    assert r.status_code == 403


USERS = ["alice@acmecorp.com", "bob", "carol"]
RESOURCES = [
    ("account", "123"),
    ("document", "boxcarring.md"),
    ("document", "subject-search.md"),
    ("document", "resource-search.md"),
    ("document", "unknown.md"),
]
TIMES = ["2020-01-01T00:00:00Z", "2026-06-01T12:00:00Z", None]


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    user=st.sampled_from(USERS),
    roles=st.sampled_from([None, [], ["plan:premium"]]),
    resource=st.sampled_from(RESOURCES),
    action=st.sampled_from(["can_read", "can_edit"]),
    territory=st.sampled_from(["GB", "US", "DE"]),
    time=st.sampled_from(TIMES),
)
async def test_every_authzen_decision_equals_v1_check(
    az: Api,
    user: str,
    roles: list[str] | None,
    resource: tuple[str, str],
    action: str,
    territory: str,
    time: str | None,
) -> None:
    service = az.token("svc", scopes=(CHECK_ANY,))
    subject: dict[str, Any] = {"type": "user", "id": user}
    question: dict[str, Any] = {
        "subject": user,
        "resource": f"{resource[0]}:{resource[1]}",
        "action": action,
        "territory": territory,
    }
    context: dict[str, Any] = {"territory": territory}
    if roles is not None:
        subject["properties"] = {"roles": roles}
        question["roles"] = roles
    if time is not None:
        context["time"] = time
        question["at"] = time
    body = {
        "subject": subject,
        "resource": {"type": resource[0], "id": resource[1]},
        "action": {"name": action},
        "context": context,
    }
    r = await az.client.post("/access/v1/evaluation", json=body, headers=az.headers(service))
    assert r.status_code == 200, r.text
    batch = await az.client.post(
        "/access/v1/evaluations",
        json={"context": context, "evaluations": [body]},
        headers=az.headers(service),
    )
    want = await az.check(service, **question)
    for got in (r.json(), batch.json()["evaluations"][0]):
        assert got["decision"] == want["allowed"]
        assert got["context"] == {
            "reason": want["reason"],
            "valid_until": want["valid_until"],
            "grant": want["grant"],
            "revision": want["revision"],
        }
