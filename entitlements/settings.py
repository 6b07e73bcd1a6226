"""Configuration: one frozen object, read from ``ENTITLEMENTS_*`` variables once, at the edge.

Nothing reads the environment after start-up; ``create_app(settings)`` and the
CLI take this object and hand it on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from entitlements_client import parse_duration
from entitlements_client.issuers import check_namespaces, resolve_subject_prefix

_ORIGIN: Final = re.compile(
    r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
)
"""An exact browser origin (issue 15: CORS, the SDK's cookie mode)."""

EntitlementsScope = Literal[
    "entitlements:check",
    "entitlements:check:any",
    "entitlements:admin",
    "entitlements:import",
    "entitlements:exchange",
    "entitlements:*",
]


class TrustedIssuer(BaseModel):
    """An external identity provider whose access tokens the service accepts.

    ``subject_prefix``: its users are ``subject_prefix + sub`` (``sub`` is unique
    only within its issuer); unset, the issuer followed by ``|``; ``""`` shares the
    service's own bare namespace. ``allowed_scopes``: the only ``entitlements:*``
    scopes honoured from its tokens (``entitlements:*``: all of them).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: str = Field(min_length=1, max_length=512)
    audience: str = Field(min_length=1, max_length=512)
    jwks_url: str | None = None
    jwks_file: str | None = None
    algorithms: tuple[Literal["EdDSA", "ES256", "RS256"], ...] = ("EdDSA",)
    roles_claim: str = "roles"
    typ: str | None = "at+jwt"
    max_lifetime: float = 86400.0
    subject_prefix: str | None = None
    allowed_scopes: tuple[EntitlementsScope, ...] = ("entitlements:check",)

    _duration = field_validator("max_lifetime", mode="before")(
        classmethod(lambda cls, v: parse_duration(v))
    )

    @field_validator("subject_prefix")
    @classmethod
    def _prefix_given(cls, value: str | None) -> str:
        # Only an explicit null reaches here (defaults are not validated).
        if value is None:
            raise ValueError(
                "must be a string: omit it for the default (the issuer followed by '|'),"
                ' or "" to share the service\'s own namespace'
            )
        return value

    @model_validator(mode="after")
    def _one_source(self) -> TrustedIssuer:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError(f"issuer {self.issuer!r}: give exactly one of jwks_url and jwks_file")
        resolve_subject_prefix(self.issuer, self.subject_prefix)  # fail at start, not per token
        return self

    @property
    def effective_prefix(self) -> str:
        """The user ids of this issuer's tokens start with this."""
        return resolve_subject_prefix(self.issuer, self.subject_prefix)

    @property
    def prefix_is_default(self) -> bool:
        """Whether ``subject_prefix`` was left out (older configurations: see the warning)."""
        return "subject_prefix" not in self.model_fields_set


class Settings(BaseSettings):
    """Everything the service can be told, with the defaults a first run needs."""

    model_config = SettingsConfigDict(env_prefix="ENTITLEMENTS_", frozen=True, extra="ignore")

    database_url: str | None = Field(
        default=None, description="Postgres DSN; unset runs an embedded Postgres in data_dir"
    )
    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("entitlements")),
        description="where the embedded Postgres keeps its files",
    )
    redis_url: str | None = Field(default=None, description="Redis/Valkey URL for the L2 cache")
    issuer: str = Field(default="entitlements", min_length=1, max_length=512)
    audience: str = Field(default="entitlements", min_length=1, max_length=512)
    trusted_issuers: tuple[TrustedIssuer, ...] = ()
    signing_alg: Literal["EdDSA", "ES256"] = "EdDSA"
    token_max_lifetime: float = Field(default=86400.0, description="cap on our own access tokens")
    exchange_max_lifetime: float = Field(default=7 * 86400.0)
    staleness: float = Field(
        default=5.0, description="how stale a check without min_revision may be"
    )
    changes_retention: float = Field(
        default=14 * 86400.0,
        description="how long the change log keeps an entry; 0 keeps them forever",
    )
    cache_size: int = Field(
        default=100_000, ge=0, description="L1 entries per process; 0 turns caching off"
    )
    redis_prefix: str = Field(default="ent:", max_length=64, description="key prefix in Redis")
    redis_timeout: float = Field(default=0.05, gt=0, description="per Redis call, seconds")
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=10, ge=1)
    db_timeout: float = Field(default=5.0, gt=0)
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="a connection must deliver a complete request header within this long of"
        " opening or of its previous response, else it is closed",
    )
    keepalive_timeout: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="an idle keep-alive connection is closed after this long (whole seconds)",
    )
    upload_stall_timeout: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="the longest a request body may stop arriving before the request is"
        " refused with 408 (an import is then rolled back)",
    )
    import_lock_wait: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="how long an import waits for another one to finish before it is"
        " refused with 409 and Retry-After",
    )
    # --- DDEX ERN deal feeds (issue 13) ---
    ddex_mapping: Path | None = Field(
        default=None,
        description="how DDEX deals become grants: a TOML or JSON mapping file (README, 'DDEX"
        " ERN deal feeds'); unset: the defaults",
    )
    # --- browsers, the decision log and audit (issue 15) ---
    cors_credentials: bool = Field(
        default=False,
        description="CORS: let browsers send cookies to the listed origins' requests"
        " (Access-Control-Allow-Credentials); needs exact origins",
    )
    cors_origins: tuple[str, ...] = Field(
        default=(),
        max_length=100,
        description="CORS: the exact origins browsers may call from, a JSON list such as"
        ' ["https://app.example.com"]; empty: no CORS headers (browsers refuse cross-origin)',
    )
    decision_log: str = Field(
        default="off",
        min_length=1,
        max_length=4096,
        description="where each decision is written as a JSON line: off, stdout, or a file"
        " path (appended to)",
    )
    decision_log_queue: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="decisions waiting to be written at most; beyond it they are dropped and"
        " counted (entitlements_decision_log_dropped_total)",
    )
    decision_log_sample_allows: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="the share of allows written (denies are always written)",
    )
    # --- past one machine: a pooler, read replicas, one feed per host, Redis Cluster (issue 16) ---
    database_listen_url: str | None = Field(
        default=None,
        description="a direct Postgres DSN for LISTEN when database_url is a pooler; unset with"
        " a pooler: the change feed is polled (every staleness/2 at most)",
    )
    database_pooler: Literal["none", "pgbouncer"] = Field(
        default="none",
        description="what database_url points at: 'pgbouncer' (transaction pooling: no named"
        " prepared statements, LISTEN on database_listen_url) or 'none' (Postgres itself)",
    )
    database_replica_urls: tuple[str, ...] = Field(
        default=(),
        max_length=16,
        description="JSON list of streaming-replica DSNs that checks and listings may read",
    )
    feed_share: bool = Field(
        default=True,
        description="'entitlements serve --workers N>1' shares one change-feed follower among"
        " its workers (false: each worker LISTENs and polls on its own)",
    )
    feed_socket: Path | None = Field(
        default=None,
        description="a Unix socket through which the workers of one host share one change-feed"
        " follower; unset: 'entitlements serve --workers N>1' picks a private one",
    )
    redis_cluster: bool = Field(
        default=False, description="redis_url is a seed node of a Redis/Valkey Cluster"
    )
    replica_probe_interval: float = Field(
        default=0.5, gt=0, le=60, description="how often each replica's applied revision is read"
    )
    # --- gateway check and AuthZEN (issue 14) ---
    authzen_pdp: str | None = Field(
        default=None,
        max_length=512,
        description="the PDP identifier (base URL) /.well-known/authzen-configuration"
        " publishes; unset: the URL the request came to",
    )
    gateway_conventions: str | None = Field(
        default=None,
        max_length=64,
        description="the proxy conventions /v1/gateway/check reads (envoy, nginx, traefik;"
        " comma-separated); unset: all three",
    )
    gateway_routes: str | None = Field(
        default=None,
        description="the gateway's route table: JSON text, or the path of a .json or .toml"
        " file (docs/gateway.md); unset: every gateway request is refused",
    )
    gateway_territory_header: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z0-9-]+$",
        description="the request header holding the client's country (e.g. CF-IPCountry)",
    )
    gateway_trusted_proxies: str | None = Field(
        default=None,
        description="who may call /v1/gateway/check: addresses, CIDRs or 'unix'"
        " (comma-separated, or a JSON list); unset: nobody",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator(
        "token_max_lifetime",
        "exchange_max_lifetime",
        "staleness",
        "db_timeout",
        "redis_timeout",
        "header_timeout",
        "keepalive_timeout",
        "upload_stall_timeout",
        "import_lock_wait",
        mode="before",
    )
    @classmethod
    def _durations(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("replica_probe_interval", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> float:
        # Sub-second: plain seconds ("0.5") as well as durations ("1s").
        try:
            return float(value)
        except (TypeError, ValueError):
            return parse_duration(value)

    @field_validator("changes_retention", mode="before")
    @classmethod
    def _retention(cls, value: Any) -> float:
        if value in (0, "0", "off", "never"):
            return 0.0
        return parse_duration(value)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: give scheme://host[:port], nothing after"
                    " (no path, no trailing slash), e.g. https://app.example.com"
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.cors_credentials and "*" in self.cors_origins:
            raise ValueError(
                'cors_origins may not be "*" when cors_credentials is on: a wildcard with'
                " credentials would let any site act with a user's cookie; list the exact"
                " origins"
            )
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("pool_min_size must not exceed pool_max_size")
        if 0 < self.changes_retention < self.exchange_max_lifetime:
            # A feed reader that missed pruned entries is told "everything changed",
            # which drops its cached answers but cannot name the tokens revoked in the
            # gap: those must have expired by then.
            raise ValueError(
                "changes_retention must be 0 (keep forever) or at least"
                " exchange_max_lifetime, so a revocation outlives the token it revokes"
            )
        if self.database_pooler != "none" and not self.database_url:
            raise ValueError("database_pooler needs database_url (the pooler's DSN)")
        if self.database_replica_urls and self.replica_probe_interval * 2 > self.staleness:
            raise ValueError(
                "replica_probe_interval must be at most half of staleness: a replica is read"
                " only while it is known to be within the bound"
            )
        if self.issuer in {t.issuer for t in self.trusted_issuers}:
            raise ValueError("a trusted issuer cannot share the service's own issuer name")
        check_namespaces(t.effective_prefix for t in self.trusted_issuers)
        return self
