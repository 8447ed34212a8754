"""Concurrent POS orders of one member racing for the last stored value and the last points (MariaDB row locks)."""

from __future__ import annotations

import asyncio

import pytest

from models.checkout.purchases import Purchase
from models.ledger.balance_lots import BalanceLot
from models.ledger.books import BalanceAccount, BalanceEntry, PointsAccount, PointsEntry
from models.points.lots import PointsLotUse
from server.__main__ import _check_ledgers
from tests.helpers import error_of
from tests.points.helpers import adjust, assert_lots_agree, new_member, put_rules


async def test_only_the_affordable_orders_settle(client, admin, demo, settings):
    if not settings.database.url.startswith("mysql://"):
        pytest.skip("row-lock concurrency runs on MariaDB")
    await put_rules(client, admin, earn={"points": 1, "per_fen": 100_000})  # these orders earn no points
    member = await new_member(client, admin)
    await adjust(client, admin, member, 300, "seed-points")
    for key, kind, delta in (("r", "recharge", 3000), ("g", "gift", 2000)):
        body = {"delta": delta, "kind": kind, "reason": "储值", "idempotency_key": key}
        assert (await client.post(f"/api/members/{member}/balance", json=body, headers=admin)).status_code == 200
    item = [{"sku": "S", "unit_price": 2000, "quantity": 1}]

    def order(key: str, *, points: int = 0, balance: int = 0) -> dict:
        return {
            "store_id": demo.store.id,
            "member_id": member,
            "items": item,
            "points": points,
            "balance": balance,
            "idempotency_key": key,
            "payments": [{"method": "cash", "amount": 1000}],
            "expect": {"due": 1000, "points": points, "balance": balance},
        }

    bodies = [order(f"bal-{n}", balance=1000) for n in range(10)] + [order(f"pts-{n}", points=100) for n in range(6)]
    answers = await asyncio.gather(*(client.post("/api/pos/orders", json=b, headers=admin) for b in bodies))
    by_kind: dict[str, list[int]] = {"bal": [], "pts": []}
    for body, answer in zip(bodies, answers, strict=True):
        by_kind[body["idempotency_key"][:3]].append(answer.status_code)
        if answer.status_code != 201:
            assert answer.status_code == 409 and error_of(answer)["code"] == "checkout.changed", answer.text
    assert sorted(by_kind["bal"]) == [201] * 5 + [409] * 5
    assert sorted(by_kind["pts"]) == [201] * 3 + [409] * 3
    assert await Purchase.filter(member_id=member, source="pos").count() == 8
    assert (await BalanceAccount.get(member_id=member)).balance == 0
    assert (await PointsAccount.get(member_id=member)).balance == 0 == await assert_lots_agree(member)
    lots = await BalanceLot.filter(member_id=member)
    assert sum(lot.principal_remaining + lot.bonus_remaining for lot in lots) == 0
    assert await BalanceEntry.filter(member_id=member, kind="pay").count() == 5
    assert await _check_ledgers() == 0  # python -m server check-ledgers

    # concurrent returns of one settled order: the units come back once
    settled = [a.json()["id"] for a, b in zip(answers, bodies, strict=True) if a.status_code == 201 and b["balance"]]
    target = settled[0]
    ret = {"items": [{"sku": "S", "quantity": 1}]}
    returns = await asyncio.gather(
        *(
            client.post(f"/api/pos/orders/{target}/returns", json={**ret, "idempotency_key": f"k{n}"}, headers=admin)
            for n in range(6)
        )
    )
    codes = sorted(r.status_code for r in returns)
    assert codes.count(201) == 1, [r.text for r in returns]
    assert all(r.status_code == 201 or r.status_code in (409, 422) for r in returns)
    assert (await BalanceAccount.get(member_id=member)).balance == 1000
    assert await _check_ledgers() == 0  # python -m server check-ledgers


async def test_two_tills_race_for_the_last_points_one_settles_the_other_is_told_points(client, admin, demo, settings):
    # the points debit is batched SQL (lots read under the account lock, guarded updates): the loser writes nothing
    if not settings.database.url.startswith("mysql://"):
        pytest.skip("row-lock concurrency runs on MariaDB")
    await put_rules(client, admin, earn={"points": 1, "per_fen": 100_000})  # these orders earn no points
    member = await new_member(client, admin)
    for n, points in enumerate((40, 35, 25)):  # three lots: the winner takes all of them, in expiry order
        await adjust(client, admin, member, points, f"seed-{n}")

    def order(key: str) -> dict:
        return {
            "store_id": demo.store.id,
            "member_id": member,
            "items": [{"sku": "S", "unit_price": 2000, "quantity": 1}],
            "points": 100,
            "idempotency_key": key,
            "payments": [{"method": "cash", "amount": 1000}],
            "expect": {"due": 1000, "points": 100},
        }

    for round_ in range(3):
        if round_:
            await adjust(client, admin, member, 100, f"refill-{round_}")
        keys = [f"last-{round_}-a", f"last-{round_}-b"]
        answers = await asyncio.gather(*(client.post("/api/pos/orders", json=order(k), headers=admin) for k in keys))
        codes = sorted(a.status_code for a in answers)
        assert codes == [201, 409], [a.text for a in answers]
        lost = next(a for a in answers if a.status_code == 409)
        assert (error_of(lost)["code"], error_of(lost)["reason"]) == ("checkout.changed", "points")
        won = next(a for a in answers if a.status_code == 201).json()
        entry = await PointsEntry.get(idempotency_key=f"pos-points:{won['id']}")
        assert (entry.delta, entry.balance_after, entry.kind, entry.reason) == (
            -100,
            0,
            "spend",
            f"POS order {won['id']}",
        )
        assert sum(use.amount for use in await PointsLotUse.filter(debit_entry_id=entry.id)) == 100
    assert await Purchase.filter(member_id=member, source="pos").count() == 3
    assert await PointsEntry.filter(member_id=member, kind="spend").count() == 3
    assert (await PointsAccount.get(member_id=member)).balance == 0 == await assert_lots_agree(member)
    assert await _check_ledgers() == 0
