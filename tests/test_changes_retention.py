"""The change log is pruned after its retention; a reader from before the floor is told
"everything changed" (and drops what it cached), never silently handed a gap."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from support import Api, eventually, running, settings_for

from entitlements.domain.model import Change, grant_from_mapping
from entitlements.settings import Settings
from entitlements.store.follower import ChangeFollower
from entitlements.store.postgres import MAX_CHANGE_KEYS, PostgresStore, bump_revision

DAY = 86400.0


@pytest.fixture(autouse=True)
async def empty_log(clean: PostgresStore) -> None:
    """Start from an empty log (``clean`` leaves one "everything changed" entry)."""
    await clean.pool.execute("TRUNCATE changes")


async def write(store: PostgresStore, n: int) -> int:
    """n grant writes, each its own revision; returns the last."""
    revision = 0
    for i in range(n):
        result = await store.put_grant(
            grant_from_mapping(
                {
                    "id": f"g{i}",
                    "subject": "*",
                    "resource": f"track:t{i}",
                    "actions": ["stream"],
                    "territories": ["*"],
                }
            )
        )
        revision = result.revision
    return revision


async def age(store: PostgresStore, through: int, days: float) -> None:
    """Make the entries up to ``through`` look ``days`` old."""
    await store.pool.execute(
        "UPDATE changes SET created_at = now() - make_interval(secs => $2) WHERE revision <= $1",
        through,
        days * DAY,
    )


async def log(store: PostgresStore) -> list[int]:
    return [r[0] for r in await store.pool.fetch("SELECT revision FROM changes ORDER BY revision")]


async def floor(store: PostgresStore) -> int:
    return int(await store.pool.fetchval("SELECT changes_floor FROM ent_revision"))


async def test_only_entries_older_than_the_retention_go_and_the_floor_follows(
    clean: PostgresStore,
) -> None:
    store = clean
    last = await write(store, 5)
    first = last - 4
    await age(store, first + 2, days=20)  # three old revisions, two recent

    assert await store.prune_changes(14 * DAY) == 3
    assert await log(store) == [first + 3, first + 4]
    assert await floor(store) == first + 2
    assert await store.prune_changes(14 * DAY) == 0  # nothing more is old

    # From before the floor: "everything changed" first, then what the log still has.
    page = await store.changes_since(0)
    assert page.changes[0] == Change(first + 2, "all", "*")
    assert [c.revision for c in page.changes[1:]] == [first + 3, first + 4]
    assert page.reached == last and not page.more
    # From the floor on: the log as it is.
    page = await store.changes_since(first + 2)
    assert [c.kind for c in page.changes] == ["resource", "resource"]


async def test_pruning_goes_page_by_page_and_never_splits_a_revision(
    clean: PostgresStore,
) -> None:
    store = clean
    size = MAX_CHANGE_KEYS * 6 // 10  # three revisions of 6,000 keys; a page holds 10,001
    revisions = []
    for r in range(3):
        async with store.pool.acquire() as conn, conn.transaction():
            keys = [("resource", f"track:r{r}k{k}") for k in range(size)]
            revisions.append(await bump_revision(conn, keys))
    await age(store, revisions[1], days=20)  # the last revision is recent

    removed = await store.prune_changes(14 * DAY, batch=MAX_CHANGE_KEYS + 1)
    assert removed == 2 * size
    assert set(await log(store)) == {revisions[2]}
    assert len(await log(store)) == size  # the recent revision is whole
    assert await floor(store) == revisions[1]


async def test_a_page_smaller_than_a_revision_is_refused(clean: PostgresStore) -> None:
    with pytest.raises(ValueError, match="batch"):
        await clean.prune_changes(DAY, batch=MAX_CHANGE_KEYS)


async def test_a_follower_from_before_the_floor_distrusts_everything_it_had(
    clean: PostgresStore, pg_dsn: str
) -> None:
    store = clean
    last = await write(store, 3)
    await age(store, last - 1, days=20)
    await store.prune_changes(14 * DAY)

    seen: list[Change] = []

    async def listener(changes: Any, revision: int) -> None:
        seen.extend(changes)

    follower = ChangeFollower(store, pg_dsn)
    follower.add_listener(listener)
    follower.revision = 0  # e.g. a worker whose replay window starts before the floor
    assert await follower.catch_up() == last
    assert seen[0] == Change(last - 1, "all", "*")
    assert [c.revision for c in seen[1:]] == [last]


async def test_the_feed_tells_a_reader_from_before_the_floor_everything_changed(
    api: Api,
) -> None:
    store = api.state.store
    last = await write(store, 3)
    await age(store, last - 1, days=20)
    await store.prune_changes(14 * DAY)
    reader = api.token("svc", scopes=("entitlements:check:any",))

    body = await _feed(api, reader, since=0)
    assert body["changes"][0] == {"revision": last - 1, "kind": "all", "key": "*"}
    assert [c["revision"] for c in body["changes"][1:]] == [last]
    assert body["revision"] == last and body["more"] is False

    # A page of one: the "everything changed" entry does not count against it, and the
    # reader moves on (no loop at the floor).
    body = await _feed(api, reader, since=0, limit=1)
    assert [c["kind"] for c in body["changes"]] == ["all", "resource"]
    assert body["revision"] == last
    body = await _feed(api, reader, since=body["revision"])
    assert body["revision"] == last and body["changes"] == [] and body["more"] is False


async def test_a_revision_larger_than_a_page_comes_whole_and_the_reader_moves_on(
    api: Api,
) -> None:
    """A bulk import records up to 10,000 keys in one revision; a reader asking for
    pages of 1,000 (the SDK's default) must get past it, not be handed its first
    1,000 entries again and again."""
    store = api.state.store
    async with store.pool.acquire() as conn, conn.transaction():
        big = await bump_revision(conn, [("resource", f"track:k{k:02d}") for k in range(25)])
    after = await write(store, 1)
    reader = api.token("svc", scopes=("entitlements:check:any",))

    body = await _feed(api, reader, since=big - 1, limit=10)
    assert [c["revision"] for c in body["changes"]] == [big] * 25  # all of it, in one page
    assert body["revision"] == big and body["more"] is True
    body = await _feed(api, reader, since=body["revision"], limit=10)
    assert [c["revision"] for c in body["changes"]] == [after]
    assert body["revision"] == after and body["more"] is False


async def _feed(api: Api, token: str, **params: Any) -> dict[str, Any]:
    response = await api.client.get(
        "/v1/changes", params=params, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_the_service_prunes_the_log_when_it_starts(clean: PostgresStore, pg_dsn: str) -> None:
    store = clean
    last = await write(store, 4)
    await age(store, last - 2, days=20)
    async with running(settings_for(pg_dsn, changes_retention="14d")):

        async def pruned() -> bool:
            return await log(store) == [last - 1, last]

        assert await eventually(pruned, timeout=10)
    assert await floor(store) == last - 2


async def test_retention_0_keeps_the_log_forever(clean: PostgresStore, pg_dsn: str) -> None:
    store = clean
    last = await write(store, 2)
    await age(store, last, days=400)
    before = await floor(store)
    async with running(settings_for(pg_dsn, changes_retention="0")) as (_, state):
        assert state.settings.changes_retention == 0
        await state.follower.catch_up()
    assert await log(store) == [last - 1, last]
    assert await floor(store) == before < last - 1


def as_written(**values: Any) -> Settings:
    """Settings from values as a user writes them: durations are text ("1d")."""
    return Settings(**values)


def test_a_retention_shorter_than_an_exchanged_token_lives_is_refused() -> None:
    with pytest.raises(ValidationError, match="changes_retention"):
        as_written(changes_retention="1d", exchange_max_lifetime="7d")
    assert as_written(changes_retention="1d", exchange_max_lifetime="12h").changes_retention == DAY
