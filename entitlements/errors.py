"""The errors of the entitlements service.

One root, branched by cause, so an adapter can map a whole branch at once::

    EntitlementsError
    ├── InputError                  the caller's mistake
    │   ├── InvalidInputError       one or more fields are wrong        → 422
    │   ├── NotFoundError           no such grant, resource or import   → 404
    │   ├── PayloadTooLargeError    a body or a line over its limit     → 413
    │   └── UploadStalledError      the body stopped arriving (no data
    │                               for the upload stall bound)         → 408
    ├── AccessError                 who is calling, and may they
    │   ├── UnauthenticatedError    no token, or one that fails         → 401
    │   └── PermissionDeniedError   a valid token lacking the right     → 403
    ├── BusyError                   other work holds what this needs past
    │                               the wait (another import holds the
    │                               import lock); nothing changed       → 409 + Retry-After
    └── BackendError                a store we depend on failed
        ├── StoreUnavailableError   Postgres cannot answer              → 503
        └── EmbeddedPostgresError   the embedded server would not start (CLI, exit 1;
                                    defined in entitlements.store.embedded)

The HTTP mapping lives in one place, ``entitlements.api.problems``; the domain and
the service raise these and never know about HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class EntitlementsError(Exception):
    """Root of every error this package raises on purpose."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One reason a piece of input was refused.

    ``field`` is a dotted path into the input (``territories.2``); ``line`` is the
    1-based line of an import file, when the input came from one.
    """

    field: str
    message: str
    line: int | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"field": self.field, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
        return out


class InputError(EntitlementsError):
    """The caller sent something we cannot accept."""


class InvalidInputError(InputError):
    """Validation failed; ``errors`` says where and why, one entry per problem."""

    def __init__(self, errors: Sequence[FieldError] | FieldError) -> None:
        self.errors: tuple[FieldError, ...] = (
            (errors,) if isinstance(errors, FieldError) else tuple(errors)
        )
        first = self.errors[0] if self.errors else FieldError("", "invalid input")
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        super().__init__(f"{first.field}: {first.message}{more}")


class NotFoundError(InputError):
    """The named grant, resource or import does not exist."""


class PayloadTooLargeError(InputError):
    """A request body or an import line is over its configured limit."""


class UploadStalledError(InputError):
    """The request body stopped arriving: no data for longer than the stall bound."""


class AccessError(EntitlementsError):
    """Authentication or authorization of the caller failed."""


class UnauthenticatedError(AccessError):
    """No bearer token, or a token that does not verify; ``code`` is the verifier's reason."""

    def __init__(self, message: str, code: str = "missing") -> None:
        super().__init__(message)
        self.code = code


class PermissionDeniedError(AccessError):
    """The token is valid but does not allow this call."""


class BusyError(EntitlementsError):
    """Other work holds what this needs for longer than we wait; ``retry_after`` is a
    hint, in seconds, for when to try again. Nothing was changed."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackendError(EntitlementsError):
    """A backing store failed in a way the caller cannot fix."""


class StoreUnavailableError(BackendError):
    """Postgres is unreachable or failing; the answer would be a guess."""

    def __init__(
        self, message: str = "the rights store is unavailable", retry_after: int = 2
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
