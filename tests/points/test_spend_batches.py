"""Spending reads lots a batch at a time in spending order; legacy balances become lots once, by migration."""

from __future__ import annotations

import asyncio
import importlib
from datetime import UTC, datetime, timedelta

import pytest
from tortoise import connections

from models.kernel import clock
from models.ledger.books import PointsAccount, PointsEntry
from models.points import lots as points_lots
from models.points.lots import PointsLot, PointsLotUse, earn_points
from tests.points.helpers import assert_lots_agree, member_points, new_member, put_rules, spend, timeless_owner

T0 = datetime(2025, 3, 10, 4, 0, tzinfo=UTC)
migration = importlib.import_module("migrations.0009_points_growth_buckets")


@pytest.fixture
async def admin(app, demo, client):
    return await timeless_owner(app, demo)


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(points_lots, "SPEND_BATCH", 2)


async def _earn(demo, member: int, points: int, key: str, days: int | None) -> int:
    result = await earn_points(
        merchant_id=demo.merchant.id,
        member_id=member,
        points=points,
        reason="earned",
        idempotency_key=key,
        expires_at=None if days is None else T0 + timedelta(days=days),
    )
    return (await PointsLot.get(entry_id=result.entry.id)).id


async def test_a_spend_over_many_lots_takes_them_in_spending_order_a_batch_at_a_time(
    client, admin, demo, small_batches
):
    clock.set_clock(lambda: T0)
    try:
        await put_rules(client, admin, expiry="never")
        member = await new_member(client, admin)
        # earned out of expiry order, two on the same day (then oldest first), two never expiring
        plan = [("n1", None), ("d30", 30), ("d10a", 10), ("d20", 20), ("n2", None), ("d10b", 10), ("d5", 5)]
        ids = {key: await _earn(demo, member, 3, key, days) for key, days in plan}
        response = await spend(client, admin, member, 17, "s1")
        assert response.status_code == 200, response.text
        debit = response.json()["entry"]["id"] if "entry" in response.json() else None
        uses = await PointsLotUse.filter(lot_id__in=list(ids.values())).order_by("id").values_list("lot_id", "amount")
        expected = [(ids[k], 3) for k in ("d5", "d10a", "d10b", "d20", "d30")] + [(ids["n1"], 2)]
        assert uses == expected
        if debit is not None:
            assert await PointsLotUse.filter(debit_entry_id=debit).count() == 6
        remaining = {key: (await PointsLot.get(id=lot_id)).remaining for key, lot_id in ids.items()}
        assert remaining == {"n1": 1, "d30": 0, "d10a": 0, "d20": 0, "n2": 3, "d10b": 0, "d5": 0}
        summary = await member_points(client, admin, member)
        assert summary["balance"] == 4
        assert await assert_lots_agree(member) == 4
        # the rest: the first never-expiring lot, then the second
        assert (await spend(client, admin, member, 4, "s2")).status_code == 200
        assert await assert_lots_agree(member) == 0
    finally:
        clock.set_clock(None)


async def test_the_points_read_sums_what_expires_soon_in_the_database(client, admin, demo):
    clock.set_clock(lambda: T0)
    try:
        member = await new_member(client, admin)
        await _earn(demo, member, 7, "a", 40)
        await _earn(demo, member, 5, "b", 25)
        await _earn(demo, member, 4, "c", 3)
        await _earn(demo, member, 9, "d", None)
        summary = await member_points(client, admin, member)
        assert summary["balance"] == 25
        assert summary["expiring_soon"]["points"] == 9
        # T0 + 3 days is 2025-03-13 12:00 Shanghai: the last usable local day is the 13th
        assert summary["expiring_soon"]["expires_on"] == "2025-03-13"
        empty = await member_points(client, admin, await new_member(client, admin))
        assert (empty["balance"], empty["expiring_soon"]["points"], empty["expiring_soon"]["expires_on"]) == (
            0,
            0,
            None,
        )
    finally:
        clock.set_clock(None)


async def _legacy_points(demo, member: int, points: int, key: str) -> None:
    """Points from before lots existed: a ledger row and the balance, no lot."""
    balance = (await PointsAccount.get(member_id=member)).balance + points
    await PointsEntry.create(
        merchant_id=demo.merchant.id,
        member_id=member,
        delta=points,
        balance_after=balance,
        kind="import",
        reason="old system",
        idempotency_key=key,
    )
    await PointsAccount.filter(member_id=member).update(balance=balance)


async def test_the_migration_turns_a_legacy_balance_into_one_never_expiring_lot(client, admin, demo):
    clock.set_clock(lambda: T0)
    try:
        member = await new_member(client, admin)
        untouched = await new_member(client, admin)
        await _legacy_points(demo, member, 70, "legacy-1")
        await _earn(demo, member, 10, "e1", 5)
        await _earn(demo, untouched, 10, "e2", 5)
        await migration.fill_legacy_lots(connections.get("default"))
        await migration.fill_legacy_lots(connections.get("default"))  # a second run finds nothing to do
        legacy = await PointsLot.filter(member_id=member, expires_at=None)
        assert [(lot.amount, lot.remaining, lot.status) for lot in legacy] == [(70, 70, "open")]
        legacy_entry = await PointsEntry.get(member_id=member, idempotency_key="legacy-1")
        assert legacy[0].entry_id == legacy_entry.id
        assert await PointsLot.filter(member_id=untouched).count() == 1
        assert await assert_lots_agree(member) == 80
        response = await spend(client, admin, member, 15, "s1")
        assert response.status_code == 200, response.text
        await legacy[0].refresh_from_db()
        assert legacy[0].remaining == 65  # spent after the expiring lot
        assert await PointsLot.filter(member_id=member).count() == 2  # no second legacy lot at spend time
        assert await assert_lots_agree(member) == 65
    finally:
        clock.set_clock(None)


async def test_a_legacy_balance_written_after_the_migration_is_still_covered_when_spent(
    client, admin, demo, small_batches
):
    clock.set_clock(lambda: T0)
    try:
        member = await new_member(client, admin)
        for i in range(5):
            await _earn(demo, member, 2, f"e{i}", 5 + i)
        await _legacy_points(demo, member, 30, "legacy-late")
        response = await spend(client, admin, member, 13, "s1")  # 10 from the five lots, 3 from the legacy rest
        assert response.status_code == 200, response.text
        legacy = await PointsLot.get(member_id=member, expires_at=None)
        assert (legacy.amount, legacy.remaining) == (30, 27)
        assert await assert_lots_agree(member) == 27
    finally:
        clock.set_clock(None)


async def test_concurrent_spends_over_many_lots_never_overdraw(client, admin, demo, small_batches):
    clock.set_clock(lambda: T0)
    try:
        member = await new_member(client, admin)
        for i in range(12):
            await _earn(demo, member, 3, f"e{i}", None if i % 4 == 0 else 1 + i)
        responses = await asyncio.gather(*(spend(client, admin, member, 5, f"spend-{i}") for i in range(12)))
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] * 7 + [409] * 5, codes  # 36 points: seven spends of 5, one point left
        assert await assert_lots_agree(member) == 1
    finally:
        clock.set_clock(None)
