"""Reading request bodies: a size limit enforced while streaming, and strict JSON."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from entitlements.domain.values import DECODER_MAX_DEPTH, shown, too_deep, too_deep_problem
from entitlements.errors import FieldError, InvalidInputError, PayloadTooLargeError


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int) -> Any:
    """Parse the body as JSON (orjson: UTF-8 only, no NaN or Infinity)."""
    raw = await read_body(request, limit)
    if not raw:
        raise InvalidInputError(FieldError("", "the body must be a JSON object"))
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        deep = too_deep(raw, DECODER_MAX_DEPTH)  # e.g. beyond orjson's own 1,024 levels
        if deep is not None:
            raise InvalidInputError(too_deep_problem(deep)) from None
        raise InvalidInputError(FieldError("", f"the body is not valid JSON: {exc.msg}")) from None


def json_object(value: Any, allowed: frozenset[str]) -> dict[str, Any]:
    """Refuse anything but a JSON object whose keys are all ``allowed``."""
    if not isinstance(value, dict):
        raise InvalidInputError(FieldError("", "the body must be a JSON object"))
    unknown = sorted(k for k in value if k not in allowed)
    if unknown:
        raise InvalidInputError([FieldError(shown(k), "unknown field") for k in unknown])
    return value
