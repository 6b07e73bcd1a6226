"""A tiny music player API guarded by entitlements: the SDK's runnable example.

Start the entitlements demo (it serves on :8000 and prints ``export ALICE=…``
lines), then this (on :8080)::

    pip install './client[fastapi]' uvicorn   # from the checkout
    python client/examples/player.py

    curl -H "Authorization: Bearer $ALICE" -H "X-Country: GB" \\
        http://127.0.0.1:8080/tracks/USRC17607839/stream
    # {"track":"USRC17607839","url":"https://cdn.example/USRC17607839.flac",...}
    curl -H "Authorization: Bearer $BOB" -H "X-Country: JP" \\
        http://127.0.0.1:8080/tracks/USRC17607839/stream
    # 403 {"detail":"not allowed: territory"}   (bob's free plan: GB, US, IE only)

Behind a gateway (``PLAYER_BEHIND_GATEWAY=1``): the gateway asks entitlements
(``/v1/gateway/check``) and forwards a per-request token; the player only verifies
it (:func:`create_gateway_app`; README "At the edge: gateways and AuthZEN").

For one service identity (batches across users, cache following the change
feed) also ``export PLAYER_SERVICE_TOKEN=$(entitlements token mint --sub player
--scope entitlements:check:any --ttl 24h)``.

Configuration (environment): ``ENTITLEMENTS_URL`` (the service), and the
service's ``ENTITLEMENTS_ISSUER`` / ``ENTITLEMENTS_AUDIENCE`` (default
``entitlements``) so the SDK trusts the tokens it signs; ``PLAYER_SERVICE_TOKEN``
(optional) a token with ``entitlements:check:any`` — with it, checks of all
users share batches and the cache follows the change feed; without it each
user's own token is forwarded.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request

from entitlements_client import (
    AsyncEntitlements,
    Decision,
    InvalidTokenError,
    TokenVerifier,
    VerifiedToken,
    service_issuer,
)
from entitlements_client.bearer import bearer_token, www_authenticate
from entitlements_client.fastapi import authenticated, require


def gateway_verifier_from_env() -> TokenVerifier:
    """Behind a gateway: trust the per-request tokens the service mints for this player
    (``PLAYER_AUDIENCE``, default ``https://player.internal``: the route table's
    ``token.audience``), lifetime at most 60 s."""
    url = os.environ.get("ENTITLEMENTS_URL", "http://127.0.0.1:8000")
    issuer = os.environ.get("ENTITLEMENTS_ISSUER", "entitlements")
    audience = os.environ.get("PLAYER_AUDIENCE", "https://player.internal")
    trusted = service_issuer(url, issuer=issuer, audience=audience)
    return TokenVerifier([replace(trusted, max_lifetime=60)])


def client_from_env() -> AsyncEntitlements:
    """The SDK client, configured from the environment (see the module docstring)."""
    url = os.environ.get("ENTITLEMENTS_URL", "http://127.0.0.1:8000")
    issuer = os.environ.get("ENTITLEMENTS_ISSUER", "entitlements")
    audience = os.environ.get("ENTITLEMENTS_AUDIENCE", "entitlements")
    return AsyncEntitlements(
        url,
        verifier=[service_issuer(url, issuer=issuer, audience=audience)],
        service_token=os.environ.get("PLAYER_SERVICE_TOKEN") or None,
        timeout=1.0,
    )


def country(request: Request) -> str:
    """Where the listener is: a CDN usually tells (CloudFront-Viewer-Country…)."""
    return request.headers.get("x-country", "")


def track(request: Request) -> str:
    return f"track:{request.path_params['track_id']}"


def create_app(make_client: Any = client_from_env) -> FastAPI:
    """The player app; ``make_client()`` builds the :class:`AsyncEntitlements` it uses."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, AsyncEntitlements]]:
        async with make_client() as entitlements:
            # Lifespan state: the dependencies find it as request.state.entitlements.
            yield {"entitlements": entitlements}

    app = FastAPI(title="player", lifespan=lifespan)

    @app.get("/tracks/{track_id}/stream")
    async def stream(
        track_id: str,
        decision: Annotated[
            Decision, Depends(require("stream", resource=track, territory=country))
        ],
    ) -> dict[str, Any]:
        # Only reached when allowed; the grant's attributes say what the deal licenses.
        attributes = dict(decision.attributes or {})
        return {
            "track": track_id,
            "url": f"https://cdn.example/{track_id}.flac",
            "quality": attributes.get("quality", "standard"),
            "grant": decision.grant,
        }

    @app.get("/tracks/{track_id}/download")
    async def download(
        track_id: str,
        decision: Annotated[
            Decision,
            # The coarse gate first (no network): only paying plans may download at all.
            Depends(
                require(
                    "download",
                    resource=track,
                    territory=country,
                    require_roles=["plan:premium"],
                )
            ),
        ],
    ) -> dict[str, Any]:
        return {"track": track_id, "url": f"https://cdn.example/{track_id}.zip"}

    @app.get("/me")
    async def me(token: Annotated[VerifiedToken, Depends(authenticated())]) -> dict[str, Any]:
        return {"subject": token.subject, "roles": list(token.roles)}

    return app


async def gateway_caller(request: Request) -> VerifiedToken:
    """The per-request token of a request the gateway let through, verified with the
    SDK against the app's ``state.verifier`` — bound to this method and raw path."""
    verifier: TokenVerifier = request.app.state.verifier
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise HTTPException(401, "a per-request token is required", {"WWW-Authenticate": "Bearer"})
    # The raw path, as the gateway saw it (%-escapes kept): what the token is bound to.
    raw = request.scope.get("raw_path") or request.url.path.encode()
    try:
        return await verifier.averify(token, method=request.method, path=raw.decode("latin-1"))
    except InvalidTokenError as exc:
        raise HTTPException(401, exc.message, {"WWW-Authenticate": www_authenticate(exc)}) from exc


def create_gateway_app(verifier: TokenVerifier) -> FastAPI:
    """The player behind a gateway (nginx ``auth_request``, Envoy ``ext_authz``, Traefik
    ``forwardAuth`` asking ``/v1/gateway/check``): the decision is already made. Each
    request carries the per-request token the check minted (``Authorization: Bearer``,
    audience: this player), bound to its method and path; the SDK verifies it here,
    binding included, with no network call. The decision headers say why it was allowed.
    """
    app = FastAPI(title="player (behind a gateway)")

    app.state.verifier = verifier

    @app.get("/tracks/{track_id}/stream")
    async def stream(
        track_id: str, request: Request, token: Annotated[VerifiedToken, Depends(gateway_caller)]
    ) -> dict[str, Any]:
        return {
            "track": track_id,
            "url": f"https://cdn.example/{track_id}.flac",
            "subject": token.subject,
            "roles": list(token.roles),
            "decision": {
                h: request.headers.get(h)
                for h in (
                    "x-entitlements-subject",
                    "x-entitlements-grant",
                    "x-entitlements-valid-until",
                )
            },
        }

    return app


app = (
    create_gateway_app(gateway_verifier_from_env())
    if os.environ.get("PLAYER_BEHIND_GATEWAY")
    else create_app()
)

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PLAYER_PORT", "8080")))
