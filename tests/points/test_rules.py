"""Points rules through the API: validation, purchase points (rounding, tier, exclusions, bonus, store, cap)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from models.checkout.purchases import Purchase
from models.kernel import clock
from models.kernel.config_cache import config_change
from models.ledger.books import PointsEntry
from models.points.lots import PointsLot
from models.tenancy.program import LoyaltyProgram
from models.tiers.tables import Tier
from tests.helpers import add_staff, add_store, error_of
from tests.points.helpers import (
    assert_lots_agree,
    buy,
    member_points,
    new_member,
    pin,
    put_rules,
    timeless_owner,
)

DEFAULTS = {
    "earn": {"points": 1, "per_fen": 1000},
    "excluded_skus": [],
    "excluded_categories": [],
    "bonus_items": [],
    "store_overrides": [],
    "daily_cap": None,
    "activities": [],
    "expiry": "rolling_year",
    "reminder_days": [30, 7],
    "cash": {"points": 10, "fen": 100, "max_order_permille": 500},
}


@pytest.fixture
async def admin(app, demo, client):
    return await timeless_owner(app, demo)


async def test_rules_default_and_bad_rules_are_refused_with_their_field(client, admin, demo):
    response = await client.get("/api/loyalty/points-rules", headers=admin)
    assert response.status_code == 200 and response.json() == DEFAULTS
    activity = {"code": "profile", "name": "Complete profile", "points": 50}
    for rules, field in (
        ({"earn": {"points": 0, "per_fen": 1000}}, "earn.points"),
        ({"earn": {"points": 1, "per_fen": -1000}}, "earn.per_fen"),
        ({"cash": {"points": 0}}, "cash.points"),
        ({"cash": {"fen": 0}}, "cash.fen"),
        ({"cash": {"max_order_permille": 0}}, "cash.max_order_permille"),
        ({"store_overrides": [{"store_id": 1, "points": 1, "per_fen": 0}]}, "store_overrides.0.per_fen"),
        ({"bonus_items": [{"sku": "X", "points": -100}]}, "bonus_items.0.points"),
        ({"daily_cap": 0}, "daily_cap"),
        ({"expiry": "monthly"}, "expiry"),
        ({"double_points_days": ["friday"]}, "double_points_days"),
        ({"activities": [{**activity, "limit": "weekly"}]}, "activities.0.limit"),
        ({"activities": [{**activity, "points": -5}]}, "activities.0.points"),
        ({"activities": [activity, {**activity, "name": "Again"}]}, "activities"),
        ({"reminder_days": [7, 7]}, "reminder_days"),
        ({"reminder_days": [0]}, "reminder_days"),
    ):
        response = await client.put("/api/loyalty/points-rules", json=rules, headers=admin)
        assert response.status_code == 422, (rules, response.text)
        assert error_of(response)["field"] == field, rules
    manager = await add_staff(client, admin, username="mgr", role="store_manager", store_id=demo.store.id)
    response = await client.put("/api/loyalty/points-rules", json={"daily_cap": 10}, headers=manager)
    assert response.status_code == 403
    assert await LoyaltyProgram.filter(merchant_id=demo.merchant.id).count() == 0
    response = await client.get("/api/loyalty/points-rules", headers=manager)
    assert response.status_code == 200 and response.json() == DEFAULTS


async def test_purchase_points_round_down_skip_exclusions_add_bonus_and_follow_the_store(client, admin):
    branch = await add_store(client, admin, code="S002")
    saved = await put_rules(
        client,
        admin,
        excluded_skus=["GIFTCARD"],
        excluded_categories=["tobacco"],
        bonus_items=[{"sku": "BEANS", "points": 100}],
        store_overrides=[{"store_id": branch, "points": 3, "per_fen": 1000}],
    )
    assert saved["store_overrides"] == [{"store_id": branch, "points": 3, "per_fen": 1000}]
    member = await new_member(client, admin)

    first = await buy(client, admin, member, "A-1", 12_999)
    assert (first["points"], first["growth"]) == (12, 129)
    items = [
        {"sku": "CIG", "category": "tobacco", "amount": 5_000, "quantity": 1},
        {"sku": "GIFTCARD", "category": "card", "amount": 3_000, "quantity": 1},
        {"sku": "BEANS", "category": "coffee", "amount": 4_000, "quantity": 2},
        {"sku": "LATTE", "category": "coffee", "amount": 8_000, "quantity": 1},
    ]
    second = await buy(client, admin, member, "A-2", 20_000, items=items)
    assert second["points"] == 12 + 200  # 12,000 fen eligible, two bags of beans
    third = await buy(client, admin, member, "A-3", 10_500, store_id=branch)
    assert third["points"] == 30

    replay = await client.post(
        f"/api/members/{member}/purchases", json={"order_no": "A-1", "amount": 12_999}, headers=admin
    )
    assert replay.status_code == 200 and replay.json()["id"] == first["id"]
    taken = await client.post(
        f"/api/members/{member}/purchases", json={"order_no": "A-1", "amount": 5_000}, headers=admin
    )
    assert taken.status_code == 409 and error_of(taken)["code"] == "purchase.order_no_taken"
    rows = await PointsEntry.filter(member_id=member).order_by("id").values_list("delta", "kind", "idempotency_key")
    purchase_ids = [first["id"], second["id"], third["id"]]
    assert rows == [(p, "earn", f"purchase:{i}") for p, i in zip((12, 212, 30), purchase_ids, strict=True)]
    assert (await member_points(client, admin, member))["balance"] == 254
    assert await assert_lots_agree(member) == 254


async def test_tier_multiplier_applies_to_the_spend_rule_not_the_bonus(client, admin, demo):
    async with config_change(merchant_id=demo.merchant.id):  # as a writer of configuration would
        await Tier.create(
            merchant_id=demo.merchant.id,
            code="normal",
            name="Normal",
            rank=0,
            threshold=0,
            points_multiplier_permille=1500,
        )
    await put_rules(client, admin, bonus_items=[{"sku": "BEANS", "points": 100}])
    member = await new_member(client, admin)
    bought = await buy(
        client, admin, member, "M-1", 10_999, items=[{"sku": "BEANS", "category": "", "amount": 999, "quantity": 1}]
    )
    assert bought["points"] == 15 + 100


async def test_daily_cap_counts_merchant_local_days(client, admin):
    await put_rules(client, admin, daily_cap=50)
    pin(datetime(2025, 5, 1, 1, 0, tzinfo=UTC))  # 09:00 in Shanghai
    try:
        member = await new_member(client, admin)
        assert (await buy(client, admin, member, "C-1", 30_000))["points"] == 30
        assert (await buy(client, admin, member, "C-2", 30_000))["points"] == 20
        assert (await buy(client, admin, member, "C-3", 30_000))["points"] == 0
        pin(datetime(2025, 5, 1, 15, 59, tzinfo=UTC))  # 23:59, same local day
        assert (await buy(client, admin, member, "C-4", 30_000))["points"] == 0
        pin(datetime(2025, 5, 1, 16, 0, tzinfo=UTC))  # local midnight: a new day
        assert (await buy(client, admin, member, "C-5", 90_000))["points"] == 50
        assert await PointsEntry.filter(member_id=member).count() == 3  # no zero-point rows
        assert await assert_lots_agree(member) == 100
    finally:
        clock.set_clock(None)


async def test_bad_purchases_write_nothing(client, admin, demo):
    member = await new_member(client, admin)
    other_store = await add_store(client, admin, code="S009")
    line = {"sku": "X", "category": "c", "amount": 100, "quantity": 1}
    for body, field in (
        ({"order_no": "B-1", "amount": 0}, "amount"),
        ({"order_no": "B-1", "amount": -100}, "amount"),
        ({"order_no": "B-1", "amount": 1.5}, "amount"),
        ({"order_no": "", "amount": 100}, "order_no"),
        ({"order_no": "B-1", "amount": 100, "items": [{**line, "quantity": 0}]}, "items.0.quantity"),
        ({"order_no": "B-1", "amount": 100, "items": [{**line, "amount": -1}]}, "items.0.amount"),
        ({"order_no": "B-1", "amount": 100, "store_id": 999_999}, "store_id"),
        ({"order_no": "B-1", "amount": 100, "occurred_at": "2025-01-01T10:00:00"}, "occurred_at"),
        ({"order_no": "B-1", "amount": 100, "coupon": "X"}, "coupon"),
    ):
        response = await client.post(f"/api/members/{member}/purchases", json=body, headers=admin)
        assert response.status_code == 422, (body, response.text)
        assert error_of(response)["field"] == field, body
    cashier = await add_staff(client, admin, username="cashier9", role="cashier", store_id=demo.store.id)
    mine = await new_member(client, admin, store_id=demo.store.id)
    response = await client.post(
        f"/api/members/{mine}/purchases",
        json={"order_no": "B-2", "amount": 100, "store_id": other_store},
        headers=cashier,
    )
    assert response.status_code == 403
    assert await Purchase.all().count() == 0
    assert await PointsEntry.all().count() == 0
    ok = await client.post(f"/api/members/{mine}/purchases", json={"order_no": "B-3", "amount": 1000}, headers=cashier)
    assert ok.status_code == 201 and ok.json()["store_id"] == demo.store.id and ok.json()["points"] == 1


async def test_activity_limits_once_daily_and_unlimited(client, admin):
    await put_rules(
        client,
        admin,
        activities=[
            {"code": "profile", "name": "Complete profile", "points": 50, "growth": 10, "limit": "once"},
            {"code": "visit", "name": "Store visit", "points": 5, "limit": "daily"},
            {"code": "campaign", "name": "Campaign", "points": 20, "limit": "unlimited"},
        ],
    )
    pin(datetime(2025, 5, 1, 15, 0, tzinfo=UTC))  # 23:00 in Shanghai
    try:
        member = await new_member(client, admin)

        async def award(code: str, key: str | None = None):
            body = {"rule_code": code} if key is None else {"rule_code": code, "idempotency_key": key}
            return await client.post(f"/api/members/{member}/activities", json=body, headers=admin)

        first = await award("profile")
        assert first.status_code == 201 and first.json()["points"] == 50 and first.json()["replayed"] is False
        again = await award("profile")
        assert again.status_code == 200 and again.json()["replayed"] is True
        assert again.json()["entry_id"] == first.json()["entry_id"]
        assert [(await award("visit")).status_code for _ in range(2)] == [201, 200]
        pin(datetime(2025, 5, 1, 16, 0, tzinfo=UTC))  # local midnight
        assert (await award("visit")).status_code == 201
        missing_key = await award("campaign")
        assert missing_key.status_code == 422 and error_of(missing_key)["field"] == "idempotency_key"
        assert [(await award("campaign", k)).status_code for k in ("c1", "c2", "c1")] == [201, 201, 200]
        unknown = await award("nope")
        assert unknown.status_code == 422 and error_of(unknown)["code"] == "activity.unknown_rule"
        kinds = await PointsEntry.filter(member_id=member).order_by("id").values_list("delta", "kind")
        assert kinds == [(50, "activity"), (5, "activity"), (5, "activity"), (20, "activity"), (20, "activity")]
        assert await PointsLot.filter(member_id=member).count() == 5
        assert await assert_lots_agree(member) == 100
        from models.tiers.tables import GrowthEntry

        assert await GrowthEntry.filter(member_id=member).values_list("delta", "kind") == [(10, "activity")]
    finally:
        clock.set_clock(None)


async def test_member_sees_their_points_explained(client, app, admin, demo):
    from tests.cards.helpers import member_headers

    pin(datetime(2025, 3, 10, 4, 0, tzinfo=UTC))
    try:
        member = await new_member(client, admin)
        for index in range(3):
            await buy(client, admin, member, f"E-{index}", 10_000 * (index + 1))
        headers = member_headers(app, member_id=member, merchant_id=demo.merchant.id)
        page = await client.get("/api/mp/me/points", params={"limit": 2}, headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["balance"] == 60
        assert body["expiring_soon"] == {"points": 0, "expires_on": None}
        assert [(i["delta"], i["kind"], i["reason"], i["balance_after"]) for i in body["items"]] == [
            (30, "earn", "Purchase E-2", 60),
            (20, "earn", "Purchase E-1", 30),
        ]
        rest = await client.get(
            "/api/mp/me/points", params={"limit": 2, "before_id": body["next_before_id"]}, headers=headers
        )
        assert [i["reason"] for i in rest.json()["items"]] == ["Purchase E-0"]
        assert rest.json()["next_before_id"] is None
        assert (await client.get("/api/mp/me/points", headers=admin)).status_code == 403
        assert (await client.get(f"/api/members/{member}/points", headers=headers)).status_code == 403
        staff_view = await member_points(client, admin, member, limit=2)
        assert staff_view == body
    finally:
        clock.set_clock(None)
