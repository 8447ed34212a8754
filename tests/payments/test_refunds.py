"""Refunds of recharges: debit first, WeChat through the outbox (v2 and v3), the notify settled exactly once."""

from __future__ import annotations

import asyncio

import pytest

from models.ledger import books as ledger
from models.payments.orders import PayAnomaly, PayOrder
from tests.cards.helpers import calls, deliver
from tests.helpers import add_staff, error_of
from tests.payments.helpers import EMU, run_later, use_pay_version
from tests.payments.wallet_helpers import (
    assert_consistent,
    balance_view,
    paid_recharge,
    refund,
    refund_row,
    staff_change,
)

REFUND_PATH = {"v2": "/secapi/pay/refund", "v3": "/v3/refund/domestic/refunds"}


async def _spent_recharge(app, client, admin, demo, *, points: int = 0):
    """Recharge 100.00 + 20.00 bonus, spend 30.00 at the cashier."""
    member_id, headers, order = await paid_recharge(
        app, client, admin, merchant_id=demo.merchant.id, price=10_000, bonus=2_000, points=points
    )
    assert (await staff_change(client, admin, member_id, -3_000, kind="pay", key="cashier-1")).status_code == 200
    return member_id, headers, order


async def _refund_success(client, out_refund_no: str, **options) -> dict:
    response = await client.post(f"{EMU}/control/refund-success", json={"out_refund_no": out_refund_no, **options})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("version", ["v2", "v3"])
async def test_refund_round_trip(app, client, admin, demo, version):
    await use_pay_version(version)
    member_id, _, order = await _spent_recharge(app, client, admin, demo, points=50)
    assert await assert_consistent(member_id) == (9_000, 7_000, 2_000)

    response = await refund(client, admin, order.id)
    assert response.status_code == 201, response.text
    body = response.json()
    # the 30.00 came from the principal lot (oldest first): 70.00 back, the 20.00 bonus forfeited
    assert {k: body["refund"][k] for k in ("amount", "forfeited_bonus", "status", "order_id")} == {
        "amount": 7_000,
        "forfeited_bonus": 2_000,
        "status": "PENDING",
        "order_id": order.id,
    }
    assert (body["replayed"], body["points_clawed_back"], body["points_not_clawed"]) == (False, 50, 0)
    assert (await PayOrder.get(id=order.id)).status == "REFUNDING"
    assert await assert_consistent(member_id) == (0, 0, 0)
    assert await ledger.get_balances(member_id=member_id) == (0, 0)
    view = await balance_view(client, admin, member_id)
    assert [(r["kind"], r["delta"], r["principal"], r["bonus"]) for r in view["items"][:2]] == [
        ("forfeit", -2_000, 0, -2_000),
        ("refund", -7_000, -7_000, 0),
    ]
    # a repeat of the same request is the same refund
    again = await refund(client, admin, order.id)
    assert (again.status_code, again.json()["refund"]["id"], again.json()["replayed"]) == (
        200,
        body["refund"]["id"],
        True,
    )

    assert await deliver(app) >= 1
    sent = await calls(client, REFUND_PATH[version])
    assert len(sent) == 1
    call = sent[0]["body"]
    if version == "v2":
        assert (call["refund_fee"], call["total_fee"], call["out_refund_no"]) == (
            "7000",
            "10000",
            body["refund"]["out_refund_no"],
        )
        assert call["notify_url"].endswith(f"/pay/notify/v2/{order.mch_id}")
    else:
        assert call["amount"] == {"refund": 7_000, "total": 10_000, "currency": "CNY"}
        assert call["notify_url"].endswith(f"/pay/notify/v3/{order.mch_id}")

    fired = await _refund_success(client, body["refund"]["out_refund_no"], repeat=3)
    assert len(fired["deliveries"]) == 3
    settled = await refund_row(body["refund"]["id"])
    assert (settled.status, settled.refund_id, settled.settled_at is not None) == ("SUCCESS", fired["refund_id"], True)
    paid = await PayOrder.get(id=order.id)
    assert (paid.status, paid.refunded_amount) == ("REFUNDED", 7_000)
    assert await assert_consistent(member_id) == (0, 0, 0)
    assert await ledger.get_balances(member_id=member_id) == (0, 0)
    assert await PayAnomaly.all().count() == 0
    listed = (await client.get("/api/pay-refunds", headers=admin)).json()["items"]
    assert [(r["id"], r["status"]) for r in listed] == [(body["refund"]["id"], "SUCCESS")]
    # nothing left to refund: the order is refunded
    late = await refund(client, admin, order.id, key="rf-2")
    assert (late.status_code, error_of(late)["code"]) == (409, "refund.not_refundable")


async def test_a_spent_recharge_has_nothing_to_refund_and_roles_are_checked(app, client, admin, demo):
    member_id, _, order = await paid_recharge(app, client, admin, merchant_id=demo.merchant.id, price=1_000, bonus=500)
    assert (await staff_change(client, admin, member_id, -1_200, kind="pay", key="all")).status_code == 200
    # 1_000 principal + 500 bonus spent pro rata? no: oldest lot first, principal 1_000 then 200 of the bonus
    response = await refund(client, admin, order.id)
    assert (response.status_code, error_of(response)["code"]) == (409, "refund.nothing_refundable")
    assert (await PayOrder.get(id=order.id)).status == "PAID"
    assert await assert_consistent(member_id) == (300, 0, 300)
    cashier = await add_staff(client, admin, username="cashier1", role="cashier", store_id=demo.store.id)
    assert (await refund(client, cashier, order.id)).status_code == 403
    assert (await client.get("/api/pay-refunds", headers=cashier)).status_code == 403
    missing = await refund(client, admin, 987654)
    assert (missing.status_code, error_of(missing)["code"]) == (404, "pay_order.not_found")


async def test_a_wechat_rejection_is_visible_retryable_and_cancel_restores_exactly(app, client, admin, demo):
    await use_pay_version("v3")
    member_id, _, order = await _spent_recharge(app, client, admin, demo, points=50)
    before = await assert_consistent(member_id)
    points_before, _ = await ledger.get_balances(member_id=member_id)
    refund_id = (await refund(client, admin, order.id)).json()["refund"]["id"]
    fault = {"path": REFUND_PATH["v3"], "errcode": "NOT_ENOUGH", "errmsg": "基本账户余额不足", "status": 403}
    assert (await client.post(f"{EMU}/control/fail-next", json=fault)).status_code == 200
    await deliver(app)
    failed = await refund_row(refund_id)
    assert (failed.status, failed.last_error.startswith("NOT_ENOUGH")) == ("FAILED", True)
    # nothing restored silently
    assert (await PayOrder.get(id=order.id)).status == "REFUNDING"
    assert await assert_consistent(member_id) == (0, 0, 0)
    listed = (await client.get("/api/pay-refunds", params={"status": "FAILED"}, headers=admin)).json()["items"]
    assert [(r["id"], r["last_error"][:10]) for r in listed] == [(refund_id, "NOT_ENOUGH")]

    retried = await client.post(f"/api/pay-refunds/{refund_id}/retry", headers=admin)
    assert (retried.status_code, retried.json()["status"]) == (200, "PENDING")
    twice = await client.post(f"/api/pay-refunds/{refund_id}/retry", headers=admin)
    assert (twice.status_code, error_of(twice)["code"]) == (409, "refund.not_failed")
    fault["times"] = 1
    assert (await client.post(f"{EMU}/control/fail-next", json=fault)).status_code == 200
    await deliver(app)
    assert (await refund_row(refund_id)).status == "FAILED"

    manager = await add_staff(client, admin, username="mgr1", role="store_manager", store_id=demo.store.id)
    assert (await client.post(f"/api/pay-refunds/{refund_id}/cancel", headers=manager)).status_code in (403, 404)
    cancelled = await client.post(f"/api/pay-refunds/{refund_id}/cancel", headers=admin)
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "CANCELLED")
    assert (await PayOrder.get(id=order.id)).status == "PAID"
    assert await assert_consistent(member_id) == before
    assert (await ledger.get_balances(member_id=member_id))[0] == points_before
    view = await balance_view(client, admin, member_id)
    assert [(r["kind"], r["delta"], r["principal"], r["bonus"]) for r in view["items"][:2]] == [
        ("reverse", 2_000, 0, 2_000),
        ("reverse", 7_000, 7_000, 0),
    ]
    again = await client.post(f"/api/pay-refunds/{refund_id}/cancel", headers=admin)
    assert (again.status_code, error_of(again)["code"]) == (409, "refund.not_failed")
    # the order can be refunded again later, for what is unspent then
    assert (await refund(client, admin, order.id, key="rf-again")).json()["refund"]["amount"] == 7_000


async def test_concurrent_refund_notifies_and_replays_settle_once(app, client, admin, demo):
    await use_pay_version("v2")
    member_id, _, order = await _spent_recharge(app, client, admin, demo)
    body = (await refund(client, admin, order.id)).json()
    await deliver(app)
    number = body["refund"]["out_refund_no"]
    results = await asyncio.gather(*(_refund_success(client, number, concurrent=True, repeat=3) for _ in range(3)))
    for _ in range(5):
        await _refund_success(client, number)
    statuses = [d["status"] for r in results for d in r["deliveries"]]
    assert len(statuses) == 9 and set(statuses) == {200}
    paid = await PayOrder.get(id=order.id)
    assert (paid.status, paid.refunded_amount) == ("REFUNDED", 7_000)
    assert (await refund_row(body["refund"]["id"])).status == "SUCCESS"
    assert await PayAnomaly.all().count() == 0
    assert await assert_consistent(member_id) == (0, 0, 0)


async def test_two_concurrent_refunds_of_one_order_one_wins(app, client, admin, demo):
    member_id, _, order = await _spent_recharge(app, client, admin, demo)
    responses = await asyncio.gather(*(refund(client, admin, order.id, key=f"k{n}") for n in range(5)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201, 409, 409, 409, 409]
    assert {error_of(r)["code"] for r in responses if r.status_code == 409} == {"refund.not_refundable"}
    assert await assert_consistent(member_id) == (0, 0, 0)


@pytest.mark.parametrize("version", ["v2", "v3"])
async def test_a_refund_whose_notify_never_comes_is_settled_by_reconciliation(app, client, admin, demo, version):
    await use_pay_version(version)
    member_id, _, order = await _spent_recharge(app, client, admin, demo)
    body = (await refund(client, admin, order.id)).json()
    await deliver(app)
    assert await run_later(app, "refunds.reconcile", minutes=15) == "pending refunds: 1 ignored"  # PROCESSING
    await _refund_success(client, body["refund"]["out_refund_no"], deliver=False)
    assert await run_later(app, "refunds.reconcile", minutes=5) == "pending refunds: none"  # too recent
    assert await run_later(app, "refunds.reconcile", minutes=15) == "pending refunds: 1 settled"
    assert await run_later(app, "refunds.reconcile", minutes=15) == "pending refunds: none"
    paid = await PayOrder.get(id=order.id)
    assert (paid.status, paid.refunded_amount) == ("REFUNDED", 7_000)
    assert await assert_consistent(member_id) == (0, 0, 0)


async def test_a_refund_wechat_never_accepted_becomes_failed_on_reconcile(app, client, admin, demo):
    await use_pay_version("v3")
    _, _, order = await _spent_recharge(app, client, admin, demo)
    refund_id = (await refund(client, admin, order.id)).json()["refund"]["id"]
    # the outbox message has not been delivered: WeChat has no such refund
    assert await run_later(app, "refunds.reconcile", minutes=15) == "pending refunds: 1 failed"
    failed = await refund_row(refund_id)
    assert (failed.status, failed.last_error.split(":")[0]) == ("FAILED", "RESOURCE_NOT_EXISTS")
    await deliver(app)  # the late message finds the refund FAILED and sends nothing
    assert await calls(client, REFUND_PATH["v3"]) == []


async def test_a_refund_notify_with_another_amount_is_an_anomaly_and_settles_nothing(app, client, admin, demo):
    from models.payments.refund_settle import settle_refund

    await use_pay_version("v3")
    _, _, order = await _spent_recharge(app, client, admin, demo)
    body = (await refund(client, admin, order.id)).json()
    args = {"merchant_id": demo.merchant.id, "out_refund_no": body["refund"]["out_refund_no"], "source": "test"}
    assert await settle_refund(**args, refund_id="50x", status="SUCCESS", amount=6_999) == "amount_mismatch"
    assert await settle_refund(**args, refund_id="50x", status="SUCCESS", amount=6_999) == "amount_mismatch"
    assert await settle_refund(**args, refund_id="50x", status="PROCESSING", amount=7_000) == "ignored"
    assert (await refund_row(body["refund"]["id"])).status == "PENDING"
    assert await PayAnomaly.filter(kind="amount_mismatch").count() == 1
    unknown = {**args, "out_refund_no": "RFnope"}
    assert await settle_refund(**unknown, refund_id="50y", status="SUCCESS", amount=1) == "unknown_refund"
    assert await settle_refund(**args, refund_id="50z", status="ABNORMAL", amount=7_000) == "ignored"
    failed = await refund_row(body["refund"]["id"])
    assert (failed.status, failed.last_error) == ("FAILED", "WeChat refund ABNORMAL")
    assert (await PayOrder.get(id=order.id)).status == "REFUNDING"
