"""Paying through the emulator: the notify settles the order once and credits balance, bonus and points."""

from __future__ import annotations

import json

from models.kernel.outbox import OutboxMessage
from models.ledger.books import BalanceAccount, BalanceEntry, PointsEntry
from models.payments.orders import PayAnomaly, PayOrder
from models.tenancy.merchants import upsert_wechat_account
from tests.cards.helpers import activated_member, calls, deliver, put_template
from tests.helpers import other_merchant
from tests.payments.helpers import (
    V2_SUCCESS,
    add_package,
    add_plan,
    anomalies,
    buy_plan,
    me,
    order_status,
    pay,
    paying_member,
    recharge,
    use_pay_version,
    v2_notify,
    v3_notify,
)

UPDATEUSER = "/card/membercard/updateuser"


async def ledger_of(client, admin, member_id: int) -> list[tuple[int, str, str, str]]:
    """(delta, kind, idempotency_key, ref) of the member's balance ledger, oldest first."""
    response = await client.get(f"/api/members/{member_id}/balance/ledger", headers=admin)
    assert response.status_code == 200, response.text
    items = reversed(response.json()["items"])
    return [(e["delta"], e["kind"], e["idempotency_key"], f"{e['ref_type']}:{e['ref_id']}") for e in items]


async def test_v2_recharge_paid_credits_once_and_updates_the_card(app, client, admin, demo, settings):
    await use_pay_version("v2")
    card_id = (await put_template(client, admin))["card_id"]
    member_id, code = await activated_member(client, app, admin, card_id=card_id, openid="o1", mobile="13800000001")
    same_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-o1", openid="o1")
    assert same_id == member_id
    package = await add_package(client, admin)
    order = (await recharge(client, headers, package_id=package["id"]))["order"]
    assert await order_status(client, headers, order["out_trade_no"]) == "CREATED"

    fired = await pay(client, order["out_trade_no"])
    assert [(d["status"], d["body"]) for d in fired["deliveries"]] == [(200, V2_SUCCESS)]
    assert await order_status(client, headers, order["out_trade_no"]) == "PAID"
    profile = await me(client, headers)
    assert (profile["balance"], profile["points"]) == (12_000, 50)
    ref = f"pay_order:{order['id']}"
    assert await ledger_of(client, admin, member_id) == [
        (10_000, "recharge", f"recharge:{order['id']}", ref),
        (2_000, "gift", f"recharge-bonus:{order['id']}", ref),
    ]
    points = await PointsEntry.filter(member_id=member_id).values_list("delta", "kind", "idempotency_key")
    assert points == [(50, "gift", f"recharge-points:{order['id']}")]
    stored = await PayOrder.get(id=order["id"])
    assert stored.transaction_id == fired["transaction_id"] and stored.paid_at is not None

    assert await OutboxMessage.filter(topic="card.sync", status="pending").count() == 1
    assert await deliver(app) == 1
    [synced] = [c["body"] for c in await calls(client, UPDATEUSER)]
    assert (synced["code"], synced["balance"], synced["bonus"]) == (code, 12_000, 50)
    assert synced["record_balance"] == "充值赠送 +20.00元"

    # WeChat delivers again, three times at once: nothing more is credited, every delivery is acknowledged
    again = await pay(client, order["out_trade_no"], repeat=3, concurrent=True)
    assert [(d["status"], d["body"]) for d in again["deliveries"]] == [(200, V2_SUCCESS)] * 3
    assert (await me(client, headers))["balance"] == 12_000
    assert await BalanceEntry.filter(member_id=member_id).count() == 2
    assert await anomalies(client, admin) == []
    staff_view = (await client.get("/api/pay-orders", params={"status": "PAID"}, headers=admin)).json()["items"]
    assert [(o["id"], o["transaction_id"]) for o in staff_view] == [(order["id"], fired["transaction_id"])]


async def test_v3_recharge_paid_with_concurrent_redeliveries_credits_once(app, client, admin, demo):
    await use_pay_version("v3")
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-3")
    package = await add_package(client, admin, price=30_000, bonus_balance=6_000, bonus_points=0)
    order = (await recharge(client, headers, package_id=package["id"]))["order"]
    assert order["api_version"] == "v3"
    fired = await pay(client, order["out_trade_no"], repeat=3, concurrent=True)
    assert [(d["status"], d["body"]) for d in fired["deliveries"]] == [(204, "")] * 3
    assert (await me(client, headers))["balance"] == 36_000
    assert [row[:2] for row in await ledger_of(client, admin, member_id)] == [(30_000, "recharge"), (6_000, "gift")]
    assert await PointsEntry.filter(member_id=member_id).count() == 0
    assert await order_status(client, headers, order["out_trade_no"]) == "PAID"


async def test_plan_order_paid_moves_to_paid_without_touching_the_balance(app, client, admin, demo):
    plan = await add_plan(client, admin)
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-p")
    order = (await buy_plan(client, headers, plan["id"]))["order"]
    fired = await pay(client, order["out_trade_no"], repeat=2)
    assert [d["status"] for d in fired["deliveries"]] == [204, 204]
    assert await order_status(client, headers, order["out_trade_no"]) == "PAID"
    assert (await me(client, headers))["balance"] == 0
    assert await BalanceEntry.filter(member_id=member_id).count() == 0


async def test_mismatched_notifies_become_anomalies_and_credit_nothing(app, client, admin, demo, settings):
    await use_pay_version("v2")
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-m")
    order = (await recharge(client, headers, amount=5_000))["order"]
    no, url = order["out_trade_no"], f"/pay/notify/v2/{settings.wechat.pay.mch_id}"
    processed = {
        "amount_mismatch": v2_notify(
            settings, out_trade_no=no, total_fee=1, transaction_id="4200000000000000000000000001"
        ),
        "unknown_order": v2_notify(
            settings, out_trade_no="HY-NOPE", total_fee=5_000, transaction_id="4200000000000000000000000002"
        ),
        "appid_mismatch": v2_notify(
            settings,
            out_trade_no=no,
            total_fee=5_000,
            appid=settings.wechat.official.appid,  # the merchant's, but not the app the order was paid in
            transaction_id="4200000000000000000000000003",
        ),
    }
    for kind, body in processed.items():
        for _ in range(2):  # WeChat's retry of the same notify is one anomaly
            response = await client.post(url, content=body)
            assert (response.status_code, response.text) == (200, V2_SUCCESS), kind
    not_success = v2_notify(settings, out_trade_no=no, total_fee=5_000, result_code="FAIL", err_code="NOTENOUGH")
    assert (await client.post(url, content=not_success)).status_code == 200
    assert await anomalies(client, admin) == [
        ("amount_mismatch", no),
        ("unknown_order", "HY-NOPE"),
        ("appid_mismatch", no),
    ]
    v3_url = f"/pay/notify/v3/{settings.wechat.pay.mch_id}"
    for overrides in (
        {"amount": {"total": 5_000, "payer_total": 5_000, "currency": "USD"}},
        {"amount": {"total": 5_001, "payer_total": 5_001, "currency": "CNY"}},
    ):
        body, v3_headers = v3_notify(settings, out_trade_no=no, total=5_000, **overrides)
        assert (await client.post(v3_url, content=body, headers=v3_headers)).status_code == 204
    rejected = {
        "forged sign": v2_notify(settings, out_trade_no=no, total_fee=5_000, key="not-the-merchant-key-0123456789ab"),
        "unknown appid": v2_notify(settings, out_trade_no=no, total_fee=5_000, appid="wx00000000unknown"),
        "mch_id in body differs": v2_notify(settings, out_trade_no=no, total_fee=5_000, mch_id="1900000999"),
        "malformed": b"<xml><return_code>SUCCESS</return_code>",
        "json": b'{"out_trade_no": "x"}',
        "xxe": b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><a>&x;</a></xml>',
    }
    for name, body in rejected.items():
        assert (await client.post(url, content=body)).status_code == 401, name
    other_mch = v2_notify(settings, out_trade_no=no, total_fee=5_000, mch_id="1900000999")
    assert (await client.post("/pay/notify/v2/1900000999", content=other_mch)).status_code == 404
    assert (await client.post(v3_url, content=b"{not json", headers=v3_headers)).status_code == 401

    assert await order_status(client, headers, no) == "CREATED"
    assert await BalanceEntry.filter(member_id=member_id).count() == 0
    assert [k for k, _ in await anomalies(client, admin)] == [
        "amount_mismatch",
        "unknown_order",
        "appid_mismatch",
        "amount_mismatch",
        "amount_mismatch",
    ]
    first = (await client.get("/api/pay-anomalies", headers=admin)).json()["items"][-1]
    assert first["detail"]["expected"]["amount"] == 5_000 and first["detail"]["amount"] == 1
    resolve = f"/api/pay-anomalies/{first['id']}/resolve"
    done = await client.post(resolve, json={"note": "checked with WeChat"}, headers=admin)
    assert (done.status_code, done.json()["resolved"], done.json()["detail"]["resolution"]["note"]) == (
        200,
        True,
        "checked with WeChat",
    )
    assert (await client.post(resolve, json={"note": "again"}, headers=admin)).status_code == 409
    open_ones = (await client.get("/api/pay-anomalies", params={"resolved": "false"}, headers=admin)).json()["items"]
    assert len(open_ones) == 4

    # the real payment still settles afterwards
    fired = await pay(client, no)
    assert [d["status"] for d in fired["deliveries"]] == [200]
    assert (await me(client, headers))["balance"] == 5_000


async def test_a_notify_for_another_merchants_order_credits_nothing(app, client, admin, demo, settings):
    await use_pay_version("v2")
    _, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-x")
    order = (await recharge(client, headers, amount=800))["order"]
    other = await other_merchant()
    await upsert_wechat_account(
        merchant=other.merchant, kind="miniprogram", appid="wx00000000other0b", secrets={"secret": "s"}, api_base="x"
    )
    await upsert_wechat_account(
        merchant=other.merchant, kind="pay", mch_id="1900000888", secrets={"api_key": "other-key"}, api_base="x"
    )
    body = v2_notify(
        settings,
        out_trade_no=order["out_trade_no"],
        total_fee=800,
        appid="wx00000000other0b",
        mch_id="1900000888",
        key="other-key",
        transaction_id="4200000000000000000000000009",
    )
    response = await client.post("/pay/notify/v2/1900000888", content=body)
    assert (response.status_code, response.text) == (200, V2_SUCCESS)
    assert await order_status(client, headers, order["out_trade_no"]) == "CREATED"
    assert await BalanceEntry.all().count() == 0
    [anomaly] = await PayAnomaly.all()
    assert (anomaly.merchant_id, anomaly.kind, anomaly.out_trade_no) == (
        other.merchant.id,
        "unknown_order",
        order["out_trade_no"],
    )
    assert await anomalies(client, admin) == []  # the demo merchant's staff do not see the other merchant's


async def test_a_failure_while_settling_answers_500_writes_nothing_and_the_retry_credits(
    app, client, admin, demo, settings
):
    await use_pay_version("v2")
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-db")
    package = await add_package(client, admin)
    order = (await recharge(client, headers, package_id=package["id"]))["order"]
    await BalanceAccount.filter(member_id=member_id).delete()  # the credit fails inside the settling transaction
    fired = await pay(client, order["out_trade_no"])
    [delivery] = fired["deliveries"]
    assert delivery["status"] == 500 and "not processed" in delivery["body"]
    stored = await PayOrder.get(id=order["id"])
    assert (stored.status, stored.transaction_id, stored.paid_at) == ("CREATED", "", None)
    assert await BalanceEntry.filter(member_id=member_id).count() == 0
    assert await PointsEntry.filter(member_id=member_id).count() == 0
    assert await PayAnomaly.all().count() == 0

    await BalanceAccount.create(merchant_id=demo.merchant.id, member_id=member_id, balance=0)
    retried = await pay(client, order["out_trade_no"])  # WeChat's next attempt
    assert [d["status"] for d in retried["deliveries"]] == [200]
    assert (await me(client, headers))["balance"] == 12_000
    v3_body, v3_headers = v3_notify(
        settings, out_trade_no=order["out_trade_no"], total=10_000, transaction_id=fired["transaction_id"]
    )
    response = await client.post(f"/pay/notify/v3/{settings.wechat.pay.mch_id}", content=v3_body, headers=v3_headers)
    assert response.status_code == 204  # the same payment through the other API version: already paid
    assert json.loads((await client.get("/api/mp/me", headers=headers)).text)["balance"] == 12_000
