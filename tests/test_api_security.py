"""Who may call what, and what bad input gets back: 401, 403, 413, 422 problem+json, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from support import Api

CHECK = {"resource": "track:x", "action": "stream", "territory": "GB"}


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["type"].startswith("urn:entitlements:problem:")
    assert "Traceback" not in response.text
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    return body


# --- authentication ---------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-jwt",
        "Bearer a.b.c",
        "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.",
    ],
    ids=["missing", "empty", "blank", "basic", "garbage", "three-dots", "alg-none"],
)
async def test_no_or_bad_token_is_401(api: Api, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    r = await api.client.post("/v1/check", json=CHECK, headers=headers)
    assert_problem(r, 401)
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_expired_and_wrong_audience_tokens_are_401(api: Api) -> None:
    from entitlements.keys.signing import mint

    key = api.state.tokens._signing_key()
    expired, _ = mint(
        key,
        issuer=api.state.settings.issuer,
        audience="entitlements",
        subject="a",
        ttl=60,
        now=1_000_000,
    )
    other_aud, _ = mint(
        key, issuer=api.state.settings.issuer, audience="elsewhere", subject="a", ttl=60
    )
    other_iss, _ = mint(
        key, issuer="https://evil.example", audience="entitlements", subject="a", ttl=60
    )
    for token in (expired, other_aud, other_iss):
        r = await api.client.post("/v1/check", json=CHECK, headers=api.headers(token))
        assert_problem(r, 401)


# --- authorization ----------------------------------------------------------


async def test_user_may_ask_only_about_itself(api: Api) -> None:
    alice = api.token("alice")
    r = await api.client.post(
        "/v1/check", json={**CHECK, "subject": "bob"}, headers=api.headers(alice)
    )
    assert_problem(r, 403)
    r = await api.client.post(
        "/v1/check", json={**CHECK, "roles": ["plan:premium"]}, headers=api.headers(alice)
    )
    assert_problem(r, 403)
    same = await api.client.post(
        "/v1/check", json={**CHECK, "subject": "alice"}, headers=api.headers(alice)
    )
    assert same.status_code == 200


async def test_check_any_scope_may_ask_for_others(api: Api) -> None:
    await api.put_grant(
        "g", subject="role:plan:premium", resource="track:x", actions=["stream"], territories=["*"]
    )
    service = api.token("svc-player", scopes=("entitlements:check:any",))
    r = await api.client.post(
        "/v1/check",
        json={**CHECK, "subject": "bob", "roles": ["plan:premium"]},
        headers=api.headers(service),
    )
    assert r.status_code == 200 and r.json()["allowed"] is True
    r = await api.client.post(
        "/v1/check", json={**CHECK, "subject": "bob"}, headers=api.headers(service)
    )
    assert r.json()["allowed"] is False


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "PUT",
            "/v1/grants/g1",
            {"subject": "*", "resource": "track:x", "actions": ["stream"], "territories": ["*"]},
        ),
        ("GET", "/v1/grants/g1", None),
        ("DELETE", "/v1/grants/g1", None),
        ("GET", "/v1/grants?resource=track:x", None),
        ("PUT", "/v1/resources/track:x", {"parents": []}),
        ("GET", "/v1/resources/track:x", None),
    ],
)
async def test_admin_routes_need_admin_scope(api: Api, method: str, path: str, body: Any) -> None:
    for scopes in ((), ("entitlements:check:any",), ("entitlements:import",)):
        token = api.token("mallory", scopes=scopes)
        r = await api.client.request(method, path, json=body, headers=api.headers(token))
        assert_problem(r, 403)
    r = await api.client.request(method, path, json=body)
    assert_problem(r, 401)


# --- bad input ----------------------------------------------------------------


@pytest.mark.parametrize("territory", ["UK", "gb", "XX", "GBR", "", None, 44, "*"])
async def test_unknown_territory_is_422_naming_the_field(api: Api, territory: Any) -> None:
    r = await api.client.post(
        "/v1/check", json={**CHECK, "territory": territory}, headers=api.headers(api.token())
    )
    assert_problem(r, 422, "territory")


@pytest.mark.parametrize("territory", ["UK", "gb", "XX", "GBR", ""])
async def test_grant_with_unknown_territory_is_422(api: Api, territory: str) -> None:
    body = {
        "subject": "*",
        "resource": "track:x",
        "actions": ["stream"],
        "territories": ["GB", territory],
    }
    r = await api.client.put("/v1/grants/g", json=body, headers=api.admin)
    assert_problem(r, 422, "territories.1")


@pytest.mark.parametrize(
    ("window", "field"),
    [
        (
            {"valid_from": "2026-02-01T00:00:00Z", "valid_until": "2026-01-01T00:00:00Z"},
            "valid_until",
        ),
        (
            {"valid_from": "2026-01-01T00:00:00Z", "valid_until": "2026-01-01T00:00:00Z"},
            "valid_until",
        ),
        (
            {"valid_from": "2026-01-01T00:00:00+01:00", "valid_until": "2025-12-31T23:00:00Z"},
            "valid_until",
        ),
        ({"valid_from": "2026-01-01"}, "valid_from"),
        ({"valid_until": "2026-01-01T00:00:00"}, "valid_until"),
        ({"valid_until": "tomorrow"}, "valid_until"),
    ],
    ids=["inverted", "empty", "empty-across-offsets", "date-only", "no-offset", "words"],
)
async def test_bad_window_is_422(api: Api, window: dict[str, str], field: str) -> None:
    body = {
        "subject": "*",
        "resource": "track:x",
        "actions": ["stream"],
        "territories": ["*"],
        **window,
    }
    r = await api.client.put("/v1/grants/g", json=body, headers=api.admin)
    assert_problem(r, 422, field)


@pytest.mark.parametrize(
    "resource", ["track", "track:", ":x", "Track:1", "track: x", "t" * 300, 7, None]
)
async def test_malformed_resource_is_422(api: Api, resource: Any) -> None:
    r = await api.client.post(
        "/v1/check", json={**CHECK, "resource": resource}, headers=api.headers(api.token())
    )
    assert_problem(r, 422, "resource")


async def test_unknown_fields_are_422(api: Api) -> None:
    r = await api.client.post(
        "/v1/check", json={**CHECK, "resourse": "track:y"}, headers=api.headers(api.token())
    )
    assert_problem(r, 422, "resourse")
    body = {
        "subject": "*",
        "resource": "track:x",
        "actions": ["stream"],
        "territories": ["*"],
        "colour": "red",
    }
    assert_problem(
        await api.client.put("/v1/grants/g", json=body, headers=api.admin), 422, "colour"
    )


async def test_batch_over_1000_is_422(api: Api) -> None:
    r = await api.client.post(
        "/v1/check/batch", json={"checks": [CHECK] * 1001}, headers=api.headers(api.token())
    )
    assert_problem(r, 422, "checks")
    ok = await api.client.post(
        "/v1/check/batch", json={"checks": [CHECK] * 1000}, headers=api.headers(api.token())
    )
    assert ok.status_code == 200 and len(ok.json()["results"]) == 1000


async def test_batch_errors_name_the_item(api: Api) -> None:
    checks = [CHECK, {**CHECK, "territory": "UK"}]
    r = await api.client.post(
        "/v1/check/batch", json={"checks": checks}, headers=api.headers(api.token())
    )
    assert_problem(r, 422, "checks.1.territory")


async def test_body_over_limit_is_413(api: Api) -> None:
    big = {"checks": [{**CHECK, "resource": "track:" + "x" * 200}] * 6000}
    r = await api.client.post("/v1/check/batch", json=big, headers=api.headers(api.token()))
    assert_problem(r, 413)


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"[]", b"null", b'"text"', b"\xff\xfe{}", b'{"resource": NaN}'],
    ids=["empty", "truncated", "array", "null", "string", "utf16", "nan"],
)
async def test_non_object_or_broken_json_is_422(api: Api, raw: bytes) -> None:
    r = await api.client.post(
        "/v1/check",
        content=raw,
        headers={**api.headers(api.token()), "Content-Type": "application/json"},
    )
    assert_problem(r, 422)


async def test_unknown_grant_is_404_problem(api: Api) -> None:
    assert_problem(await api.client.get("/v1/grants/nope", headers=api.admin), 404)
    assert_problem(await api.client.delete("/v1/grants/nope", headers=api.admin), 404)


async def test_health_and_docs_are_public(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = (await api.client.get("/readyz")).json()
    assert ready["status"] == "ready" and isinstance(ready["revision"], int)
    spec = (await api.client.get("/openapi.json")).json()
    assert "/v1/check" in spec["paths"] and "/v1/check/batch" in spec["paths"]
    assert (await api.client.get("/docs")).status_code == 200
