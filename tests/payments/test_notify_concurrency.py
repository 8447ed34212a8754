"""200 orders, each notify delivered 3x concurrently plus 20 replays: every order credited exactly once."""

from __future__ import annotations

import asyncio

from tortoise.functions import Count, Sum

from models.ledger.books import BalanceAccount, BalanceEntry, find_mismatches
from models.payments.orders import PayAnomaly, PayOrder
from tests.payments.helpers import V2_SUCCESS, paying_member, recharge, use_pay_version, v2_notify

ORDERS = 200
MEMBERS = 20  # ten orders per member: concurrent credits also contend for the same account rows
BURST, REPLAYS, BOUND = 3, 20, 50


async def test_three_concurrent_deliveries_and_twenty_replays_credit_each_order_once(app, client, demo, settings):
    await use_pay_version("v2")
    members = [await paying_member(app, merchant_id=demo.merchant.id, mp_openid=f"mp-c{i}") for i in range(MEMBERS)]
    gate = asyncio.Semaphore(BOUND)

    async def order(i: int) -> dict:
        async with gate:
            return await recharge(client, members[i % MEMBERS][1], amount=100 + i)

    orders = await asyncio.gather(*(order(i) for i in range(ORDERS)))
    url = f"/pay/notify/v2/{settings.wechat.pay.mch_id}"
    bodies = [
        v2_notify(
            settings,
            out_trade_no=o["order"]["out_trade_no"],
            total_fee=o["order"]["amount"],
            transaction_id=f"42{i:026d}",
        )
        for i, o in enumerate(orders)
    ]
    answers: list[tuple[int, str]] = []

    async def post(body: bytes) -> None:
        async with gate:
            response = await client.post(url, content=body)
        answers.append((response.status_code, response.text))

    async def deliver(body: bytes) -> None:
        await asyncio.gather(*(post(body) for _ in range(BURST)))
        for _ in range(REPLAYS):
            await post(body)

    await asyncio.gather(*(deliver(body) for body in bodies))

    assert len(answers) == ORDERS * (BURST + REPLAYS)
    assert set(answers) == {(200, V2_SUCCESS)}
    assert await PayOrder.filter(status="PAID").count() == ORDERS
    per_order = (
        await BalanceEntry.filter(kind="recharge", ref_type="pay_order")
        .group_by("ref_id")
        .annotate(n=Count("id"), total=Sum("delta"))
        .values("ref_id", "n", "total")
    )
    credited = {int(row["ref_id"]): (row["n"], row["total"]) for row in per_order}
    assert credited == {o["order"]["id"]: (1, o["order"]["amount"]) for o in orders}
    balances = {a.member_id: a.balance for a in await BalanceAccount.all()}
    expected = {member_id: 0 for member_id, _ in members}
    for i, o in enumerate(orders):
        expected[members[i % MEMBERS][0]] += o["order"]["amount"]
    assert balances == expected
    assert [m async for m in find_mismatches() if not isinstance(m, int)] == []
    assert await PayAnomaly.all().count() == 0
