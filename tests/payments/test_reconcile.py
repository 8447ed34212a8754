"""Reconciliation: a lost notify is settled from the order query, expired orders are closed, the daily statement."""

from __future__ import annotations

from datetime import timedelta

import pytest

from models.kernel import clock
from models.ledger.books import BalanceEntry
from models.payments.orders import PayAnomaly, PayOrder
from tests.payments.helpers import (
    EMU,
    V2_SUCCESS,
    add_package,
    anomalies,
    me,
    order_status,
    pay,
    paying_member,
    recharge,
    run_later,
    use_pay_version,
    v2_notify,
)


def _calls(app, prefix: str) -> list[dict]:
    return [c for c in app.blueprints["wechat_emulator"].ctx.state.calls if c["path"].startswith(prefix)]


@pytest.mark.parametrize("version", ["v2", "v3"])
async def test_a_lost_notify_is_settled_from_the_order_query(app, client, admin, demo, version):
    await use_pay_version(version)
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-lost")
    package = await add_package(client, admin)
    order = (await recharge(client, headers, package_id=package["id"]))["order"]
    fired = await pay(client, order["out_trade_no"], deliver=False)
    assert fired["deliveries"] == []
    assert await run_later(app, "payments.reconcile", minutes=1) == "no open orders to reconcile"  # too early
    assert await order_status(client, headers, order["out_trade_no"]) == "CREATED"

    assert await run_later(app, "payments.reconcile", minutes=6) == "reconciled: settled 1"
    stored = await PayOrder.get(id=order["id"])
    assert (stored.status, stored.transaction_id) == ("PAID", fired["transaction_id"])
    assert (await me(client, headers))["balance"] == 12_000
    query = "/pay/orderquery" if version == "v2" else f"/v3/pay/transactions/out-trade-no/{order['out_trade_no']}"
    assert len(_calls(app, query)) == 1
    assert await run_later(app, "payments.reconcile", minutes=7) == "no open orders to reconcile"

    late = await pay(client, order["out_trade_no"])  # the notify finally arrives
    assert [d["status"] for d in late["deliveries"]] == [200 if version == "v2" else 204]
    assert (await me(client, headers))["balance"] == 12_000
    assert await BalanceEntry.filter(member_id=member_id).count() == 2
    assert await anomalies(client, admin) == []


@pytest.mark.parametrize("version", ["v2", "v3"])
async def test_an_expired_unpaid_order_is_closed_and_a_later_payment_is_an_anomaly(
    app, client, admin, demo, settings, version
):
    await use_pay_version(version)
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-exp")
    unpaid = (await recharge(client, headers, amount=700))["order"]
    young = (await recharge(client, headers, amount=800))["order"]
    await PayOrder.filter(id=young["id"]).update(expires_at=clock.now() + timedelta(hours=2))
    assert await run_later(app, "payments.reconcile", minutes=10) == "reconciled: open 2"
    assert await run_later(app, "payments.reconcile", minutes=31) == "reconciled: closed 1, open 1"
    stored = await PayOrder.get(id=unpaid["id"])
    assert stored.status == "CLOSED" and stored.closed_at is not None
    close = (
        "/pay/closeorder" if version == "v2" else f"/v3/pay/transactions/out-trade-no/{unpaid['out_trade_no']}/close"
    )
    assert len(_calls(app, close)) == 1
    assert await order_status(client, headers, young["out_trade_no"]) == "CREATED"

    refused = await client.post(f"{EMU}/control/pay-success", json={"out_trade_no": unpaid["out_trade_no"]})
    assert refused.status_code == 409  # WeChat will not take the money for a closed order
    notify = v2_notify(
        settings, out_trade_no=unpaid["out_trade_no"], total_fee=700, transaction_id="4200000000000000000000000777"
    )
    response = await client.post(f"/pay/notify/v2/{settings.wechat.pay.mch_id}", content=notify)
    assert (response.status_code, response.text) == (200, V2_SUCCESS)
    assert await order_status(client, headers, unpaid["out_trade_no"]) == "CLOSED"
    assert await BalanceEntry.filter(member_id=member_id).count() == 0
    assert await anomalies(client, admin) == [("state_conflict", unpaid["out_trade_no"])]
    [anomaly] = await PayAnomaly.all()
    assert anomaly.detail["status"] == "CLOSED" and anomaly.dedupe_key == "state_conflict:4200000000000000000000000777"


async def test_a_payment_made_before_expiry_is_settled_not_closed(app, client, demo):
    await use_pay_version("v2")
    _, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-late")
    order = (await recharge(client, headers, amount=900))["order"]
    await pay(client, order["out_trade_no"], deliver=False)
    assert await run_later(app, "payments.reconcile", minutes=45) == "reconciled: settled 1"
    assert _calls(app, "/pay/closeorder") == []
    assert (await me(client, headers))["balance"] == 900


async def test_close_refused_as_paid_keeps_the_order_and_a_failed_prepay_is_closed_locally(app, client, demo):
    await use_pay_version("v3")
    _, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-race")
    order = (await recharge(client, headers, amount=300))["order"]
    path = f"/v3/pay/transactions/out-trade-no/{order['out_trade_no']}/close"
    fault = {"path": path, "errcode": "ORDERPAID", "status": 400, "times": 1}
    assert (await client.post(f"{EMU}/control/fail-next", json=fault)).status_code == 200
    assert await run_later(app, "payments.reconcile", minutes=31) == "reconciled: open 1"
    assert await order_status(client, headers, order["out_trade_no"]) == "CREATED"

    jsapi = {"path": "/v3/pay/transactions/jsapi", "errcode": "SYSTEM_ERROR", "status": 500, "times": 1}
    assert (await client.post(f"{EMU}/control/fail-next", json=jsapi)).status_code == 200
    failed = await client.post("/api/mp/recharge-orders", json={"amount": 400}, headers=headers)
    assert failed.status_code == 503
    summary = await run_later(app, "payments.reconcile", minutes=32)
    assert summary == "reconciled: closed 2"
    assert sorted(await PayOrder.all().values_list("amount", "status")) == [(300, "CLOSED"), (400, "CLOSED")]


async def test_the_daily_statement_reports_paid_orders_without_a_credit(app, client, admin, demo):
    await use_pay_version("v2")
    _, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-st")
    paid = [(await recharge(client, headers, amount=amount))["order"] for amount in (100, 200)]
    for order in paid:
        await pay(client, order["out_trade_no"])
    broken = (await recharge(client, headers, amount=300))["order"]
    first = await PayOrder.get(id=paid[0]["id"])
    # a PAID order whose credit never happened (what the statement exists to catch)
    await PayOrder.filter(id=broken["id"]).update(
        status="PAID", transaction_id="42000000000000001", paid_at=first.paid_at
    )
    assert first.paid_at is not None
    next_day = first.paid_at + timedelta(days=1)
    clock.set_clock(lambda: next_day)
    try:
        from jobs.scheduler import run_job

        summary = await run_job("payments.statement", app.ctx.jobs)
        assert summary == "statement: 1 merchants, 3 paid orders, 1 mismatches"
        assert await run_job("payments.statement", app.ctx.jobs) == summary  # idempotent: still one anomaly
    finally:
        clock.set_clock(None)
    assert await anomalies(client, admin) == [("statement_mismatch", broken["out_trade_no"])]
    [anomaly] = await PayAnomaly.all()
    assert anomaly.detail["problem"] == "paid order without a recharge credit" and anomaly.detail["amount"] == 300


async def test_an_order_whose_query_keeps_failing_backs_off_logs_one_line_and_becomes_an_anomaly(
    app, client, admin, demo, caplog
):
    await use_pay_version("v3")
    _, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-stuck")
    order = (await recharge(client, headers, amount=100))["order"]
    query = f"/v3/pay/transactions/out-trade-no/{order['out_trade_no']}"
    # WeChat Pay's answer arrives without a valid signature, every time
    fault = {"path": query, "errcode": "SYSTEM_ERROR", "status": 200, "unsigned": True, "times": 50}
    assert (await client.post(f"{EMU}/control/fail-next", json=fault)).status_code == 200
    summaries = [await run_later(app, "payments.reconcile", minutes=m) for m in (6, 6.5, 7.5, 10, 15, 24, 30)]
    assert summaries == [
        "reconciled: failed 1",
        "no open orders to reconcile",  # backing off: the next query is due a minute after the first
        "reconciled: failed 1",
        "reconciled: failed 1",
        "reconciled: failed 1",
        "reconciled: failed 1",
        "no open orders to reconcile",  # 16 minutes after the fifth failure
    ]
    stored = await PayOrder.get(id=order["id"])
    assert (stored.status, stored.reconcile_failures) == ("CREATED", 5)
    assert await anomalies(client, admin) == [("reconcile_failing", order["out_trade_no"])]
    failures = [r for r in caplog.records if "not reconciled" in r.getMessage()]
    assert len(failures) == 5 and all(r.exc_info is None for r in failures)
    assert "does not verify" in failures[0].getMessage()
