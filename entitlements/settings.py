"""Configuration: one frozen object, read from ``ENTITLEMENTS_*`` variables once, at the edge.

Nothing reads the environment after start-up; ``create_app(settings)`` and the
CLI take this object and hand it on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``"15m"``, ``"24h"``, ``"7d"``, ``"500ms"``."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '15m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.fullmatch(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration like '30s', '15m', '24h' or '7d'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


class TrustedIssuer(BaseModel):
    """An external identity provider whose access tokens the service accepts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: str = Field(min_length=1, max_length=512)
    audience: str = Field(min_length=1, max_length=512)
    jwks_url: str | None = None
    jwks_file: str | None = None
    algorithms: tuple[Literal["EdDSA", "ES256", "RS256"], ...] = ("EdDSA",)
    roles_claim: str = "roles"
    typ: str = "at+jwt"
    max_lifetime: float = 86400.0

    _duration = field_validator("max_lifetime", mode="before")(
        classmethod(lambda cls, v: parse_duration(v))
    )

    @model_validator(mode="after")
    def _one_source(self) -> TrustedIssuer:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError(f"issuer {self.issuer!r}: give exactly one of jwks_url and jwks_file")
        return self


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
    cache_size: int = Field(
        default=100_000, ge=0, description="L1 entries per process; 0 turns caching off"
    )
    redis_timeout: float = Field(default=0.05, gt=0, description="per Redis call, seconds")
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=10, ge=1)
    db_timeout: float = Field(default=5.0, gt=0)
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
        mode="before",
    )
    @classmethod
    def _durations(cls, value: Any) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("pool_min_size must not exceed pool_max_size")
        if self.issuer in {t.issuer for t in self.trusted_issuers}:
            raise ValueError("a trusted issuer cannot share the service's own issuer name")
        return self
