"""Growth in daily buckets and the running recharge total give exactly the answers of summing the ledgers."""

from __future__ import annotations

import importlib
import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

from tortoise import connections
from tortoise.functions import Sum

from models.ledger import books as ledger
from models.tiers.earning import add_growth
from models.tiers.growth import growth_since, total_recharge, window_start
from models.tiers.policy import LocalCalendar
from models.tiers.tables import GrowthBucket, GrowthEntry, RechargeTotal
from tests.tiers.helpers import SHANGHAI, local, new_member

migration = importlib.import_module("migrations.0009_points_growth_buckets")
_keys = itertools.count()


async def _plain_growth(member_id: int, since: datetime) -> int:
    rows = await GrowthEntry.filter(member_id=member_id, occurred_at__gte=since).annotate(t=Sum("delta")).values("t")
    return int(rows[0]["t"] or 0) if rows else 0


async def _buckets(member_id: int) -> list[tuple[int, int]]:
    return list(await GrowthBucket.filter(member_id=member_id).order_by("day").values_list("day", "total"))


async def test_bucketed_growth_equals_the_plain_sum_across_day_and_month_boundaries_and_zones(client, admin, demo):
    member_id = await new_member(client, admin, merchant_id=demo.merchant.id, phone="13900000900")
    # each side of UTC and Shanghai month ends, a reversal, and a year and more of history
    moments = [
        datetime(2026, 1, 31, 15, 59, 59, tzinfo=UTC),  # 2026-01-31 23:59:59 Shanghai
        datetime(2026, 1, 31, 16, 0, tzinfo=UTC),  # 2026-02-01 00:00 Shanghai, still January in UTC
        datetime(2026, 1, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 2, 1, 0, 0, tzinfo=UTC),
        datetime(2026, 2, 28, 16, 0, tzinfo=UTC),
        datetime(2026, 6, 15, 8, 30, tzinfo=UTC),
        datetime(2026, 12, 31, 16, 0, tzinfo=UTC),
        datetime(2027, 1, 1, 0, 0, tzinfo=UTC),
        datetime(2027, 2, 1, 3, 0, tzinfo=UTC),
        local("2027-02-01 00:00"),
        local("2027-03-01 00:00") - timedelta(microseconds=1),
    ]
    for index, at in enumerate(moments):
        for delta in (10 + index, -(index % 3)) if index % 3 else (10 + index,):
            kind = "activity" if delta > 0 else "reverse"
            assert await add_growth(
                merchant_id=demo.merchant.id,
                member_id=member_id,
                delta=delta,
                kind=kind,
                reason="test",
                idempotency_key=f"b{next(_keys)}",
                occurred_at=at,
            )
    assert (await _buckets(member_id))[0] == (20260131, 10 + 11 - 1 + 12 - 2)
    calendar = LocalCalendar(SHANGHAI, datetime(2027, 2, 15, tzinfo=UTC))
    starts = [window_start(calendar, date(2027, m, d)) for m in (1, 2, 3) for d in (1, 2, 28)]
    starts += [
        at + offset for at in moments for offset in (timedelta(0), timedelta(microseconds=1), -timedelta(seconds=1))
    ]
    starts += [datetime(2025, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC)]
    for since in starts:
        assert await growth_since(member_id=member_id, since=since) == await _plain_growth(member_id, since), since

    # the migration rebuilds the same buckets from the growth ledger
    live = await _buckets(member_id)
    await GrowthBucket.all().delete()
    await migration.fill_growth_buckets(connections.get("default"))
    assert await _buckets(member_id) == live


async def _balance(demo: Any, member_id: int, delta: int, kind: str) -> None:
    await ledger.change_balance(
        merchant_id=demo.merchant.id,
        member_id=member_id,
        delta=delta,
        kind=kind,
        reason="test",
        idempotency_key=f"r{next(_keys)}",
    )


async def test_the_recharge_total_counts_recharges_less_refunds_as_the_ledger_sum_does(client, admin, demo):
    member_id = await new_member(client, admin, merchant_id=demo.merchant.id, phone="13900000901")
    other = await new_member(client, admin, merchant_id=demo.merchant.id, phone="13900000902")
    assert await total_recharge(member_id=member_id) == 0
    await _balance(demo, member_id, 10_000, "recharge")
    await _balance(demo, member_id, 5_000, "recharge")
    await _balance(demo, member_id, 2_000, "gift")  # not a recharge
    await _balance(demo, member_id, -3_000, "pay")  # spending is not a refund
    await _balance(demo, member_id, -4_000, "refund")
    await _balance(demo, member_id, 500, "refund")  # a refund credit does not count
    await _balance(demo, other, 700, "recharge")
    assert await total_recharge(member_id=member_id) == 11_000
    assert await total_recharge(member_id=other) == 700

    await RechargeTotal.all().delete()
    await migration.fill_recharge_totals(connections.get("default"))
    assert await total_recharge(member_id=member_id) == 11_000
    assert await total_recharge(member_id=other) == 700
