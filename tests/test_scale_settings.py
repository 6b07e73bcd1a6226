"""The settings of issue 16 as an operator writes them: environment variables, JSON
lists, refusals of combinations that cannot keep the staleness bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from entitlements.api.wiring import listen_dsn
from entitlements.cli.main import default_feed_socket
from entitlements.settings import Settings

PRIMARY = "postgresql://app@db-primary:5432/ent"
POOLER = "postgresql://app@pgbouncer:6432/ent"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "DATABASE_POOLER", "DATABASE_LISTEN_URL", "FEED_SOCKET"):
        monkeypatch.delenv(f"ENTITLEMENTS_{name}", raising=False)


def test_replica_urls_are_a_json_list_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "ENTITLEMENTS_DATABASE_REPLICA_URLS",
        '["postgresql://app@r1:5432/ent", "postgresql://app@r2:5432/ent"]',
    )
    monkeypatch.setenv("ENTITLEMENTS_REDIS_CLUSTER", "true")
    monkeypatch.setenv("ENTITLEMENTS_REPLICA_PROBE_INTERVAL", "0.25")
    settings = Settings(database_url=PRIMARY)
    assert settings.database_replica_urls == (
        "postgresql://app@r1:5432/ent",
        "postgresql://app@r2:5432/ent",
    )
    assert settings.redis_cluster is True
    assert settings.replica_probe_interval == 0.25


def test_the_probe_interval_takes_seconds_or_a_duration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTITLEMENTS_REPLICA_PROBE_INTERVAL", "2s")
    assert Settings().replica_probe_interval == 2.0
    monkeypatch.setenv("ENTITLEMENTS_REPLICA_PROBE_INTERVAL", "soon")
    with pytest.raises(ValueError):
        Settings()


def test_a_probe_slower_than_half_the_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="replica_probe_interval"):
        Settings(
            database_url=PRIMARY,
            database_replica_urls=("postgresql://app@r1/ent",),
            staleness=1.0,
            replica_probe_interval=0.6,
        )


def test_a_pooler_needs_a_database_url() -> None:
    with pytest.raises(ValueError, match="database_pooler needs database_url"):
        Settings(database_pooler="pgbouncer")


def test_listen_goes_direct_behind_a_pooler_and_is_polled_without_a_direct_dsn() -> None:
    assert listen_dsn(Settings(database_url=PRIMARY)) == PRIMARY
    behind = Settings(database_url=POOLER, database_pooler="pgbouncer")
    assert listen_dsn(behind) is None  # LISTEN through a transaction pooler would be lost
    direct = behind.model_copy(update={"database_listen_url": PRIMARY})
    assert listen_dsn(direct) == PRIMARY


def test_serve_puts_the_feed_socket_in_a_directory_of_this_user() -> None:
    one = default_feed_socket(Settings(database_url=PRIMARY, port=8000))
    other = default_feed_socket(Settings(database_url=PRIMARY, port=8001))
    assert one != other and one.suffix == ".sock"
    assert len(str(one).encode()) < 100  # a Unix socket path must fit in 108 bytes
    assert one.parent.name.startswith("entitlements-") and isinstance(one, Path)
