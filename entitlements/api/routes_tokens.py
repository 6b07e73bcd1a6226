"""Token routes: our JWKS, token exchange (RFC 8693) and revocation."""

from __future__ import annotations

from typing import Annotated, Any, Final
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from entitlements.api.auth import SCOPE_ADMIN, SCOPE_EXCHANGE, caller, require_scope
from entitlements.api.body import json_object, read_body, read_json
from entitlements.api.openapi import AUTH, BODY, STORE, answers, json_body, json_response
from entitlements.domain.values import parse_text
from entitlements.errors import FieldError, InvalidInputError, UnauthenticatedError
from entitlements_client import InvalidTokenError, VerifiedToken, parse_duration

router = APIRouter(tags=["tokens"])

GRANT_TYPE_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 (a URN, not a secret)
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105
MAX_JTI_LENGTH = 256


_JWKS: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["keys"],
    "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
}


@router.get(
    "/.well-known/jwks.json",
    summary="The public keys our tokens are signed with (public)",
    responses=answers(
        {
            200: {
                **json_response(_JWKS, "the JSON Web Key Set (RFC 7517)"),
                "headers": {"Cache-Control": {"required": True, "schema": {"type": "string"}}},
            }
        }
    ),
)
async def jwks(request: Request) -> Response:
    body = orjson.dumps(request.state.ent.tokens.jwks())
    # Short enough that a rotation reaches verifiers quickly; old keys stay
    # published long after, so a cached copy never misses a key in use.
    return Response(
        body,
        media_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )


_TEXT: Final = {"type": "string", "minLength": 1}
_EXCHANGE_FORM: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["grant_type", "subject_token", "audience"],
    "properties": {
        "grant_type": {"const": GRANT_TYPE_EXCHANGE},
        "subject_token": {**_TEXT, "description": "the user's access token"},
        "subject_token_type": {"const": ACCESS_TOKEN_TYPE},
        "audience": {**_TEXT, "maxLength": 512, "description": "exactly one"},
        "scope": {"type": "string", "description": "space-separated; a subset of the user's"},
        "resource": {
            "type": "array",
            "items": {"type": "string"},
            "maxItems": 100,
            "description": "'type:id' the token is limited to (repeatable)",
        },
        "expires_in": {"type": "string", "description": "seconds, or a duration such as '3d'"},
    },
}
_ISSUED: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["access_token", "issued_token_type", "token_type", "expires_in", "jti"],
    "properties": {
        "access_token": {"type": "string"},
        "issued_token_type": {"const": JWT_TOKEN_TYPE},
        "token_type": {"const": "Bearer"},
        "expires_in": {"type": "integer", "minimum": 1},
        "scope": {"type": "string"},
        "jti": {"type": "string"},
    },
}


@router.post(
    "/v1/token/exchange",
    summary="RFC 8693 token exchange: a user token for a narrow, long-lived one",
    description=(
        "Caller: a service token with scope entitlements:exchange. Form or JSON body:"
        " grant_type, subject_token, subject_token_type, audience, scope, resource (repeatable),"
        " expires_in (seconds or '3d')."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                # A form's other fields are ignored; a JSON body's are refused.
                "application/x-www-form-urlencoded": {"schema": _EXCHANGE_FORM},
                "application/json": {"schema": {**_EXCHANGE_FORM, "additionalProperties": False}},
            },
        }
    },
    responses=answers(
        {
            200: {
                **json_response(_ISSUED, "the exchanged token"),
                "headers": {"Cache-Control": {"required": True, "schema": {"const": "no-store"}}},
            }
        },
        AUTH,
        BODY,
        STORE,
        described={
            401: "the caller's token, or the subject_token, does not verify",
            403: "the caller's token lacks the scope entitlements:exchange",
        },
    ),
)
async def exchange(
    request: Request,
    actor: Annotated[VerifiedToken, Depends(require_scope(SCOPE_EXCHANGE))],
) -> Response:
    ent = request.state.ent
    params = await _exchange_params(request, ent.settings.max_body_bytes)
    if params.get("grant_type") != [GRANT_TYPE_EXCHANGE]:
        raise InvalidInputError(FieldError("grant_type", f"must be {GRANT_TYPE_EXCHANGE}"))
    if params.get("subject_token_type", [ACCESS_TOKEN_TYPE]) != [ACCESS_TOKEN_TYPE]:
        raise InvalidInputError(FieldError("subject_token_type", f"must be {ACCESS_TOKEN_TYPE}"))
    subject_tokens = params.get("subject_token", [])
    audiences = params.get("audience", [])
    if len(subject_tokens) != 1:
        raise InvalidInputError(FieldError("subject_token", "exactly one is required"))
    if len(audiences) != 1:
        raise InvalidInputError(FieldError("audience", "exactly one audience is required"))
    try:
        user = await ent.auth.access.averify(subject_tokens[0])
    except InvalidTokenError as exc:
        raise UnauthenticatedError(f"subject_token rejected: {exc.code}", exc.code) from exc
    try:
        lifetime = parse_duration(params.get("expires_in", ["1h"])[0])
    except ValueError as exc:
        raise InvalidInputError(FieldError("expires_in", str(exc))) from None
    issued = await ent.tokens.exchange(
        user,
        actor,
        audience=audiences[0],
        scopes=" ".join(params.get("scope", [])).split(),
        resources=params.get("resource", []),
        lifetime=lifetime,
    )
    return Response(
        orjson.dumps(
            {
                "access_token": issued.token,
                "issued_token_type": JWT_TOKEN_TYPE,
                "token_type": "Bearer",
                "expires_in": issued.expires_in,
                "scope": issued.scope,
                "jti": issued.jti,
            }
        ),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def _exchange_params(request: Request, limit: int) -> dict[str, list[str]]:
    """RFC 8693 uses a form body; a JSON object with the same names is accepted too."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        body = json_object(
            await read_json(request, limit),
            frozenset(
                {
                    "grant_type",
                    "subject_token",
                    "subject_token_type",
                    "audience",
                    "scope",
                    "resource",
                    "expires_in",
                }
            ),
        )
        out: dict[str, list[str]] = {}
        for key, value in body.items():
            values = value if isinstance(value, list) else [value]
            if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values):
                raise InvalidInputError(FieldError(key, "must be a string or a list of strings"))
            out[key] = [str(v) for v in values]
        return out
    raw = await read_body(request, limit)
    try:
        return parse_qs(
            raw.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=bool(raw),
            max_num_fields=200,
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidInputError(
            FieldError("", "the body must be a URL-encoded form or JSON")
        ) from None


@router.post(
    "/v1/token/revoke",
    summary="Revoke an exchanged token by jti (its user, the service holding it, or an admin)",
    openapi_extra=json_body(
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["jti"],
            "properties": {
                "jti": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_JTI_LENGTH,
                    "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
                    "description": "the exchanged token's jti",
                }
            },
        }
    ),
    responses=answers(
        {
            200: json_response(
                {
                    "type": "object",
                    "required": ["revoked", "revision"],
                    "properties": {
                        "revoked": {"type": "string"},
                        "revision": {"type": "integer", "minimum": 0},
                    },
                },
                "revoked (or already revoked)",
            )
        },
        AUTH,
        BODY,
        404,
        STORE,
        described={
            403: "only the token's user, its holder or an admin may revoke it",
            404: "no exchanged token with that jti",
        },
    ),
)
async def revoke(request: Request, token: Annotated[VerifiedToken, Depends(caller)]) -> Response:
    ent = request.state.ent
    body = json_object(await read_json(request, ent.settings.max_body_bytes), frozenset({"jti"}))
    if body.get("jti") is None:
        raise InvalidInputError(FieldError("jti", "is required: the token's jti"))
    jti = parse_text(body["jti"], "jti", MAX_JTI_LENGTH)
    revision = await ent.tokens.revoke(jti, token, admin=token.has_scope(SCOPE_ADMIN))
    return Response(
        orjson.dumps({"revoked": jti, "revision": revision}), media_type="application/json"
    )
