"""The demo catalogue says what the demo's curl lines promise."""

from __future__ import annotations

from datetime import UTC, datetime

from support import Api

from entitlements.cli.demo import load_catalogue

# The instant the catalogue is loaded at, and every check is asked at: the demo's
# windows are relative to its start ("a deal that starts next month"), so the
# checks must not read the calendar.
NOW = datetime(2026, 11, 24, tzinfo=UTC)
AT = NOW.isoformat().replace("+00:00", "Z")


async def test_demo_catalogue_answers_as_advertised(api: Api) -> None:
    await load_catalogue(api.state.store, now=NOW)
    await api.state.follower.catch_up()
    alice = api.token("alice", roles=("plan:premium",))
    bob = api.token("bob", roles=("plan:free",))

    async def reason(token: str, resource: str, territory: str) -> str:
        d = await api.check(token, resource=resource, action="stream", territory=territory, at=AT)
        return str(d["reason"])

    assert await reason(alice, "track:USRC17607839", "JP") == "granted"
    assert await reason(alice, "track:GBUM71029606", "DE") == "territory"
    assert await reason(alice, "track:USRC17607840", "GB") == "denied"
    future = await api.check(
        alice, resource="track:USRC12600001", action="stream", territory="GB", at=AT
    )
    assert future["reason"] == "not_yet_valid" and future["valid_until"] is not None
    assert await reason(bob, "track:USRC17607839", "GB") == "granted"
    assert await reason(bob, "track:USRC17607839", "JP") == "territory"
    # after the acme premium deal is revoked, only the indigo compilation deal remains
    r = await api.client.delete("/v1/grants/deal-acme-premium", headers=api.admin)
    assert r.status_code == 200
    assert await reason(alice, "track:USRC17607839", "FR") == "territory"
    assert await reason(alice, "track:USRC17607839", "JP") == "granted"
