"""A trusted issuer: who it is, which audience it must name, its keys, and its policy.

The policy has two parts that decide what a verified token *means*, not only
whether it is valid:

- **Subject namespace.** ``sub`` is unique only within its issuer (RFC 9068
  §2.2, OIDC Core §2), so the user id of a token is ``subject_prefix + sub``.
  The default prefix is the issuer followed by ``|``: a token of
  ``https://idp.example.com`` with ``sub=bob`` is the user
  ``https://idp.example.com|bob``, matched by grants on
  ``user:https://idp.example.com|bob``. ``""`` deliberately shares the bare
  namespace of the entitlements service's own tokens.
- **Scope allow-list.** Only the ``entitlements:*`` scopes listed in
  ``allowed_scopes`` are honoured from the issuer's tokens (default
  ``entitlements:check``); ``entitlements:*`` itself honours all of them. Scopes
  outside ``entitlements:`` are other services' business and pass unchanged.

The entitlements service's own tokens are configured with the prefix ``""`` and
every scope (:func:`entitlements_client.service_issuer` does that for the SDK).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .jwks import ALGORITHMS, KeySet

__all__ = [
    "ALL_SCOPES",
    "DEFAULT_ALLOWED_SCOPES",
    "MAX_SUBJECT_PREFIX",
    "SCOPE_NAMESPACE",
    "IssuerConfig",
    "check_namespaces",
    "default_subject_prefix",
    "parse_duration",
    "resolve_subject_prefix",
    "service_issuer",
]

SCOPE_NAMESPACE: Final = "entitlements:"
"""Scopes starting with this are the entitlements service's; only they are filtered."""
ALL_SCOPES: Final = "entitlements:*"
"""In ``allowed_scopes``: honour every ``entitlements:*`` scope (the service's own tokens)."""
DEFAULT_ALLOWED_SCOPES: Final = ("entitlements:check",)
MAX_SUBJECT_PREFIX: Final = 128
"""A prefix leaves room for the ``sub`` in a user id (at most 256 characters in all)."""

# The characters of a user id (entitlements.domain.model): a prefix with others would
# make user ids no grant can name.
_PREFIX_RE: Final = re.compile(rf"[A-Za-z0-9._~@+/:=|-]{{0,{MAX_SUBJECT_PREFIX}}}")
_SCOPE_RE: Final = re.compile(r"entitlements:[!#-\[\]-~]+")  # RFC 6749 §3.3 scope-token
_NUMBER: Final = r"[0-9]{1,9}(?:\.[0-9]{1,6})?"
_DURATION_RE: Final = re.compile(rf"(?:{_NUMBER}(?:ms|[smhd]))+|{_NUMBER}")
_DURATION_PART: Final = re.compile(rf"({_NUMBER})(ms|[smhd])")
_DURATION_UNITS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_ISSUER_ITEM_KEYS: Final = frozenset(
    [
        "issuer",
        "audience",
        "jwks_url",
        "jwks_file",
        "algorithms",
        "roles_claim",
        "typ",
        "max_lifetime",
        "allow_insecure_http",
        "subject_prefix",
        "allowed_scopes",
    ]
)


def parse_duration(value: str | float) -> float:
    """Seconds in ``"500ms"``, ``"30s"``, ``"15m"``, ``"24h"``, ``"7d"``, ``"1h30m"``, ``"90"``,
    ``"0.5"`` or a number."""
    if isinstance(value, bool):
        raise ValueError("a duration cannot be a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION_RE.fullmatch(value.strip()):
        text = value.strip()
        parts = _DURATION_PART.findall(text)
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts) if parts else float(text)
    else:
        raise ValueError(f"invalid duration {value!r}; use e.g. '500ms', '30s', '15m', '24h', '7d'")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def default_subject_prefix(issuer: str) -> str:
    """The prefix an issuer gets unless configured otherwise: the issuer followed by ``|``."""
    return issuer + "|"


def resolve_subject_prefix(issuer: str, prefix: str | None) -> str:
    """``prefix``, or the issuer's default when None; :class:`ValueError` if unusable."""
    value = default_subject_prefix(issuer) if prefix is None else prefix
    if isinstance(value, str) and _PREFIX_RE.fullmatch(value):
        return value
    shown = repr(value)[:80]
    rule = (
        f"at most {MAX_SUBJECT_PREFIX} characters of letters, digits and ._~@+/:=|-"
        " (the characters of a user id)"
    )
    if prefix is not None:
        raise ValueError(f"subject_prefix {shown} must be {rule}")
    raise ValueError(
        f"issuer {issuer[:80]!r}: its default subject_prefix (the issuer followed by '|')"
        f" would be {shown}, which is not {rule}; set subject_prefix explicitly"
    )


def check_namespaces(prefixes: Iterable[str]) -> None:
    """Refuse subject prefixes that overlap: with ``a|`` and ``a|b|``, the sub ``b|x`` of
    one issuer and the sub ``x`` of the other would be the same user. Equal prefixes
    share a namespace on purpose, as does ``""`` (the service's own, bare namespace)."""
    distinct = sorted({p for p in prefixes if p})
    # In sorted order every string that starts with p follows p directly.
    for shorter, longer in itertools.pairwise(distinct):
        if longer.startswith(shorter):
            raise ValueError(
                f"subject prefixes {shorter!r} and {longer!r} overlap: a user of one issuer"
                " could have the id of a user of the other; choose prefixes that do not"
                " start alike"
            )


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """One trusted issuer: who it is, which audience it must name, its keys and its policy.

    ``algorithms`` may only contain EdDSA, ES256 and RS256. ``roles_claim`` is
    a dotted path into the payload (``realm_access.roles`` for Keycloak).
    ``typ`` lists accepted ``typ`` header values; include ``""`` to accept
    tokens without one. ``max_lifetime`` caps ``exp - iat`` in seconds.

    ``subject_prefix`` is put before ``sub`` to make the user id
    (:attr:`VerifiedToken.subject <entitlements_client.VerifiedToken.subject>`);
    ``None`` (the default) means the issuer followed by ``|``, and the resolved
    prefix is what the attribute holds after construction. ``allowed_scopes``
    lists the ``entitlements:*`` scopes honoured from this issuer's tokens
    (``"entitlements:*"`` for all of them); see the module docstring.
    """

    issuer: str
    audience: str
    keys: KeySet
    algorithms: tuple[str, ...] = ("EdDSA",)
    roles_claim: str = "roles"
    typ: tuple[str, ...] = ("at+jwt",)
    max_lifetime: float = 86_400.0
    subject_prefix: str | None = None
    allowed_scopes: tuple[str, ...] = DEFAULT_ALLOWED_SCOPES

    def __post_init__(self) -> None:
        if not isinstance(self.issuer, str) or not self.issuer:
            raise ValueError("issuer must be a non-empty string")
        if not isinstance(self.audience, str) or not self.audience:
            raise ValueError("audience must be a non-empty string")
        if not isinstance(self.keys, KeySet):
            raise ValueError("keys must be a KeySet")
        algorithms = (
            (self.algorithms,) if isinstance(self.algorithms, str) else tuple(self.algorithms)
        )
        if not algorithms or any(a not in ALGORITHMS for a in algorithms):
            raise ValueError(f"algorithms must be a non-empty subset of {sorted(ALGORITHMS)}")
        typ = (self.typ,) if isinstance(self.typ, str) else tuple(self.typ)
        if not typ or not all(isinstance(t, str) for t in typ):
            raise ValueError("typ must be a non-empty list of strings ('' accepts no typ)")
        if not isinstance(self.roles_claim, str) or not all(self.roles_claim.split(".")):
            raise ValueError("roles_claim must be a dotted path such as 'realm_access.roles'")
        lifetime = self.max_lifetime
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float):
            raise ValueError("max_lifetime must be a number of seconds")
        if not math.isfinite(lifetime) or lifetime <= 0:
            raise ValueError("max_lifetime must be positive")
        object.__setattr__(self, "algorithms", algorithms)
        object.__setattr__(self, "typ", typ)
        object.__setattr__(self, "max_lifetime", float(lifetime))
        object.__setattr__(
            self, "subject_prefix", resolve_subject_prefix(self.issuer, self.subject_prefix)
        )
        object.__setattr__(self, "allowed_scopes", self._checked_scopes())

    def _checked_scopes(self) -> tuple[str, ...]:
        raw = self.allowed_scopes
        scopes = (raw,) if isinstance(raw, str) else raw
        if not isinstance(scopes, list | tuple):
            raise ValueError("allowed_scopes must be a list of scopes")
        for scope in scopes:
            if not isinstance(scope, str) or not _SCOPE_RE.fullmatch(scope):
                raise ValueError(
                    f"allowed_scopes: {str(scope)[:80]!r} is not an entitlements scope (such as"
                    " 'entitlements:admin'); scopes of other services are never filtered"
                )
        return tuple(dict.fromkeys(scopes))

    @property
    def honours_all_scopes(self) -> bool:
        """Whether every ``entitlements:*`` scope of this issuer's tokens counts."""
        return ALL_SCOPES in self.allowed_scopes

    @classmethod
    def from_mapping(cls, item: Mapping[str, Any], **keyset_options: Any) -> IssuerConfig:
        """Build from one ``ENTITLEMENTS_TRUSTED_ISSUERS`` item.

        ``{"issuer", "audience", "jwks_url" | "jwks_file", "algorithms", "roles_claim",
        "typ", "max_lifetime", "subject_prefix", "allowed_scopes"}`` plus optional
        ``"allow_insecure_http"``; ``typ`` may be a string, a list, or null (= no ``typ``
        header); ``max_lifetime`` a number of seconds or a duration such as ``"24h"``;
        ``subject_prefix`` absent or null means the issuer followed by ``|``.
        ``keyset_options`` go to :class:`KeySet` (``min_refetch_interval``…).
        Unknown keys raise :class:`ValueError`, so a typo cannot weaken the policy.
        """
        if not isinstance(item, Mapping):
            raise ValueError("a trusted issuer must be a JSON object")
        unknown = set(item) - _ISSUER_ITEM_KEYS
        if unknown:
            raise ValueError(f"unknown trusted-issuer keys: {sorted(unknown)}")
        url, file = item.get("jwks_url"), item.get("jwks_file")
        if (url is None) == (file is None):
            raise ValueError("a trusted issuer needs exactly one of jwks_url and jwks_file")
        keys = KeySet(
            url=url,
            file=file,
            allow_insecure_http=bool(item.get("allow_insecure_http", False)),
            **keyset_options,
        )
        typ = item.get("typ", "at+jwt")
        return cls(
            issuer=item.get("issuer"),  # type: ignore[arg-type]  # validated in __post_init__
            audience=item.get("audience"),  # type: ignore[arg-type]
            keys=keys,
            algorithms=item.get("algorithms", ("EdDSA",)),
            roles_claim=item.get("roles_claim", "roles"),
            typ=("",) if typ is None else typ,
            max_lifetime=parse_duration(item.get("max_lifetime", 86_400)),
            subject_prefix=item.get("subject_prefix"),
            allowed_scopes=item.get("allowed_scopes", DEFAULT_ALLOWED_SCOPES),
        )


def service_issuer(
    base_url: str, *, issuer: str, audience: str, algorithms: Sequence[str] = ("EdDSA", "ES256")
) -> IssuerConfig:
    """Trust the tokens the entitlements service at ``base_url`` signs itself.

    Its keys come from ``<base_url>/.well-known/jwks.json`` (https, or http on
    loopback); ``issuer``/``audience`` are the service's ``ENTITLEMENTS_ISSUER``
    and ``ENTITLEMENTS_AUDIENCE``. The service's tokens are "ours": their ``sub``
    is the user id as it is (no ``subject_prefix``; the service already put an
    external user's namespace in the ``sub`` of the tokens it exchanged for them)
    and every ``entitlements:*`` scope they carry counts.
    """
    keys = KeySet(url=base_url.rstrip("/") + "/.well-known/jwks.json")
    return IssuerConfig(
        issuer=issuer,
        audience=audience,
        keys=keys,
        algorithms=tuple(algorithms),
        subject_prefix="",
        allowed_scopes=(ALL_SCOPES,),
    )
