"""One bearer parser: the service's API and the SDK's two adapters (the ASGI middleware
and the FastAPI dependency) accept and refuse exactly the same ``Authorization``
headers.

Each header goes, as raw bytes, to the real service app (``POST /v1/check``) and to
two small apps guarded by the SDK, all in-process through ``httpx.ASGITransport``
(no HTTP parser on the way strips or refuses anything first). The SDK side trusts
the service's own published keys, so a token valid for one is valid for the other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from support import Api

from entitlements_client import (
    AsyncEntitlements,
    EntitlementsMiddleware,
    IssuerConfig,
    KeySet,
    TokenVerifier,
    VerifiedToken,
)
from entitlements_client.bearer import bearer_token
from entitlements_client.fastapi import authenticated
from entitlements_client.issuers import ALL_SCOPES

CHECK = {"resource": "track:bearer-1", "action": "stream", "territory": "GB"}

# (id, header value with {token} for a valid token or None for no header, accepted?)
HEADERS: list[tuple[str, bytes | None, bool]] = [
    ("plain", b"Bearer {token}", True),
    ("lowercase-scheme", b"bearer {token}", True),
    ("uppercase-scheme", b"BEARER {token}", True),
    ("several-spaces", b"Bearer    {token}", True),
    ("spaces-around", b"  Bearer {token}  ", True),
    ("tabs-around", b"\tBearer {token}\t", True),
    ("space-then-tab", b"Bearer \t{token}", True),
    ("missing", None, False),
    ("empty", b"", False),
    ("scheme-only", b"Bearer", False),
    ("scheme-and-space", b"Bearer ", False),
    ("scheme-and-blanks", b"Bearer \t ", False),
    ("tab-separator", b"Bearer\t{token}", False),
    ("basic", b"Basic {token}", False),
    ("no-scheme", b"{token}", False),
    ("two-words", b"Bearer {token} extra", False),
    ("bearer-twice", b"Bearer Bearer {token}", False),
    # Not HTTP whitespace: a vertical tab or a no-break space is part of the value.
    ("vertical-tab-before", b"\x0bBearer {token}", False),
    ("no-break-space-after", b"Bearer {token}\xa0", False),
    ("no-break-space-separator", b"Bearer\xa0{token}", False),
]


async def whoami(caller: Annotated[VerifiedToken, Depends(authenticated())]) -> dict[str, str]:
    """Behind the SDK's FastAPI dependency (the client comes from ``app.state``)."""
    return {"sub": caller.subject}


def _ok_app() -> Callable[..., Awaitable[None]]:
    async def app(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def _service_verifier(api: Api) -> TokenVerifier:
    jwks = (await api.client.get("/.well-known/jwks.json")).json()
    settings = api.state.settings
    return TokenVerifier(
        [
            IssuerConfig(
                issuer=settings.issuer,
                audience=settings.audience,
                keys=KeySet(jwks=jwks),
                algorithms=("EdDSA", "ES256"),
                subject_prefix="",
                allowed_scopes=(ALL_SCOPES,),
            )
        ]
    )


def _status_name(status: int) -> str:
    assert status in (200, 401), status
    return "accepted" if status == 200 else "refused"


async def test_the_service_and_both_sdk_adapters_accept_and_refuse_the_same_headers(
    api: Api,
) -> None:
    token = api.token("bearer-user")
    verifier = await _service_verifier(api)
    ent = AsyncEntitlements("http://127.0.0.1:1", verifier=verifier, follow_changes=False)

    guarded = FastAPI()
    guarded.state.entitlements = ent
    guarded.add_api_route("/whoami", whoami)
    middleware = EntitlementsMiddleware(_ok_app(), verifier)
    transport_fastapi = httpx.ASGITransport(app=guarded)
    transport_asgi = httpx.ASGITransport(app=middleware)
    seen: dict[str, dict[str, str]] = {}
    async with (
        httpx.AsyncClient(transport=transport_fastapi, base_url="http://sdk") as fastapi_app,
        httpx.AsyncClient(transport=transport_asgi, base_url="http://sdk") as asgi_app,
    ):
        for name, template, _ in HEADERS:
            headers = (
                {}
                if template is None
                else {b"Authorization": template.replace(b"{token}", token.encode())}
            )
            service = await api.client.post("/v1/check", json=CHECK, headers=headers)
            assert service.status_code in (200, 401), (name, service.text)
            by_asgi = await asgi_app.get("/anything", headers=headers)
            by_fastapi = await fastapi_app.get("/whoami", headers=headers)
            seen[name] = {
                "service": _status_name(service.status_code),
                "asgi": _status_name(by_asgi.status_code),
                "fastapi": _status_name(by_fastapi.status_code),
            }
            if by_fastapi.status_code == 200:
                assert by_fastapi.json() == {"sub": "bearer-user"}
    await ent.aclose()
    expected = {
        name: dict.fromkeys(("service", "asgi", "fastapi"), "accepted" if ok else "refused")
        for name, _, ok in HEADERS
    }
    assert seen == expected


@pytest.mark.parametrize(("name", "template", "accepted"), HEADERS, ids=[h[0] for h in HEADERS])
def test_the_parser_alone(name: str, template: bytes | None, accepted: bool) -> None:
    value = None if template is None else template.replace(b"{token}", b"a.b.c").decode("latin-1")
    assert (bearer_token(value) == "a.b.c") is accepted, name
