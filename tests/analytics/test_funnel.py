"""The conversion funnel through HTTP: members brought by QR scans through the emulator, each a step further, and
the counts the test knows; a store's own cohort; ranges and scope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.analytics.test_analytics import ZONE, get
from tests.cards.helpers import activated_member, followed_and_claimed, put_template, scan
from tests.helpers import add_staff, add_store, other_merchant


async def buy(client, admin, member_id: int, order_no: str) -> None:
    body = {"order_no": order_no, "amount": 3000, "occurred_at": datetime.now(UTC).isoformat(), "items": []}
    response = await client.post(f"/api/members/{member_id}/purchases", json=body, headers=admin)
    assert response.status_code == 201, response.text


async def test_the_funnel_counts_each_step_of_the_scanned_cohort(app, client, admin, demo):
    second = await add_store(client, admin, code="S002")
    card_id = (await put_template(client, admin))["card_id"]
    await scan(client, openid="f1")  # followed only
    await followed_and_claimed(client, admin, card_id=card_id, openid="f2")  # ... and claimed the card
    await activated_member(client, app, admin, card_id=card_id, openid="f3", mobile="13800000003")
    four, _ = await activated_member(client, app, admin, card_id=card_id, openid="f4", mobile="13800000004")
    five, _ = await activated_member(client, app, admin, card_id=card_id, openid="f5", mobile="13800000005")
    await buy(client, admin, four, "F4-1")
    await buy(client, admin, four, "F4-2")
    await buy(client, admin, five, "F5-1")
    await buy(client, admin, five, "F5-2")
    reversed_ = await client.post(f"/api/members/{five}/purchases/F5-2/reverse", headers=admin)
    assert reversed_.status_code == 200, reversed_.text  # a reversed purchase is no step
    await scan(client, openid="f6", store="S002")

    today = datetime.now(UTC).astimezone(ZONE).date()
    params = {"from": (today - timedelta(days=6)).isoformat(), "to": today.isoformat()}
    steps = ("scanned", "followed", "card_claimed", "card_activated", "first_purchase", "second_purchase")
    found = await get(client, admin, "funnel", **params)
    assert [found[s] for s in steps] == [6, 6, 4, 3, 2, 1], found
    mine = await get(client, admin, "funnel", **params, store_id=second)
    assert [mine[s] for s in steps] == [1, 1, 0, 0, 0, 0], mine
    earlier = {"from": (today - timedelta(days=30)).isoformat(), "to": (today - timedelta(days=1)).isoformat()}
    assert (await get(client, admin, "funnel", **earlier))["scanned"] == 0  # their first scans were today

    manager = await add_staff(client, admin, username="mgr-funnel", role="store_manager", store_id=second)
    assert (await get(client, manager, "funnel", **params))["scanned"] == 1  # a store role: its own store
    response = await client.get("/api/analytics/funnel", params={**params, "store_id": demo.store.id}, headers=manager)
    assert response.status_code == 403, response.text
    foreign = await other_merchant()
    response = await client.get("/api/analytics/funnel", params={**params, "store_id": foreign.store.id}, headers=admin)
    assert response.status_code == 404, response.text
    backwards = {"from": today.isoformat(), "to": (today - timedelta(days=1)).isoformat()}
    assert (await client.get("/api/analytics/funnel", params=backwards, headers=admin)).status_code == 422
