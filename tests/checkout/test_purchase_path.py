"""The purchase as one deliberate SQL path (models.kernel.sqlpath): the same rows and guards as the ORM path,
exact under concurrency (run on MariaDB for the row locks), two round trips, and the ORM kept as the fallback."""

from __future__ import annotations

import asyncio

from tortoise.functions import Sum

from models.checkout.purchases import Purchase
from models.kernel.outbox import OutboxMessage
from models.ledger import books
from models.ledger.books import PointsAccount, PointsEntry
from models.points.lots import PointsLot
from models.tiers.tables import GrowthBucket, GrowthEntry, MemberTier
from server import wiring
from tests.payments.roundtrips import bulk_is_one_statement, split_batches, sql_statements, touching
from tests.points.helpers import assert_lots_agree, buy, new_member, put_rules
from tests.tiers.helpers import add_tier
from tests.tiers.helpers import new_member as member_with_card


async def _post(client, headers, member_id: int, order_no: str, amount: int, **extra):
    body = {"order_no": order_no, "amount": amount, **extra}
    return await client.post(f"/api/members/{member_id}/purchases", json=body, headers=headers)


async def test_concurrent_repeats_of_one_order_earn_once(client, admin):
    member = await new_member(client, admin)
    answers = await asyncio.gather(*(_post(client, admin, member, "ORD-RACE", 12_345) for _ in range(12)))
    assert sorted(a.status_code for a in answers) == [200] * 11 + [201], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert await Purchase.filter(member_id=member).count() == 1
    assert await PointsEntry.filter(member_id=member).count() == 1
    assert await GrowthEntry.filter(member_id=member).count() == 1
    assert (await PointsAccount.get(member_id=member)).balance == 12 == await assert_lots_agree(member)
    assert (await MemberTier.get(member_id=member)).growth_total == 123
    assert [b.total for b in await GrowthBucket.filter(member_id=member)] == [123]


async def test_concurrent_purchases_of_one_member_keep_the_daily_cap(client, admin):
    await put_rules(client, admin, daily_cap=50)
    member = await new_member(client, admin)
    answers = await asyncio.gather(*(_post(client, admin, member, f"CAP-{n}", 20_000) for n in range(10)))
    assert [a.status_code for a in answers] == [201] * 10
    earned = sorted(a.json()["points"] for a in answers)
    assert sum(earned) == 50 and earned.count(20) == 2 and earned.count(10) == 1, earned  # 20 + 20 + 10, then 0s
    assert await assert_lots_agree(member) == 50
    growth = await GrowthEntry.filter(member_id=member).annotate(total=Sum("delta")).values("total")
    assert (
        int(growth[0]["total"]) == (await MemberTier.get(member_id=member)).growth_total == 2_000
    )  # growth has no cap


async def test_a_purchase_queues_one_card_sync_that_learns_the_points_book(client, admin, demo):
    member = await member_with_card(client, admin, merchant_id=demo.merchant.id, phone="13900000001", card=True)
    plain = await new_member(client, admin)
    recharge = {"delta": 500, "kind": "recharge", "reason": "储值", "idempotency_key": "r1"}
    assert (await client.post(f"/api/members/{member}/balance", json=recharge, headers=admin)).status_code == 200
    await buy(client, admin, member, "SYNC-1", 10_000)
    await buy(client, admin, member, "SYNC-2", 10_000)
    await buy(client, admin, plain, "SYNC-3", 10_000)
    [pending] = await OutboxMessage.filter(topic="card.sync", status="pending")
    assert pending.coalesce_key == f"card:{member}" and pending.payload == {
        "member_id": member,
        "books": ["balance", "points"],
    }

    await OutboxMessage.filter(id=pending.id).update(status="delivered")
    await buy(client, admin, member, "SYNC-4", 10_000)
    [fresh] = await OutboxMessage.filter(topic="card.sync", status="pending")
    assert fresh.payload == {"member_id": member, "books": ["points"]}


async def test_a_purchase_that_crosses_a_tier_upgrades_at_once_first_and_later(client, admin):
    await add_tier(client, admin, "normal", 0, 0)
    silver = await add_tier(client, admin, "silver", 1, 100, points_multiplier_permille=2000)
    for first_amount in (20_000, 5_000):  # the member's first purchase crosses; a later one crosses
        member = await new_member(client, admin)
        first = await buy(client, admin, member, f"T-{member}-1", first_amount)
        tier = await MemberTier.get(member_id=member)
        if first_amount >= 10_000:
            assert tier.tier_id == silver["id"] and first["points"] == 20  # upgraded after: this order at x1
        else:
            assert tier.tier_id is None or tier.tier_id != silver["id"]
            later = await buy(client, admin, member, f"T-{member}-2", 5_000)
            assert later["points"] == 5 and (await MemberTier.get(member_id=member)).tier_id == silver["id"]
        doubled = await buy(client, admin, member, f"T-{member}-3", 10_000)
        assert doubled["points"] == 20  # the silver multiplier applies from the next purchase
        await assert_lots_agree(member)


async def test_the_orm_path_writes_the_same_rows_when_a_listener_cannot_batch(client, admin, demo, monkeypatch):
    async def cannot(book, entry):
        return None

    member = await member_with_card(client, admin, merchant_id=demo.merchant.id, phone="13900000002", card=True)
    batched = await buy(client, admin, member, "SAME-1", 12_345)
    listeners = books.ENTRY_STATEMENTS._listeners
    books.ENTRY_STATEMENTS.install([*listeners, cannot])
    try:
        unbatched = await buy(client, admin, member, "SAME-2", 12_345)
    finally:
        wiring.install()
    assert {k: v for k, v in batched.items() if k not in ("id", "order_no", "occurred_at", "created_at")} == {
        k: v for k, v in unbatched.items() if k not in ("id", "order_no", "occurred_at", "created_at")
    }
    entries = await PointsEntry.filter(member_id=member).order_by("id")
    assert [(e.delta, e.balance_after, e.kind, e.ref_type) for e in entries] == [
        (12, 12, "earn", "purchase"),
        (12, 24, "earn", "purchase"),
    ]
    assert [e.idempotency_key for e in entries] == [f"purchase:{batched['id']}", f"purchase:{unbatched['id']}"]
    assert [e.ref_id for e in entries] == [str(batched["id"]), str(unbatched["id"])]
    lots = await PointsLot.filter(member_id=member).order_by("id")
    assert [(lot.entry_id, lot.amount) for lot in lots] == [(entries[0].id, 12), (entries[1].id, 12)]
    assert lots[0].expires_at == lots[1].expires_at or lots[0].expires_at is None
    growth = await GrowthEntry.filter(member_id=member).order_by("id")
    assert [(g.delta, g.idempotency_key) for g in growth] == [
        (123, f"purchase:{batched['id']}"),
        (123, f"purchase:{unbatched['id']}"),
    ]
    assert await OutboxMessage.filter(topic="card.sync", status="pending").count() == 1
    assert await assert_lots_agree(member) == 24


async def test_a_later_purchase_is_two_round_trips(client, admin):
    member = await new_member(client, admin)
    await buy(client, admin, member, "RT-1", 10_000)  # fills the configuration cache and makes the tier row
    async with sql_statements() as sent:
        await buy(client, admin, member, "RT-2", 10_000)
    if bulk_is_one_statement():  # MariaDB: BEGIN with the locks and the reads, then the writes with the COMMIT
        assert len(sent) == 2, [sql[:80] for sql in sent]
    statements = split_batches(sent)
    assert not [sql for sql in statements if "SAVEPOINT" in sql.upper()]
    assert len(touching(statements, "purchase")) == 2  # the order read with the other reads; its INSERT
    assert [sql.split()[0].upper() for sql in touching(statements, "points_lot")] == ["INSERT"]


async def test_an_unknown_store_or_a_member_of_another_merchant_writes_nothing(client, admin):
    member = await new_member(client, admin)
    bad_store = await _post(client, admin, member, "ST-1", 1_000, store_id=999_999)
    assert bad_store.status_code == 422 and bad_store.json()["error"]["code"] == "purchase.store_invalid"
    missing = await _post(client, admin, 999_999, "ST-2", 1_000)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "member.not_found"
    assert await Purchase.filter(order_no__in=["ST-1", "ST-2"]).count() == 0
    assert await PointsEntry.filter(member_id=member).count() == 0
