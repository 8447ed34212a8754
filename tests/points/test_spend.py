"""Spending points: lots oldest-expiry first, never below zero under concurrency, reversal, purchase reversal, quote."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from models.kernel import clock
from models.ledger.books import PointsAccount, PointsEntry
from models.points.expiry import expire_due_lots
from models.points.lots import PointsLot, earn_points
from tests.helpers import add_staff, error_of
from tests.points.helpers import (
    adjust,
    assert_lots_agree,
    buy,
    member_points,
    new_member,
    open_lots,
    pin,
    put_rules,
    spend,
    timeless_owner,
)


@pytest.fixture
async def admin(app, demo, client):
    return await timeless_owner(app, demo)


T0 = datetime(2025, 3, 10, 4, 0, tzinfo=UTC)


async def test_spend_takes_the_lots_expiring_first_and_never_goes_below_zero(client, admin, demo):
    pin(T0)
    try:
        member = await new_member(client, admin)
        await adjust(client, admin, member, 100, "a")  # rolling year: expires 2026-03-11 local
        await earn_points(
            merchant_id=demo.merchant.id,
            member_id=member,
            points=50,
            reason="promo",
            idempotency_key="b",
            expires_at=T0 + timedelta(days=20),
        )
        await put_rules(client, admin, expiry="never")
        await adjust(client, admin, member, 30, "c")
        assert await open_lots(member) == [(100, 100), (50, 50), (30, 30)]

        response = await spend(client, admin, member, 60, "s1")
        assert response.status_code == 200, response.text
        assert response.json()["balance"] == 120
        assert await open_lots(member) == [(100, 90), (30, 30)]  # the 20-day lot first, then the yearly one

        response = await spend(client, admin, member, 121, "s2")
        assert response.status_code == 409
        assert error_of(response)["code"] == "points.insufficient"
        assert await PointsEntry.filter(member_id=member).count() == 4

        response = await spend(client, admin, member, 120, "s3")
        assert response.status_code == 200, response.text
        assert await open_lots(member) == []
        assert await assert_lots_agree(member) == 0

        replay = await spend(client, admin, member, 120, "s3")
        assert replay.status_code == 200 and replay.json()["replayed"] is True
    finally:
        clock.set_clock(None)


async def test_bad_spends_write_nothing(client, admin):
    member = await new_member(client, admin)
    await adjust(client, admin, member, 10, "a")
    for body, field in (
        ({"points": 0, "reason": "x", "idempotency_key": "k"}, "points"),
        ({"points": -3, "reason": "x", "idempotency_key": "k"}, "points"),
        ({"points": "5", "reason": "x", "idempotency_key": "k"}, "points"),
        ({"points": 5, "reason": "", "idempotency_key": "k"}, "reason"),
        ({"points": 5, "reason": "x"}, "idempotency_key"),
    ):
        response = await client.post(f"/api/members/{member}/points/spend", json=body, headers=admin)
        assert response.status_code == 422, response.text
        assert error_of(response)["field"] == field
    for kind in ("expire", "reverse", "signin"):
        response = await client.post(
            f"/api/members/{member}/points",
            json={"delta": -5, "reason": "forged", "idempotency_key": f"f-{kind}", "kind": kind},
            headers=admin,
        )
        assert response.status_code == 422, response.text
        assert error_of(response)["field"] == "kind"
    assert await PointsEntry.filter(member_id=member).count() == 1
    assert await assert_lots_agree(member) == 10


async def test_100_concurrent_spends_against_10_points_give_exactly_10(client, admin, demo):
    member = await new_member(client, admin, store_id=demo.store.id)
    await adjust(client, admin, member, 4, "a")
    await adjust(client, admin, member, 6, "b")
    cashier = await add_staff(client, admin, username="cashier1", role="cashier", store_id=demo.store.id)
    responses = await asyncio.gather(*(spend(client, cashier, member, 1, f"spend-{i}") for i in range(100)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 10, statuses
    assert statuses.count(409) == 90, statuses
    assert {error_of(r)["code"] for r in responses if r.status_code == 409} == {"points.insufficient"}
    assert await PointsEntry.filter(member_id=member, kind="spend").count() == 10
    assert await assert_lots_agree(member) == 0
    assert await PointsLot.filter(member_id=member, status="spent").count() == 2


async def test_reversal_gives_back_to_the_same_lots_but_never_resurrects_expired_points(client, app, admin, demo):
    pin(T0)
    try:
        member = await new_member(client, admin)
        soon = T0 + timedelta(days=10)
        await earn_points(
            merchant_id=demo.merchant.id,
            member_id=member,
            points=30,
            reason="promo",
            idempotency_key="a",
            expires_at=soon,
        )
        await adjust(client, admin, member, 100, "b")
        debit = (await spend(client, admin, member, 50, "s1")).json()["entry"]["id"]  # 30 from a, 20 from b
        assert await open_lots(member) == [(100, 80)]

        pin(soon + timedelta(hours=1))
        assert await expire_due_lots(now=clock.now()) == 0  # the early lot was spent: nothing left to expire
        body = {"debit_entry_id": debit, "idempotency_key": "r1", "reason": "order refunded"}
        response = await client.post(f"/api/members/{member}/points/reverse", json=body, headers=admin)
        assert response.status_code == 200, response.text
        assert response.json()["entry"]["delta"] == 20  # the 30 from the expired lot stay gone
        assert response.json()["entry"]["kind"] == "reverse"
        assert response.json()["balance"] == 100
        assert await open_lots(member) == [(100, 100)]
        lot_a = await PointsLot.get(member_id=member, amount=30)
        assert (lot_a.status, lot_a.remaining) == ("spent", 0)

        again = await client.post(f"/api/members/{member}/points/reverse", json=body, headers=admin)
        assert again.status_code == 200 and again.json()["replayed"] is True
        other = await client.post(
            f"/api/members/{member}/points/reverse", json={**body, "idempotency_key": "r2"}, headers=admin
        )
        assert other.status_code == 409
        assert error_of(other)["code"] == "points.nothing_to_reverse"
        not_debit = await client.post(
            f"/api/members/{member}/points/reverse",
            json={**body, "debit_entry_id": response.json()["entry"]["id"], "idempotency_key": "r3"},
            headers=admin,
        )
        assert not_debit.status_code == 422 and error_of(not_debit)["field"] == "debit_entry_id"
        missing = await client.post(
            f"/api/members/{member}/points/reverse",
            json={**body, "debit_entry_id": 999999, "idempotency_key": "r4"},
            headers=admin,
        )
        assert (missing.status_code, error_of(missing)["code"]) == (422, "points.debit_not_found")
        cashier = await add_staff(client, admin, username="cashier2", role="cashier", store_id=demo.store.id)
        denied = await client.post(
            f"/api/members/{member}/points/reverse", json={**body, "idempotency_key": "r5"}, headers=cashier
        )
        assert denied.status_code == 403
        assert await assert_lots_agree(member) == 100
    finally:
        clock.set_clock(None)


async def test_a_reversed_spend_keeps_its_lot_expiry(client, admin, demo):
    pin(T0)
    try:
        member = await new_member(client, admin)
        soon = T0 + timedelta(days=10)
        await earn_points(
            merchant_id=demo.merchant.id,
            member_id=member,
            points=30,
            reason="promo",
            idempotency_key="a",
            expires_at=soon,
        )
        debit = (await spend(client, admin, member, 30, "s1")).json()["entry"]["id"]
        body = {"debit_entry_id": debit, "idempotency_key": "r1", "reason": "refund"}
        response = await client.post(f"/api/members/{member}/points/reverse", json=body, headers=admin)
        assert response.status_code == 200 and response.json()["balance"] == 30
        pin(soon)
        assert await expire_due_lots(now=clock.now()) == 1
        assert (await member_points(client, admin, member))["balance"] == 0
        assert await assert_lots_agree(member) == 0
    finally:
        clock.set_clock(None)


async def test_purchase_reversal_claws_back_points_and_growth_once_never_below_zero(client, admin):
    member = await new_member(client, admin)
    purchase = await buy(client, admin, member, "ORD-1", 25_000)
    assert (purchase["points"], purchase["growth"], purchase["status"]) == (25, 250, "settled")
    assert (await spend(client, admin, member, 20, "s1")).status_code == 200

    response = await client.post(f"/api/members/{member}/purchases/ORD-1/reverse", headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "reversed"
    rows = [(e.delta, e.kind) for e in await PointsEntry.filter(member_id=member).order_by("id")]
    assert rows == [(25, "earn"), (-20, "spend"), (-5, "reverse")]
    again = await client.post(f"/api/members/{member}/purchases/ORD-1/reverse", headers=admin)
    assert again.status_code == 200 and again.json()["status"] == "reversed"
    assert await PointsEntry.filter(member_id=member).count() == 3
    assert await assert_lots_agree(member) == 0

    from models.tiers.tables import GrowthEntry

    growth = [(g.delta, g.kind) for g in await GrowthEntry.filter(member_id=member).order_by("id")]
    assert growth == [(250, "spend"), (-250, "reverse")]
    missing = await client.post(f"/api/members/{member}/purchases/NOPE/reverse", headers=admin)
    assert missing.status_code == 404


async def test_legacy_balance_without_lots_becomes_a_lot_when_spent(client, admin, demo):
    member = await new_member(client, admin)
    # points from before lots existed: a ledger row and balance, no lot
    await PointsEntry.create(
        merchant_id=demo.merchant.id,
        member_id=member,
        delta=70,
        balance_after=70,
        kind="import",
        reason="old system",
        idempotency_key="legacy-1",
    )
    await PointsAccount.filter(member_id=member).update(balance=70)
    await adjust(client, admin, member, 10, "a")
    response = await spend(client, admin, member, 15, "s1")
    assert response.status_code == 200, response.text
    legacy = await PointsLot.get(member_id=member, expires_at=None)
    assert (legacy.amount, legacy.remaining) == (70, 65)  # spent after the expiring lot
    assert await assert_lots_agree(member) == 65


async def test_quote_is_capped_by_balance_rate_and_share_of_the_order(client, admin):
    member = await new_member(client, admin)
    await adjust(client, admin, member, 1234, "a")

    async def quote(amount: int | str) -> tuple[int, dict]:
        response = await client.get(
            f"/api/members/{member}/points/quote", params={"order_amount": amount}, headers=admin
        )
        return response.status_code, response.json()

    assert await quote(10_000) == (200, {"order_amount": 10_000, "points": 500, "fen": 5_000})  # 50 % of the order
    assert await quote(1_000_000) == (200, {"order_amount": 1_000_000, "points": 1230, "fen": 12_300})  # balance
    assert await quote(199) == (200, {"order_amount": 199, "points": 0, "fen": 0})  # under one unit
    await put_rules(client, admin, cash={"points": 7, "fen": 50, "max_order_permille": 300})
    assert await quote(10_000) == (200, {"order_amount": 10_000, "points": 420, "fen": 3_000})
    status, body = await quote(0)
    assert status == 422 and body["error"]["field"] == "order_amount"


@pytest.mark.parametrize("order_no", ["POS 7/é", "50%off", "A" * 64])
async def test_a_purchase_is_reversed_by_the_order_number_it_was_recorded_with(client, admin, order_no):
    member = await new_member(client, admin)
    await buy(client, admin, member, order_no, 10_000)
    response = await client.post(f"/api/members/{member}/purchases/{quote(order_no, safe='')}/reverse", headers=admin)
    assert (response.status_code, response.json()["status"]) == (200, "reversed"), response.text


async def test_an_order_number_longer_than_any_is_404_not_500(client, admin):
    member = await new_member(client, admin)
    response = await client.post(f"/api/members/{member}/purchases/{'A' * 65}/reverse", headers=admin)
    assert (response.status_code, error_of(response)["code"]) == (404, "not_found")
