"""Members buy packages in the mini-program: WeChat Pay (notify, replays, a retired template) or stored value;
a package paid with WeChat Pay is refunded through a WeChat refund of its unused part."""

from __future__ import annotations

import asyncio
import os

import pytest

from models.kernel.outbox import OutboxMessage
from models.ledger import books as ledger
from models.ledger.books import BalanceAccount, BalanceEntry
from models.members.timeline import MemberActivity as TimelineEvent
from models.packages.tables import MemberPackage
from models.payments.orders import PayAnomaly, PayOrder, PayRefund
from tests.cards.helpers import calls, deliver
from tests.helpers import error_of
from tests.packages.helpers import sell, template, use
from tests.payments.helpers import EMU, pay, paying_member, run_later, use_pay_version, v2_notify
from tests.payments.wallet_helpers import refund as refund_order

REFUND_PATH = {"v2": "/secapi/pay/refund", "v3": "/v3/refund/domestic/refunds"}
on_mariadb = pytest.mark.skipif(
    not os.environ.get("HUIYUAN_DATABASE__URL", "").startswith("mysql://"), reason="row locks need MariaDB"
)


async def _order(client, headers, template_id: int, **body) -> dict:
    response = await client.post("/api/mp/package-orders", json={"template_id": template_id, **body}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["order"]


async def _mine(client, headers) -> list[dict]:
    response = await client.get("/api/mp/me/packages", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def _bought(app, client, admin, demo, *, openid: str, version: str = "v2", **fields) -> tuple[int, dict, dict]:
    """A member buys a 10-use package of 300.00 with WeChat Pay, the notify delivered: (member, headers, order)."""
    await use_pay_version(version)
    tpl = await template(client, admin, **fields)
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid=openid)
    order = await _order(client, headers, tpl["id"])
    fired = await pay(client, order["out_trade_no"])
    assert [d["status"] for d in fired["deliveries"]] == [200 if version == "v2" else 204], fired
    return member_id, headers, order


async def test_the_active_templates_are_listed_with_their_store_coverage(app, client, admin, demo):
    everywhere = await template(client, admin, name="10 次洗剪吹")
    one_store = await template(client, admin, name="月卡", kind="time", days=30, uses=None, valid_days=None,
                               store_ids=[demo.store.id])  # fmt: skip
    await template(client, admin, name="旧套餐", status="retired")
    _, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="o_mp_list")
    response = await client.get("/api/mp/package-templates", headers=headers)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [(i["id"], i["kind"], i["price"], i["store_ids"], i["all_stores"]) for i in items] == [
        (one_store["id"], "time", 30_000, [demo.store.id], False),
        (everywhere["id"], "uses", 30_000, [], True),
    ]
    assert (await client.get("/api/mp/package-templates", headers=admin)).status_code == 403


@pytest.mark.parametrize("version", ["v2", "v3"])
async def test_buy_with_wechat_pay_then_replayed_notifies_deliver_one_package(
    app, client, admin, demo, settings, version
):
    await use_pay_version(version)
    tpl = await template(client, admin)
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid=f"o_mp_buy_{version}")
    order = await _order(client, headers, tpl["id"], store_id=demo.store.id)
    assert (order["kind"], order["amount"], order["status"], order["package_id"]) == (
        "package",
        30_000,
        "CREATED",
        None,
    )
    snapshot = (await PayOrder.get(id=order["id"])).snapshot
    assert (snapshot["template"]["template_id"], snapshot["template"]["uses"], snapshot["store_id"]) == (
        tpl["id"],
        10,
        demo.store.id,
    )
    assert await _mine(client, headers) == []

    fired = await pay(client, order["out_trade_no"], repeat=3)  # WeChat delivers the same notify three times
    ack = 200 if version == "v2" else 204  # v3 acknowledges with no body
    assert [d["status"] for d in fired["deliveries"]] == [ack, ack, ack], fired
    paid = await PayOrder.get(id=order["id"])
    assert paid.status == "PAID"
    packages = await MemberPackage.filter(member_id=member_id)
    rows = [
        (p.sale_key, p.uses_left, p.price_paid, p.payments, p.balance_paid, p.store_id, p.sold_by) for p in packages
    ]
    assert rows == [
        (f"pay:{order['id']}", 10, 30_000, [{"method": "wechat", "amount": 30_000}], 0, demo.store.id, None)
    ]
    mine = await _mine(client, headers)
    assert [(p["id"], p["name"], p["uses_total"], p["uses_left"], p["status"]) for p in mine] == [
        (packages[0].id, "10 haircuts", 10, 10, "active")
    ]
    if version == "v2":  # a replay days later, signed like the first, with the same transaction
        body = v2_notify(
            settings, out_trade_no=order["out_trade_no"], total_fee=30_000, transaction_id=paid.transaction_id
        )
        replay = await client.post(f"/pay/notify/v2/{settings.wechat.pay.mch_id}", content=body)
        assert replay.status_code == 200, replay.text
    assert await MemberPackage.filter(member_id=member_id).count() == 1
    assert await BalanceEntry.filter(member_id=member_id).count() == 0  # nothing touched the stored value
    assert await PayAnomaly.all().count() == 0
    listed = await client.get("/api/pay-orders", params={"kind": "package"}, headers=admin)
    assert [(o["id"], o["kind"]) for o in listed.json()["items"]] == [(order["id"], "package")]


async def test_a_template_retired_and_changed_after_the_order_still_delivers_what_was_paid(app, client, admin, demo):
    await use_pay_version("v2")
    tpl = await template(client, admin)
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="o_mp_retired")
    order = await _order(client, headers, tpl["id"])
    changed = await client.patch(
        f"/api/package-templates/{tpl['id']}", json={"status": "retired", "price": 50_000, "uses": 5}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    await pay(client, order["out_trade_no"])
    assert (await PayOrder.get(id=order["id"])).status == "PAID"
    package = await MemberPackage.get(member_id=member_id)
    assert (package.uses_total, package.uses_left, package.price_paid, package.status) == (10, 10, 30_000, "active")
    # a new order of the retired template is refused before anything is written
    late = await client.post("/api/mp/package-orders", json={"template_id": tpl["id"]}, headers=headers)
    assert (late.status_code, error_of(late)["code"]) == (409, "package.template_retired")
    assert await PayOrder.filter(member_id=member_id).count() == 1


async def test_a_lost_notify_is_settled_by_reconciliation_with_the_package(app, client, admin, demo):
    await use_pay_version("v3")
    tpl = await template(client, admin, kind="time", days=30, uses=None, valid_days=None, price=9_900)
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="o_mp_lost")
    order = await _order(client, headers, tpl["id"])
    assert (await pay(client, order["out_trade_no"], deliver=False))["deliveries"] == []
    assert await run_later(app, "payments.reconcile", minutes=6) == "reconciled: settled 1"
    mine = await _mine(client, headers)
    assert [(p["kind"], p["status"], p["valid_until"] is not None) for p in mine] == [("time", "active", True)]
    package = await MemberPackage.get(member_id=member_id)
    assert (package.days_total, package.price_paid, package.sale_key) == (30, 9_900, f"pay:{order['id']}")


async def test_orders_that_cannot_be_paid_are_refused(app, client, admin, demo):
    _, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="o_mp_refused")
    free = await template(client, admin, price=0)
    other_store = await client.post("/api/stores", json={"code": "S2", "name": "Store 2"}, headers=admin)
    bound = await template(client, admin, store_ids=[other_store.json()["id"]])
    cases = [
        ({"template_id": free["id"]}, 409, "package.free"),
        ({"template_id": bound["id"], "store_id": demo.store.id}, 422, "package.store_not_covered"),
        ({"template_id": 987_654}, 404, "package.template_not_found"),
    ]
    for body, status, code in cases:
        response = await client.post("/api/mp/package-orders", json=body, headers=headers)
        assert (response.status_code, error_of(response)["code"]) == (status, code), response.text
    assert await PayOrder.all().count() == 0
    # the till may not take a key of the WeChat Pay path: it would stand for the order's package
    member_id = (await client.post("/api/members/", json={"name": "Han Meimei"}, headers=admin)).json()["id"]
    till = await sell(
        client, admin, member_id, bound["id"], key="pay:1", payments=[{"method": "cash", "amount": 30_000}]
    )
    assert (till.status_code, error_of(till)["code"]) == (422, "package.sale_key_reserved")


@on_mariadb
async def test_concurrent_duplicate_notifies_deliver_one_package_per_order(app, client, admin, demo):
    await use_pay_version("v2")
    tpl = await template(client, admin)
    buyers = [await paying_member(app, merchant_id=demo.merchant.id, mp_openid=f"o_mp_conc{n}") for n in range(5)]
    orders = [await _order(client, headers, tpl["id"]) for _, headers in buyers for _ in range(2)]
    fired = await asyncio.gather(*(pay(client, o["out_trade_no"], repeat=4, concurrent=True) for o in orders))
    assert {d["status"] for f in fired for d in f["deliveries"]} == {200}
    assert len([d for f in fired for d in f["deliveries"]]) == 40
    assert await PayOrder.filter(status="PAID", kind="package").count() == 10
    keys = sorted(await MemberPackage.all().values_list("sale_key", flat=True))
    assert keys == sorted(f"pay:{o['id']}" for o in orders)
    for member_id, headers in buyers:
        assert [p["uses_left"] for p in await _mine(client, headers)] == [10, 10]
        assert await TimelineEvent.filter(member_id=member_id, kind="package_sold").count() == 2
    assert await PayAnomaly.all().count() == 0


async def test_buy_with_stored_value_and_too_little_is_409_with_nothing_written(app, client, admin, demo):
    tpl = await template(client, admin)
    rich_id, rich = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="o_mp_rich")
    poor_id, poor = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="o_mp_poor")
    for member_id, fen in ((rich_id, 50_000), (poor_id, 29_999)):
        await ledger.change_balance(
            merchant_id=demo.merchant.id, member_id=member_id, delta=fen, kind="recharge", reason="充值",
            idempotency_key=f"r-{member_id}",
        )  # fmt: skip
    body = {"template_id": tpl["id"], "idempotency_key": "buy-1"}
    bought = await client.post("/api/mp/packages", json=body, headers=rich)
    assert bought.status_code == 201, bought.text
    package = bought.json()
    assert (package["member_id"], package["uses_left"], package["balance_paid"], package["payments"]) == (
        rich_id,
        10,
        30_000,
        [{"method": "balance", "amount": 30_000}],
    )
    again = await client.post("/api/mp/packages", json=body, headers=rich)
    assert (again.status_code, again.json()["id"]) == (200, package["id"])
    assert (await BalanceAccount.get(member_id=rich_id)).balance == 20_000
    assert [(p["id"], p["uses_left"]) for p in await _mine(client, rich)] == [(package["id"], 10)]
    # the other member's same key is their own purchase, and 0.01 short is refused whole
    short = await client.post("/api/mp/packages", json=body, headers=poor)
    assert (short.status_code, error_of(short)["code"]) == (409, "balance.insufficient")
    assert await MemberPackage.filter(member_id=poor_id).count() == 0
    assert (await BalanceAccount.get(member_id=poor_id)).balance == 29_999
    assert await BalanceEntry.filter(member_id=poor_id).count() == 1
    assert await TimelineEvent.filter(member_id=poor_id, kind="package_sold").count() == 0
    # a package paid with stored value is refunded to it, as at the till (no WeChat refund)
    refunded = await client.post(
        f"/api/members/{rich_id}/packages/{package['id']}/refund", json={"idempotency_key": "rf"}, headers=admin
    )
    assert (refunded.status_code, refunded.json()["refund_balance"]) == (200, 30_000), refunded.text
    assert (await BalanceAccount.get(member_id=rich_id)).balance == 50_000
    assert await PayRefund.all().count() == 0
    # the longest key the schema allows is a purchase of its own; one longer is 422 (found by the member fuzz pass)
    longest = await client.post("/api/mp/packages", json={**body, "idempotency_key": "k" * 100}, headers=rich)
    assert longest.status_code == 201, longest.text
    too_long = await client.post("/api/mp/packages", json={**body, "idempotency_key": "k" * 101}, headers=rich)
    assert (too_long.status_code, error_of(too_long)["field"]) == (422, "idempotency_key")


@pytest.mark.parametrize("version", ["v2", "v3"])
async def test_refund_after_three_of_ten_uses_sends_seven_tenths_back_through_wechat(app, client, admin, demo, version):
    member_id, headers, order = await _bought(app, client, admin, demo, openid=f"o_mp_rf_{version}", version=version)
    package_id = (await MemberPackage.get(member_id=member_id)).id
    for n in range(3):
        assert (await use(client, admin, member_id, package_id, f"visit-{n}")).status_code == 201
    assert [p["uses_left"] for p in await _mine(client, headers)] == [7]

    url = f"/api/members/{member_id}/packages/{package_id}/refund"
    response = await client.post(url, json={"idempotency_key": "pkg-rf-1"}, headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["refund_amount"], body["refund_balance"], body["uses_left"]) == (
        "refunded",
        21_000,
        0,
        7,
    )
    refund = await PayRefund.get(order_id=order["id"])
    assert (refund.amount, refund.status, refund.forfeited_bonus) == (21_000, "PENDING", 0)
    assert (await PayOrder.get(id=order["id"])).status == "REFUNDING"
    assert await OutboxMessage.filter(topic="pay.refund").values_list("payload", flat=True) == [
        {"refund_id": refund.id}
    ]
    assert await BalanceEntry.filter(member_id=member_id).count() == 0  # no stored value, no cash: WeChat Pay
    assert [p["status"] for p in await _mine(client, headers)] == ["refunded"]

    assert await deliver(app) >= 1
    sent = await calls(client, REFUND_PATH[version])
    assert len(sent) == 1
    if version == "v2":
        call = sent[0]["body"]
        assert (call["refund_fee"], call["total_fee"], call["out_trade_no"]) == (
            "21000",
            "30000",
            order["out_trade_no"],
        )
    else:
        assert sent[0]["body"]["amount"] == {"refund": 21_000, "total": 30_000, "currency": "CNY"}
    settled = await client.post(f"{EMU}/control/refund-success", json={"out_refund_no": refund.out_refund_no})
    assert settled.status_code == 200, settled.text
    paid_back = await PayOrder.get(id=order["id"])
    assert (paid_back.status, paid_back.refunded_amount) == ("REFUNDED", 21_000)

    repeat = await client.post(url, json={"idempotency_key": "pkg-rf-1"}, headers=admin)
    assert (repeat.status_code, repeat.json()["status"]) == (200, "refunded")
    second = await client.post(url, json={"idempotency_key": "pkg-rf-2"}, headers=admin)
    assert (second.status_code, error_of(second)["code"]) == (409, "package.refunded")
    by_order = await refund_order(client, admin, order["id"], key="pkg-rf-3")
    assert (by_order.status_code, error_of(by_order)["code"]) == (409, "refund.not_refundable")
    late_use = await use(client, admin, member_id, package_id, "visit-late")
    assert (late_use.status_code, error_of(late_use)["code"]) == (409, "package.refunded")
    assert await PayRefund.all().count() == 1
    assert len(await calls(client, REFUND_PATH[version])) == 1


async def test_refunding_the_pay_order_closes_its_package_and_a_failed_one_is_retried_not_cancelled(
    app, client, admin, demo
):
    member_id, _, order = await _bought(app, client, admin, demo, openid="o_mp_rf_order")
    response = await refund_order(client, admin, order["id"])
    assert response.status_code == 201, response.text
    assert response.json()["refund"]["amount"] == 30_000
    package = await MemberPackage.get(member_id=member_id)
    assert (package.status, package.refund_amount) == ("refunded", 30_000)
    fault = {"path": "/secapi/pay/refund", "errcode": "NOTENOUGH", "errmsg": "基本账户余额不足"}
    assert (await client.post(f"{EMU}/control/fail-next", json=fault)).status_code == 200
    await deliver(app)
    refund_id = response.json()["refund"]["id"]
    assert (await PayRefund.get(id=refund_id)).status == "FAILED"
    cancelled = await client.post(f"/api/pay-refunds/{refund_id}/cancel", headers=admin)
    assert (cancelled.status_code, error_of(cancelled)["code"]) == (409, "refund.not_cancellable")
    retried = await client.post(f"/api/pay-refunds/{refund_id}/retry", headers=admin)
    assert (retried.status_code, retried.json()["status"]) == (200, "PENDING"), retried.text
    assert (await PayOrder.get(id=order["id"])).status == "REFUNDING"
    assert (await MemberPackage.get(id=package.id)).status == "refunded"


@on_mariadb
async def test_concurrent_refunds_of_a_wechat_paid_package_send_one_wechat_refund(app, client, admin, demo):
    member_id, _, order = await _bought(app, client, admin, demo, openid="o_mp_rf_conc")
    package_id = (await MemberPackage.get(member_id=member_id)).id
    url = f"/api/members/{member_id}/packages/{package_id}/refund"

    async def refund(key: str):
        return await client.post(url, json={"idempotency_key": key}, headers=admin)

    racing = await asyncio.gather(*(refund(f"key-{n}") for n in range(6)))
    assert sorted(r.status_code for r in racing) == [200] + [409] * 5, [r.text for r in racing]
    # a loser saw the package refunded, or the order already being refunded
    assert {error_of(r)["code"] for r in racing if r.status_code == 409} <= {
        "package.refunded",
        "refund.not_refundable",
    }
    winner = next(n for n, r in enumerate(racing) if r.status_code == 200)
    again = await asyncio.gather(*(refund(f"key-{winner}") for _ in range(4)))  # the winner's request, resent at once
    assert {(r.status_code, r.json()["refund_amount"]) for r in again} == {(200, 30_000)}
    refunds = await PayRefund.filter(order_id=order["id"])
    assert [(r.amount, r.status) for r in refunds] == [(30_000, "PENDING")]
    assert await OutboxMessage.filter(topic="pay.refund").count() == 1


@on_mariadb
async def test_a_refund_racing_visits_refunds_what_the_visits_left(app, client, admin, demo):
    member_id, _, order = await _bought(app, client, admin, demo, openid="o_mp_rf_race")
    package_id = (await MemberPackage.get(member_id=member_id)).id
    url = f"/api/members/{member_id}/packages/{package_id}/refund"
    visits = [use(client, admin, member_id, package_id, f"v-{n}") for n in range(4)]
    answers = await asyncio.gather(*visits, client.post(url, json={"idempotency_key": "race"}, headers=admin))
    package = await MemberPackage.get(id=package_id)
    refunds = await PayRefund.filter(order_id=order["id"])
    if answers[-1].status_code == 200:  # the refund closed the package: it paid back exactly the uses left
        assert package.status == "refunded"
        assert [r.amount for r in refunds] == [30_000 * package.uses_left // 10]
        assert (await PayOrder.get(id=order["id"])).status == "REFUNDING"
    else:  # a visit changed the package in between: nothing of the refund was written
        assert (answers[-1].status_code, error_of(answers[-1])["code"]) == (409, "package.changed")
        assert (refunds, package.status) == ([], "active")
        assert (await PayOrder.get(id=order["id"])).status == "PAID"
    assert package.uses_left == 10 - sum(a.status_code == 201 for a in answers[:-1])
