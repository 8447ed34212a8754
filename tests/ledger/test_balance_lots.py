"""Stored-value lots: principal and bonus kept apart for every balance change, whoever makes it."""

from __future__ import annotations

import asyncio

from models.ledger import books as ledger
from models.ledger.balance_lots import BalanceLot
from tests.helpers import add_member, error_of
from tests.payments.wallet_helpers import assert_consistent, balance_view, paid_recharge, staff_change


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


async def test_a_balance_from_before_lots_becomes_a_legacy_principal_lot(client, admin, demo):
    member = await add_member(client, admin, phone="13900000002")
    member_id = member["id"]
    assert (await staff_change(client, admin, member_id, 500, kind="import", key="old")).status_code == 200
    await BalanceLot.filter(member_id=member_id).delete()  # as if credited before migration 0003
    view = await balance_view(client, admin, member_id)
    assert (view["balance"], view["principal"], view["bonus"]) == (500, 500, 0)
    assert view["items"][0]["principal"] is None
    assert (await staff_change(client, admin, member_id, 200, kind="gift", key="gift")).status_code == 200
    assert (await staff_change(client, admin, member_id, -600, kind="pay", key="spend")).status_code == 200
    assert await assert_consistent(member_id) == (100, 0, 100)
    assert [
        (lot.source, lot.entry_id is None) for lot in await BalanceLot.filter(member_id=member_id).order_by("id")
    ] == [
        ("legacy", True),
        ("gift", False),
    ]


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
