"""Catalogue and checkout: packages and plans, orders with the amount fixed server-side, JSAPI prepay v2/v3."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from models.members.members import Member
from models.payments.orders import PayAnomaly, PayOrder, record_anomaly
from tests.cards.helpers import member_headers
from tests.helpers import add_member, add_staff, add_store, error_of
from tests.payments.helpers import (
    EMU,
    add_package,
    add_plan,
    buy_plan,
    paying_member,
    recharge,
    use_pay_version,
)
from wechat.emulator import merchant_public_key_pem
from wechat.paysign import v2_sign


def _calls(app, path: str) -> list[dict]:
    return [c for c in app.blueprints["wechat_emulator"].ctx.state.calls if c["path"] == path]


async def test_packages_are_managed_by_managers_and_validated(client, admin, demo):
    package = await add_package(client, admin, per_member_limit=2, sort=5)
    assert {k: package[k] for k in ("name", "price", "bonus_balance", "bonus_points", "per_member_limit")} == {
        "name": "充100送20",
        "price": 10_000,
        "bonus_balance": 2_000,
        "bonus_points": 50,
        "per_member_limit": 2,
    }
    changed = {"name": "充200送50", "price": 20_000, "bonus_balance": 5_000, "is_active": False}
    response = await client.put(f"/api/recharge-packages/{package['id']}", json=changed, headers=admin)
    assert response.status_code == 200, response.text
    assert (response.json()["price"], response.json()["is_active"], response.json()["bonus_points"]) == (
        20_000,
        False,
        0,
    )
    listed = (await client.get("/api/recharge-packages", headers=admin)).json()["items"]
    assert [(p["name"], p["price"]) for p in listed] == [("充200送50", 20_000)]

    bad = {
        "price": ({"price": 0}, "price"),
        "negative bonus": ({"bonus_balance": -1}, "bonus_balance"),
        "float price": ({"price": 100.5}, "price"),
        "unknown field": ({"amount": 1}, "amount"),
        "naive time": ({"valid_from": "2026-01-01T00:00:00"}, "valid_from"),
    }
    for name, (fields, field) in bad.items():
        response = await client.post(
            "/api/recharge-packages", json={"name": "x", "price": 100, **fields}, headers=admin
        )
        assert response.status_code == 422, name
        assert error_of(response)["field"] == field, name
    window = {"name": "x", "price": 100, "valid_from": "2026-02-01T00:00:00Z", "valid_until": "2026-01-01T00:00:00Z"}
    response = await client.post("/api/recharge-packages", json=window, headers=admin)
    assert error_of(response)["code"] == "recharge_package.window_invalid"
    response = await client.post(
        "/api/recharge-packages", json={"name": "x", "price": 1, "gift_tier_id": 999}, headers=admin
    )
    assert error_of(response)["code"] == "tier.not_found"
    assert (await client.put("/api/recharge-packages/999999", json=changed, headers=admin)).status_code == 404

    store_id = await add_store(client, admin, code="S002")
    cashier = await add_staff(client, admin, username="cashier1", role="cashier", store_id=store_id)
    assert (await client.get("/api/recharge-packages", headers=cashier)).status_code == 200
    assert (await client.post("/api/recharge-packages", json=changed, headers=cashier)).status_code == 403


async def test_plans_have_unique_codes_and_valid_terms(client, admin):
    plan = await add_plan(client, admin, points_multiplier_permille=1500, benefits={"free_items": ["c1"]})
    assert (plan["period"], plan["refund_rule"], plan["points_multiplier_permille"]) == ("month", "pro_rata", 1500)
    duplicate = await client.post("/api/paid-plans", json={**plan_body(), "name": "again"}, headers=admin)
    assert (duplicate.status_code, error_of(duplicate)["code"]) == (409, "paid_plan.code_taken")
    for fields, field in (
        ({"period": "week"}, "period"),
        ({"points_multiplier_permille": 0}, "points_multiplier_permille"),
        ({"refund_rule": "all"}, "refund_rule"),
        ({"price": -5}, "price"),
    ):
        response = await client.post("/api/paid-plans", json={**plan_body(), "code": "X", **fields}, headers=admin)
        assert (response.status_code, error_of(response)["field"]) == (422, field)
    year = {**plan_body(), "code": "PLUS-Y", "period": "year", "price": 19_900, "refund_rule": "none"}
    response = await client.put(f"/api/paid-plans/{plan['id']}", json=year, headers=admin)
    assert (response.json()["code"], response.json()["price"], response.json()["refund_rule"]) == (
        "PLUS-Y",
        19_900,
        "none",
    )
    assert [p["code"] for p in (await client.get("/api/paid-plans", headers=admin)).json()["items"]] == ["PLUS-Y"]


def plan_body() -> dict:
    return {"code": "PLUS-M", "name": "PLUS 月卡", "period": "month", "price": 1_900}


async def test_member_sees_packages_on_sale_with_remaining_allowance(app, client, admin, demo):
    now = datetime.now(UTC)
    limited = await add_package(client, admin, name="首充", price=100, per_member_limit=1, sort=1)
    await add_package(client, admin, name="常规", price=5_000, sort=2)
    await add_package(client, admin, name="下架", price=100, is_active=False)
    await add_package(client, admin, name="未开始", price=100, valid_from=(now + timedelta(days=1)).isoformat())
    await add_package(client, admin, name="已结束", price=100, valid_until=(now - timedelta(days=1)).isoformat())
    await add_plan(client, admin)
    await add_plan(client, admin, code="OLD", is_active=False)
    _, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-1")
    offers = (await client.get("/api/mp/recharge-packages", headers=headers)).json()
    assert [(p["name"], p["remaining"]) for p in offers["items"]] == [("首充", 1), ("常规", None)]
    assert offers["custom_amount"] == {"min": 1, "max": 500_000}
    await recharge(client, headers, package_id=limited["id"])
    offers = (await client.get("/api/mp/recharge-packages", headers=headers)).json()
    assert [(p["name"], p["remaining"]) for p in offers["items"]] == [("首充", 0), ("常规", None)]
    plans = (await client.get("/api/mp/paid-plans", headers=headers)).json()["items"]
    assert [p["code"] for p in plans] == ["PLUS-M"]
    assert (await client.get("/api/mp/paid-plans", headers=admin)).status_code == 403


@pytest.mark.parametrize("sign_type", ["MD5", "HMAC-SHA256"])
async def test_v2_recharge_order_prepays_and_signs_request_payment(app, client, admin, demo, settings, sign_type):
    await use_pay_version("v2", sign_type=sign_type)
    package = await add_package(client, admin)
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-v2")
    created = await recharge(client, headers, package_id=package["id"])
    order = created["order"]
    assert (order["status"], order["amount"], order["bonus_balance"], order["bonus_points"]) == (
        "CREATED",
        10_000,
        2_000,
        50,
    )
    assert order["api_version"] == "v2" and len(order["out_trade_no"]) == 28
    [call] = _calls(app, "/pay/unifiedorder")
    sent = call["body"]
    assert (sent["out_trade_no"], sent["total_fee"], sent["openid"], sent["trade_type"]) == (
        order["out_trade_no"],
        "10000",
        "mp-v2",
        "JSAPI",
    )
    assert sent["notify_url"] == f"http://huiyuan.test/pay/notify/v2/{settings.wechat.pay.mch_id}"
    assert sent["appid"] == settings.wechat.miniprogram.appid
    params = created["pay_params"]
    stored = await PayOrder.get(out_trade_no=order["out_trade_no"])
    assert params["package"] == f"prepay_id={stored.prepay_id}" and stored.prepay_id.startswith("wx")
    assert params["signType"] == sign_type and params["appId"] == settings.wechat.miniprogram.appid
    unsigned = {k: v for k, v in params.items() if k != "paySign"}
    assert params["paySign"] == v2_sign(unsigned, key=settings.wechat.pay.api_key, sign_type=sign_type)
    assert (stored.member_id, stored.snapshot["package"]["name"], stored.openid) == (member_id, "充100送20", "mp-v2")
    assert timedelta(minutes=29) < stored.expires_at - stored.created_at <= timedelta(minutes=30)


async def test_v3_plan_order_prepays_with_rsa_pay_sign(app, client, admin, demo, settings):
    plan = await add_plan(client, admin)
    _, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-v3")
    created = await buy_plan(client, headers, plan["id"])
    order, params = created["order"], created["pay_params"]
    assert (order["kind"], order["amount"], order["api_version"], order["plan_id"]) == ("plan", 1_900, "v3", plan["id"])
    [call] = _calls(app, "/v3/pay/transactions/jsapi")
    assert call["body"]["amount"] == {"total": 1_900, "currency": "CNY"}
    assert call["body"]["payer"] == {"openid": "mp-v3"}
    assert call["body"]["notify_url"] == f"http://huiyuan.test/pay/notify/v3/{settings.wechat.pay.mch_id}"
    assert params["signType"] == "RSA"
    message = f"{params['appId']}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n"
    public_key = serialization.load_pem_public_key(merchant_public_key_pem())
    assert isinstance(public_key, RSAPublicKey)
    signature = base64.b64decode(params["paySign"])
    public_key.verify(signature, message.encode(), padding.PKCS1v15(), hashes.SHA256())  # raises if forged


async def test_order_rules_amount_openid_limit_and_window(app, client, admin, demo):
    package = await add_package(client, admin, per_member_limit=2)
    _, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-r")
    cases = [
        ({"package_id": package["id"], "amount": 1}, 422, "recharge.package_or_amount"),
        ({}, 422, "recharge.package_or_amount"),
        ({"amount": 500_001}, 422, "recharge.amount_invalid"),
        ({"amount": 0}, 422, "validation.failed"),
        ({"amount": "100"}, 422, "validation.failed"),
        ({"package_id": 999_999}, 404, "recharge_package.not_found"),
    ]
    for body, status, code in cases:
        response = await client.post("/api/mp/recharge-orders", json=body, headers=headers)
        assert (response.status_code, error_of(response)["code"]) == (status, code), body
    custom = await recharge(client, headers, amount=12_345)
    assert (custom["order"]["amount"], custom["order"]["bonus_balance"], custom["order"]["package_id"]) == (
        12_345,
        0,
        None,
    )
    # two concurrent orders against a limit of 2, then one more: the third is refused
    await asyncio.gather(*(recharge(client, headers, package_id=package["id"]) for _ in range(2)))
    response = await client.post("/api/mp/recharge-orders", json={"package_id": package["id"]}, headers=headers)
    assert (response.status_code, error_of(response)["code"]) == (409, "recharge_package.limit_reached")
    # an expired unpaid order no longer counts
    oldest = await PayOrder.filter(package_id=package["id"]).order_by("id").first()
    assert oldest is not None
    await PayOrder.filter(id=oldest.id).update(expires_at=datetime.now(UTC) - timedelta(minutes=1))
    await recharge(client, headers, package_id=package["id"])

    later = await add_package(client, admin, valid_from=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    response = await client.post("/api/mp/recharge-orders", json={"package_id": later["id"]}, headers=headers)
    assert (response.status_code, error_of(response)["code"]) == (409, "recharge_package.not_on_sale")

    staff_made = await add_member(client, admin, phone="13900000001")
    no_openid = member_headers(app, member_id=staff_made["id"], merchant_id=demo.merchant.id)
    response = await client.post("/api/mp/recharge-orders", json={"package_id": package["id"]}, headers=no_openid)
    assert (response.status_code, error_of(response)["code"]) == (409, "payments.mp_openid_required")
    assert await PayOrder.filter(member_id=staff_made["id"]).count() == 0
    assert (await client.post("/api/mp/recharge-orders", json={"amount": 100}, headers=admin)).status_code == 403


@pytest.mark.parametrize(
    ("fault", "status", "code", "says"),
    [
        ({"errcode": "NOAUTH", "status": 403}, 502, "wechat.api_error", "NOAUTH"),
        ({"errcode": "SYSTEM_ERROR", "status": 500}, 503, "wechat.unavailable", "unavailable"),
        # WeChat Pay's 401 for a wrong merchant key is unsigned: the cause is named, not "signature does not verify"
        ({"errcode": "SIGN_ERROR", "status": 401, "unsigned": True}, 502, "wechat.api_error", "request signature"),
        ({"status": 502, "raw": "<html><body>502 Bad Gateway</body></html>"}, 503, "wechat.unavailable", "unavail"),
    ],
)
async def test_a_wechat_failure_answers_5xx_and_leaves_the_order_created(app, client, demo, fault, status, code, says):
    _, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-f")
    response = await client.post(
        f"{EMU}/control/fail-next", json={"path": "/v3/pay/transactions/jsapi", "times": 1, **fault}
    )
    assert response.status_code == 200, response.text
    response = await client.post("/api/mp/recharge-orders", json={"amount": 100}, headers=headers)
    assert (response.status_code, error_of(response)["code"]) == (status, code)
    assert says in error_of(response)["message"]
    [order] = await PayOrder.all()
    assert (order.status, order.prepay_id, order.amount) == ("CREATED", "", 100)


async def test_members_see_only_their_orders_and_staff_list_them(app, client, admin, demo):
    alice_id, alice = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-a")
    bob_id, bob = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-b")
    a1 = (await recharge(client, alice, amount=100))["order"]
    a2 = (await recharge(client, alice, amount=200))["order"]
    b1 = (await recharge(client, bob, amount=300))["order"]
    mine = await client.get(f"/api/mp/orders/{a1['out_trade_no']}", headers=alice)
    assert (mine.status_code, mine.json()["status"], mine.json()["amount"]) == (200, "CREATED", 100)
    theirs = await client.get(f"/api/mp/orders/{b1['out_trade_no']}", headers=alice)
    assert (theirs.status_code, error_of(theirs)["code"]) == (404, "pay_order.not_found")

    page = (await client.get("/api/pay-orders", params={"limit": 2}, headers=admin)).json()
    assert [o["id"] for o in page["items"]] == [b1["id"], a2["id"]] and page["next_before_id"] == a2["id"]
    rest = (await client.get("/api/pay-orders", params={"before_id": a2["id"]}, headers=admin)).json()
    assert [o["id"] for o in rest["items"]] == [a1["id"]] and rest["next_before_id"] is None
    by_member = (await client.get("/api/pay-orders", params={"member_id": bob_id}, headers=admin)).json()["items"]
    assert [(o["id"], o["member_id"]) for o in by_member] == [(b1["id"], bob_id)]
    paid = (await client.get("/api/pay-orders", params={"status": "PAID"}, headers=admin)).json()["items"]
    assert paid == []
    one = await client.get(f"/api/pay-orders/{a1['id']}", headers=admin)
    assert (one.json()["member_id"], one.json()["out_trade_no"], one.json()["mch_id"]) == (
        alice_id,
        a1["out_trade_no"],
        "1900000109",
    )
    assert (await client.get("/api/pay-orders/999999", headers=admin)).status_code == 404
    bad = await client.get("/api/pay-orders", params={"status": "LOST"}, headers=admin)
    assert bad.status_code == 422
    store_id = await add_store(client, admin, code="S009")
    manager = await add_staff(client, admin, username="mgr9", role="store_manager", store_id=store_id)
    assert (await client.get("/api/pay-orders", headers=manager)).json()["items"] == []
    assert (await client.get(f"/api/pay-orders/{a1['id']}", headers=manager)).status_code == 404


async def test_a_store_manager_sees_and_resolves_only_the_anomalies_of_its_own_members(app, client, admin, demo):
    here_id, here = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-here")
    there_id, there = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-there")
    other_store = await add_store(client, admin, code="S010")
    await Member.filter(id=here_id).update(origin_store_id=demo.store.id)
    await Member.filter(id=there_id).update(origin_store_id=other_store)
    for member_headers_, name in ((here, "here"), (there, "there")):
        order = (await recharge(client, member_headers_, amount=100))["order"]
        await record_anomaly(
            merchant_id=demo.merchant.id,
            kind="amount_mismatch",
            dedupe_key=f"test:{name}",
            out_trade_no=order["out_trade_no"],
            detail={"who": name},
        )
    await record_anomaly(merchant_id=demo.merchant.id, kind="unknown_order", dedupe_key="test:x", detail={})
    manager = await add_staff(client, admin, username="mgr10", role="store_manager", store_id=demo.store.id)
    everything = (await client.get("/api/pay-anomalies", headers=admin)).json()["items"]
    assert sorted(a["detail"].get("who", "-") for a in everything) == ["-", "here", "there"]
    mine = (await client.get("/api/pay-anomalies", headers=manager)).json()["items"]
    assert [a["detail"]["who"] for a in mine] == ["here"]
    theirs = next(a for a in everything if a["detail"].get("who") == "there")
    refused = await client.post(f"/api/pay-anomalies/{theirs['id']}/resolve", json={"note": "x"}, headers=manager)
    assert (refused.status_code, error_of(refused)["code"]) == (404, "pay_anomaly.not_found")
    assert await PayAnomaly.filter(id=theirs["id"], resolved=False).exists()
    done = await client.post(f"/api/pay-anomalies/{mine[0]['id']}/resolve", json={"note": "ok"}, headers=manager)
    assert done.status_code == 200, done.text


async def test_an_out_trade_no_longer_than_any_is_404_not_500(app, client, demo):
    _, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-long")
    response = await client.get(f"/api/mp/orders/{'H' * 33}", headers=headers)
    assert (response.status_code, error_of(response)["code"]) == (404, "not_found")
