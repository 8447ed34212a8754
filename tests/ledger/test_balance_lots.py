"""Stored-value lots: principal and bonus kept apart for every balance change, whoever makes it."""

from __future__ import annotations

import asyncio
import importlib

from tortoise import connections

from models.ledger import balance_lots
from models.ledger import books as ledger
from models.ledger.balance_lots import BalanceLot
from tests.helpers import add_member, error_of
from tests.payments.roundtrips import bulk_is_one_statement, sql_statements, touching
from tests.payments.wallet_helpers import (
    assert_consistent,
    balance_view,
    credits,
    paid_recharge,
    refund,
    staff_change,
)

LEGACY_LOTS_SQL = importlib.import_module("migrations.0010_balance_legacy_lots").LEGACY_LOTS_SQL


async def test_a_paid_recharge_is_principal_plus_bonus_and_spending_takes_both_pro_rata(app, client, admin, demo):
    member_id, headers, order = await paid_recharge(
        app, client, admin, merchant_id=demo.merchant.id, price=10_000, bonus=2_000
    )
    lots = await BalanceLot.filter(member_id=member_id).order_by("id")
    assert [(lot.source, lot.order_id, lot.principal, lot.bonus) for lot in lots] == [
        ("recharge", order.id, 10_000, 0),
        ("gift", order.id, 0, 2_000),
    ]
    # 30.00 from the oldest lot first: the principal lot
    assert (await staff_change(client, admin, member_id, -3_000, kind="pay", key="pay-1")).status_code == 200
    view = await balance_view(client, admin, member_id)
    assert (view["balance"], view["principal"], view["bonus"]) == (9_000, 7_000, 2_000)
    assert [(r["kind"], r["delta"], r["principal"], r["bonus"]) for r in view["items"]] == [
        ("pay", -3_000, -3_000, 0),
        ("gift", 2_000, 0, 2_000),
        ("recharge", 10_000, 10_000, 0),
    ]
    mine = (await client.get("/api/mp/me/balance", headers=headers)).json()
    assert (mine["balance"], mine["principal"], mine["bonus"], len(mine["items"])) == (9_000, 7_000, 2_000, 3)
    assert await assert_consistent(member_id) == (9_000, 7_000, 2_000)


async def test_a_lot_holding_both_parts_is_spent_pro_rata_bonus_rounded_down(client, admin, demo):
    member = await add_member(client, admin, phone="13900000001")
    member_id = member["id"]

    await ledger.change_balance(
        merchant_id=demo.merchant.id,
        member_id=member_id,
        delta=10,
        kind="import",
        reason="导入",
        idempotency_key="imp-1",
    )
    await BalanceLot.filter(member_id=member_id).update(principal=7, principal_remaining=7, bonus=3, bonus_remaining=3)
    assert (await staff_change(client, admin, member_id, -5, kind="pay", key="p1")).status_code == 200
    # bonus share 5 * 3 // 10 = 1, principal the rest
    assert await assert_consistent(member_id) == (5, 3, 2)
    assert (await staff_change(client, admin, member_id, -5, kind="pay", key="p2")).status_code == 200
    assert await assert_consistent(member_id) == (0, 0, 0)
    assert [lot.status for lot in await BalanceLot.filter(member_id=member_id)] == ["spent"]


async def _legacy_balance(client, admin, member_id: int, amount: int, key: str) -> None:
    """A balance credited before lots existed: the ledger row and the account, but no lot."""
    assert (await staff_change(client, admin, member_id, amount, kind="import", key=key)).status_code == 200
    await BalanceLot.filter(member_id=member_id, source="import").delete()


async def test_a_balance_from_before_lots_becomes_a_legacy_principal_lot_by_migration(client, admin, demo):
    member = await add_member(client, admin, phone="13900000002")
    member_id = member["id"]
    await _legacy_balance(client, admin, member_id, 500, "old")
    view = await balance_view(client, admin, member_id)
    assert (view["balance"], view["principal"], view["bonus"]) == (500, 500, 0)
    assert view["items"][0]["principal"] is None
    await connections.get("default").execute_script(LEGACY_LOTS_SQL)
    await connections.get("default").execute_script(LEGACY_LOTS_SQL)  # a rerun finds nothing left to cover
    assert await assert_consistent(member_id) == (500, 500, 0)
    assert (await staff_change(client, admin, member_id, 200, kind="gift", key="gift")).status_code == 200
    assert (await staff_change(client, admin, member_id, -600, kind="pay", key="spend")).status_code == 200
    assert await assert_consistent(member_id) == (100, 0, 100)
    assert [
        (lot.source, lot.entry_id is None, lot.status)
        for lot in await BalanceLot.filter(member_id=member_id).order_by("id")
    ] == [("legacy", True, "spent"), ("gift", False, "open")]


async def test_legacy_balance_after_the_migration_then_a_refund_and_a_spend(app, client, admin, demo):
    member_id, _, order = await paid_recharge(
        app, client, admin, merchant_id=demo.merchant.id, price=10_000, bonus=2_000
    )
    await _legacy_balance(client, admin, member_id, 700, "old")
    await connections.get("default").execute_script(LEGACY_LOTS_SQL)
    assert await assert_consistent(member_id) == (12_700, 10_700, 2_000)
    response = await refund(client, admin, order.id)
    assert response.status_code == 201, response.text
    assert await assert_consistent(member_id) == (700, 700, 0)  # the order's lots only: the legacy lot stays
    assert (await staff_change(client, admin, member_id, -700, kind="pay", key="spend")).status_code == 200
    assert await assert_consistent(member_id) == (0, 0, 0)


async def test_a_debit_that_runs_out_of_lots_makes_the_shortfall_a_legacy_lot(client, admin, demo, monkeypatch):
    monkeypatch.setattr(balance_lots, "LOT_BATCH", 2)
    member = await add_member(client, admin, phone="13900000005")
    member_id = member["id"]
    await _legacy_balance(client, admin, member_id, 500, "old")  # written around the migration: no lot
    for n in range(3):
        assert (await staff_change(client, admin, member_id, 100, kind="gift", key=f"g{n}")).status_code == 200
    assert (await staff_change(client, admin, member_id, -600, kind="pay", key="spend")).status_code == 200
    # the lots are spent first (all of them read, two per statement), then 300 of the 500 no lot held
    assert await assert_consistent(member_id) == (200, 200, 0)
    legacy = await BalanceLot.get(member_id=member_id, source="legacy")
    assert (legacy.principal, legacy.principal_remaining, legacy.entry_id) == (500, 200, None)


async def test_a_debit_across_more_lots_than_one_batch_takes_the_oldest_first(client, admin, demo, monkeypatch):
    monkeypatch.setattr(balance_lots, "LOT_BATCH", 2)
    member = await add_member(client, admin, phone="13900000006")
    member_id = member["id"]
    for n, kind in enumerate(["recharge", "gift", "recharge", "gift", "recharge"]):
        assert (await staff_change(client, admin, member_id, 100, kind=kind, key=f"c{n}")).status_code == 200
    async with sql_statements() as sent:
        assert (await staff_change(client, admin, member_id, -450, kind="pay", key="spend")).status_code == 200
    assert await assert_consistent(member_id) == (50, 50, 0)
    lots = await BalanceLot.filter(member_id=member_id).order_by("id")
    assert [(lot.status, lot.principal_remaining + lot.bonus_remaining) for lot in lots] == [
        ("spent", 0),
        ("spent", 0),
        ("spent", 0),
        ("spent", 0),
        ("open", 50),
    ]
    reads = [sql for sql in touching(sent, "balance_lot") if sql.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 3  # 2 + 2 + 1 lots: three batches, never the whole history
    uses_inserted = [sql for sql in touching(sent, "balance_lot_use") if "INSERT" in sql.upper()]
    assert len(uses_inserted) == (1 if bulk_is_one_statement() else 5)  # one bulk insert (sqlite traces each row)


async def test_a_credit_never_reads_the_members_other_lots(client, admin, demo):
    member = await add_member(client, admin, phone="13900000007")
    member_id = member["id"]

    async def credit(key: str) -> list[str]:
        async with sql_statements() as sent:
            assert (await staff_change(client, admin, member_id, 100, kind="gift", key=key)).status_code == 200
        return sent

    first = await credit("first")
    await credits(merchant_id=demo.merchant.id, member_id=member_id, count=40, delta=10, kind="recharge", key="many")
    later = await credit("later")
    assert await BalanceLot.filter(member_id=member_id, status="open").count() == 42
    assert len(later) == len(first)  # the same statements with 1 or 41 open lots
    for sent in (first, later):
        assert [sql.split()[0].upper() for sql in touching(sent, "balance_lot")] == ["INSERT"]
    assert await assert_consistent(member_id) == (600, 400, 200)


async def test_a_reverse_restores_the_same_lots_and_other_kinds_keep_lots_true(client, admin, demo):
    member = await add_member(client, admin, phone="13900000003")
    member_id = member["id"]
    assert (await staff_change(client, admin, member_id, 1_000, kind="recharge", key="r")).status_code == 200
    assert (await staff_change(client, admin, member_id, 400, kind="gift", key="g")).status_code == 200
    debit = await staff_change(client, admin, member_id, -1_200, kind="pay", key="d")
    assert await assert_consistent(member_id) == (200, 0, 200)
    result = await ledger.change_balance(
        merchant_id=demo.merchant.id,
        member_id=member_id,
        delta=1_200,
        kind="reverse",
        reason="撤销",
        idempotency_key="rev",
        ref_type="balance_entry",
        ref_id=str(debit.json()["entry"]["id"]),
    )
    assert await assert_consistent(member_id) == (1_400, 1_000, 400)
    assert await BalanceLot.filter(member_id=member_id).count() == 2  # restored, no new lot
    view = await balance_view(client, admin, member_id)
    assert (view["items"][0]["id"], view["items"][0]["principal"], view["items"][0]["bonus"]) == (
        result.entry.id,
        1_000,
        200,
    )
    # staff may write any kind; an adjust or a refund row without a named order still moves lots
    assert (await staff_change(client, admin, member_id, -300, kind="adjust", key="a")).status_code == 200
    assert (await staff_change(client, admin, member_id, -100, kind="refund", key="rf")).status_code == 200
    assert (await staff_change(client, admin, member_id, 50, kind="adjust", key="a2")).status_code == 200
    assert await assert_consistent(member_id) == (1_050, 600, 450)


async def test_concurrent_one_fen_debits_against_ten_fen_in_several_lots(client, admin, demo):
    member = await add_member(client, admin, phone="13900000004")
    member_id = member["id"]
    for n, (amount, kind) in enumerate([(3, "recharge"), (2, "gift"), (4, "import"), (1, "adjust")]):
        assert (await staff_change(client, admin, member_id, amount, kind=kind, key=f"c{n}")).status_code == 200
    responses = await asyncio.gather(
        *(staff_change(client, admin, member_id, -1, kind="pay", key=f"d{n}") for n in range(30))
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 10 + [409] * 20
    assert {error_of(r)["code"] for r in responses if r.status_code == 409} == {"balance.insufficient"}
    assert await assert_consistent(member_id) == (0, 0, 0)
    assert set(await BalanceLot.filter(member_id=member_id).values_list("status", flat=True)) == {"spent"}
