"""Reading the service's answer to a check or a batch: decisions, or typed errors.

Fail closed: an answer that cannot be read is :class:`UnavailableError`, never
a guess, and never an allow the service did not give.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

import httpx
import orjson

from ._coalescer import Outcome
from ._errors import (
    INVALID_TOKEN_CODES,
    ForbiddenError,
    InvalidRequestError,
    TokenRejectedError,
    UnavailableError,
)
from ._models import Decision
from ._questions import Item

__all__ = ["read"]

_BATCH_FIELD_RE: Final = re.compile(r"checks\.([0-9]+)(?:\.|$)")
_REQUEST_STATUSES: Final = frozenset({400, 404, 409, 413, 422})


def read(
    response: httpx.Response, items: Sequence[Item], group: str | None
) -> tuple[list[Outcome], list[int]]:
    """Outcomes from a final response, and which items to resend (a batch refused for
    another item's bad field). ``group`` None: asked with the SDK's service token."""
    n = len(items)
    status = response.status_code
    request = response.request
    if status == 200:
        try:
            body = orjson.loads(response.content)
            if n == 1:
                return [Decision.from_json(body)], []
            results = body.get("results") if isinstance(body, dict) else None
            if not isinstance(results, list) or len(results) != n:
                raise ValueError("batch answer does not match the request")
            return [Decision.from_json(r) for r in results], []
        except ValueError:
            # orjson.JSONDecodeError is a ValueError. Fail closed, never guess.
            unreadable = UnavailableError(
                "the entitlements service sent an unreadable answer",
                request=request,
                response=response,
            )
            return [unreadable] * n, []
    detail, errors = _problem_detail(response)
    if status == 401:
        if group is None:
            # Our own credential was refused, not the user's: not their fault, no 401.
            failure: BaseException = UnavailableError(
                "the entitlements service refused the SDK's service token",
                request=request,
                response=response,
            )
        else:
            code = _token_error(response)
            failure = TokenRejectedError(
                code if code in INVALID_TOKEN_CODES else "rejected_by_service",
                "the entitlements service rejected the token",
                request=request,
                response=response,
            )
        return [failure] * n, []
    if status == 403:
        message = detail or "forbidden"
        return [ForbiddenError(message, request=request, response=response)] * n, []
    if status in _REQUEST_STATUSES:
        message = detail or f"the entitlements service refused the request ({status})"
        if n > 1 and status == 422 and errors:
            bad: dict[int, str] = {}
            for e in errors:
                match = _BATCH_FIELD_RE.match(str(e.get("field", "")))
                if match is None or int(match.group(1)) >= n:
                    bad.clear()
                    break
                bad.setdefault(int(match.group(1)), f"{e.get('field')}: {e.get('message')}")
            if bad and len(bad) < n:
                outcomes: list[Outcome] = [
                    InvalidRequestError(bad[i], request=request, response=response)
                    if i in bad
                    else UnavailableError("not answered")
                    for i in range(n)
                ]
                return outcomes, [i for i in range(n) if i not in bad]
        return [InvalidRequestError(message, request=request, response=response)] * n, []
    return [
        UnavailableError(
            f"the entitlements service answered {status}", request=request, response=response
        )
    ] * n, []


def _token_error(response: httpx.Response) -> str:
    """The verifier's reason from a 401 problem body (``token_error``), or ``""``."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return ""
    code = body.get("token_error") if isinstance(body, dict) else None
    return code if isinstance(code, str) else ""


def _problem_detail(response: httpx.Response) -> tuple[str, list[dict[str, Any]]]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return "", []
    if not isinstance(body, dict):
        return "", []
    detail = body.get("detail") or body.get("title") or ""
    errors = body.get("errors")
    found = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
    return str(detail)[:300], found
