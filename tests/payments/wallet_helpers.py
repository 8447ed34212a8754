"""Steps shared by the wallet, refund and plan tests: a paid recharge, staff debits, the consistency check."""

from __future__ import annotations

from typing import Any

import httpx

from models.ledger import books as ledger
from models.ledger.balance_lots import BalanceLot, BalanceLotUse
from models.payments.orders import PayOrder, PayRefund
from tests.payments.helpers import add_package, pay, paying_member, recharge


async def paid_recharge(
    app: Any,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    *,
    merchant_id: int,
    price: int,
    bonus: int,
    points: int = 0,
    openid: str = "o_mp_wallet",
) -> tuple[int, dict[str, str], PayOrder]:
    """A member who bought and paid a package (through the checkout and the emulator's notify)."""
    member_id, headers = await paying_member(app, merchant_id=merchant_id, mp_openid=openid)
    package = await add_package(client, admin, price=price, bonus_balance=bonus, bonus_points=points)
    order = (await recharge(client, headers, package_id=package["id"]))["order"]
    await pay(client, order["out_trade_no"])
    paid = await PayOrder.get(out_trade_no=order["out_trade_no"])
    assert paid.status == "PAID"
    return member_id, headers, paid


async def staff_change(
    client: httpx.AsyncClient, admin: dict[str, str], member_id: int, delta: int, *, kind: str, key: str
) -> httpx.Response:
    body = {"delta": delta, "kind": kind, "reason": "收银", "idempotency_key": key}
    return await client.post(f"/api/members/{member_id}/balance", json=body, headers=admin)


async def credits(*, merchant_id: int, member_id: int, count: int, delta: int, kind: str, key: str) -> None:
    """count balance credits of delta fen (each its own lot), straight through the ledger."""
    for n in range(count):
        await ledger.change_balance(
            merchant_id=merchant_id,
            member_id=member_id,
            delta=delta,
            kind=kind,
            reason="测试",
            idempotency_key=f"{key}-{n}",
        )


async def balance_view(client: httpx.AsyncClient, admin: dict[str, str], member_id: int) -> dict:
    response = await client.get(f"/api/members/{member_id}/balance", params={"limit": 200}, headers=admin)
    assert response.status_code == 200, response.text
    return response.json()


async def assert_consistent(member_id: int) -> tuple[int, int, int]:
    """balance = sum of ledger = sum of open lots; every lot = its amount - what its uses took; (balance, p, b)."""
    _, balance = await ledger.get_balances(member_id=member_id)
    rows = await ledger.BalanceEntry.filter(member_id=member_id).values_list("delta", flat=True)
    assert sum(rows) == balance
    lots = await BalanceLot.filter(member_id=member_id)
    principal = sum(lot.principal_remaining for lot in lots)
    bonus = sum(lot.bonus_remaining for lot in lots)
    assert principal + bonus == balance
    for lot in lots:
        # a restored use stays, offset by the negative use of the row that restored it
        uses = await BalanceLotUse.filter(lot_id=lot.id).values_list("principal", "bonus")
        assert lot.principal - sum(p for p, _ in uses) == lot.principal_remaining, lot.id
        assert lot.bonus - sum(b for _, b in uses) == lot.bonus_remaining, lot.id
        assert 0 <= lot.principal_remaining <= lot.principal and 0 <= lot.bonus_remaining <= lot.bonus
        assert (lot.status == "open") == (lot.principal_remaining + lot.bonus_remaining > 0)
    return balance, principal, bonus


async def refund(
    client: httpx.AsyncClient, admin: dict[str, str], order_id: int, *, key: str = "rf-1"
) -> httpx.Response:
    body = {"reason": "会员申请退款", "idempotency_key": key}
    return await client.post(f"/api/pay-orders/{order_id}/refund", json=body, headers=admin)


async def refund_row(refund_id: int) -> PayRefund:
    return await PayRefund.get(id=refund_id)
