"""A refunded recharge takes back its package's unused gift coupons; plan and tier coupon packs are validated."""

from __future__ import annotations

from typing import Any

import httpx

from models.coupons.tables import CouponTemplate
from tests.cards.helpers import deliver
from tests.coupons.helpers import add_template
from tests.helpers import error_of, other_merchant
from tests.payments.helpers import EMU, add_package, add_plan, pay, paying_member, recharge, use_pay_version
from tests.payments.wallet_helpers import refund, refund_row
from tests.tiers.helpers import add_tier, tier_body

REFUND_PATH = "/v3/refund/domestic/refunds"


async def _coupons(client: httpx.AsyncClient, admin: dict[str, str], member_id: int) -> dict[int, str]:
    response = await client.get(f"/api/members/{member_id}/coupons", headers=admin)
    assert response.status_code == 200, response.text
    return {c["id"]: c["status"] for c in response.json()["items"]}


async def _paid_order(client: httpx.AsyncClient, headers: dict[str, str], package_id: int) -> dict[str, Any]:
    order = (await recharge(client, headers, package_id=package_id))["order"]
    await pay(client, order["out_trade_no"])
    return order


async def _gift_pack(app: Any, client: httpx.AsyncClient, admin: dict[str, str], demo: Any, openid: str):
    """A member who paid two orders of a package giving 3 gift coupons each: (member, headers, order 1, 2)."""
    await use_pay_version("v3")
    template = await add_template(client, admin, channels=["gift"], total_stock=None)
    package = await add_package(client, admin, gifts={"coupons": [{"template_id": template["id"], "quantity": 3}]})
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid=openid)
    first = await _paid_order(client, headers, package["id"])
    second = await _paid_order(client, headers, package["id"])
    return member_id, headers, first, second


async def test_a_recharge_refund_voids_the_unused_gift_coupons_and_keeps_the_used_one(app, client, admin, demo):
    member_id, _, first, second = await _gift_pack(app, client, admin, demo, "mp-takeback-1")
    held = await _coupons(client, admin, member_id)
    assert sorted(held.values()) == ["usable"] * 6
    first_ids, second_ids = sorted(held)[:3], sorted(held)[3:]  # issued in order of payment

    # the member uses one of the first order's coupons at the till (满100减20 on 150.00)
    till = {
        "store_id": demo.store.id,
        "member_id": member_id,
        "items": [{"sku": "T1", "name": "Tea", "category": "drink", "unit_price": 15000, "quantity": 1}],
        "coupon_id": first_ids[0],
        "idempotency_key": "till-takeback-1",
        "payments": [{"method": "cash", "amount": 13000}],
    }
    settled = await client.post("/api/pos/orders", json=till, headers=admin)
    assert settled.status_code == 201, settled.text

    response = await refund(client, admin, first["id"])
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["coupons_voided"], body["coupons_kept_used"]) == (2, 1)
    after = await _coupons(client, admin, member_id)
    assert {i: after[i] for i in first_ids} == {first_ids[0]: "used", first_ids[1]: "voided", first_ids[2]: "voided"}
    assert [after[i] for i in second_ids] == ["usable"] * 3  # the other order's pack is untouched

    # a voided coupon is no longer usable at the till
    quote = await client.post("/api/pos/quote", json={**till, "coupon_id": first_ids[1]}, headers=admin)
    assert 400 <= quote.status_code < 500, quote.text

    # the same request again is the same refund; the WeChat notify, three times over, changes nothing more
    again = await refund(client, admin, first["id"])
    assert (again.status_code, again.json()["replayed"]) == (200, True)
    assert (again.json()["coupons_voided"], again.json()["coupons_kept_used"]) == (2, 1)
    assert await deliver(app) >= 1
    fired = await client.post(
        f"{EMU}/control/refund-success", json={"out_refund_no": body["refund"]["out_refund_no"], "repeat": 3}
    )
    assert fired.status_code == 200, fired.text
    assert (await refund_row(body["refund"]["id"])).status == "SUCCESS"
    assert await _coupons(client, admin, member_id) == after
    voided = await client.get(f"/api/members/{member_id}/coupons", params={"status": "voided"}, headers=admin)
    assert sorted(c["id"] for c in voided.json()["items"]) == first_ids[1:]


async def test_returning_the_order_after_its_pack_was_refunded_voids_the_coupon(app, client, admin, demo):
    """The member kept the used coupon through the refund once: returning the order gives nothing back."""
    member_id, _, first, _ = await _gift_pack(app, client, admin, demo, "mp-takeback-3")
    coupon_id = sorted(await _coupons(client, admin, member_id))[0]
    till = {
        "store_id": demo.store.id,
        "member_id": member_id,
        "items": [{"sku": "T1", "name": "Tea", "category": "drink", "unit_price": 15000, "quantity": 1}],
        "coupon_id": coupon_id,
        "idempotency_key": "till-takeback-3",
        "payments": [{"method": "cash", "amount": 13000}],
    }
    settled = await client.post("/api/pos/orders", json=till, headers=admin)
    assert settled.status_code == 201, settled.text
    body = (await refund(client, admin, first["id"])).json()
    assert (body["coupons_voided"], body["coupons_kept_used"]) == (2, 1)

    returned = await client.post(
        f"/api/pos/orders/{settled.json()['id']}/returns",
        json={"items": [{"sku": "T1", "quantity": 1}], "idempotency_key": "ret-takeback-3"},
        headers=admin,
    )
    assert returned.status_code == 201, returned.text
    assert returned.json()["coupon_back"] is False
    assert (await _coupons(client, admin, member_id))[coupon_id] == "voided"


async def test_a_cancelled_refund_gives_the_voided_coupons_back(app, client, admin, demo):
    member_id, _, first, _ = await _gift_pack(app, client, admin, demo, "mp-takeback-2")
    before = await _coupons(client, admin, member_id)
    body = (await refund(client, admin, first["id"])).json()
    assert (body["coupons_voided"], body["coupons_kept_used"]) == (3, 0)
    fault = {"path": REFUND_PATH, "errcode": "NOT_ENOUGH", "errmsg": "基本账户余额不足", "status": 403}
    assert (await client.post(f"{EMU}/control/fail-next", json=fault)).status_code == 200
    await deliver(app)
    assert (await refund_row(body["refund"]["id"])).status == "FAILED"
    assert sorted((await _coupons(client, admin, member_id)).values()) == ["usable"] * 3 + ["voided"] * 3
    cancelled = await client.post(f"/api/pay-refunds/{body['refund']['id']}/cancel", headers=admin)
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "CANCELLED")
    assert await _coupons(client, admin, member_id) == before
    # refunded again later: the pack is voided again, once
    later = (await refund(client, admin, first["id"], key="rf-later")).json()
    assert (later["coupons_voided"], later["coupons_kept_used"]) == (3, 0)


async def _foreign_template() -> int:
    other = await other_merchant()
    template = await CouponTemplate.create(
        merchant_id=other.merchant.id, kind="cash", name="theirs", reduction=100, valid_days=3, channels=["gift"]
    )
    return template.id


def _bad_packs(gift_id: int, self_id: int, foreign_id: int) -> list[tuple[list[Any], str, str]]:
    """(coupons, error code, field suffix) of every refused pack entry."""
    return [
        ([{"template_id": self_id}], "coupon_template.not_giftable", ""),
        ([{"template_id": foreign_id, "quantity": 1}], "coupon_template.not_giftable", ""),
        ([{"template_id": 999_999}], "coupon_template.not_giftable", ""),
        ([{"template_id": gift_id, "quantity": 21}], "validation.failed", "quantity"),
        ([{"template_id": gift_id, "quantity": 0}], "validation.failed", "quantity"),
        ([{"template_id": str(gift_id)}], "validation.failed", "template_id"),
        (["silver-welcome"], "validation.failed", ""),
    ]


async def test_plan_coupon_packs_are_gift_templates_of_the_merchant(client, admin):
    gift = await add_template(client, admin, channels=["gift"])
    self_only = await add_template(client, admin, channels=["self"], name="self only")
    foreign = await _foreign_template()
    benefits = {"coupons": [{"template_id": gift["id"], "quantity": 20}], "free_items": ["coffee"]}
    plan = await add_plan(client, admin, benefits=benefits)
    assert plan["benefits"] == benefits
    for coupons, code, suffix in _bad_packs(gift["id"], self_only["id"], foreign):
        body = {"code": "BAD", "name": "bad", "period": "month", "price": 100, "benefits": {"coupons": coupons}}
        created = await client.post("/api/paid-plans", json=body, headers=admin)
        assert (created.status_code, error_of(created)["code"]) == (422, code), (coupons, created.text)
        assert error_of(created)["field"].startswith("benefits.coupons"), created.text
        assert error_of(created)["field"].endswith(suffix), created.text
        changed = await client.put(f"/api/paid-plans/{plan['id']}", json={**body, "code": "PLUS-M"}, headers=admin)
        assert (changed.status_code, error_of(changed)["code"]) == (422, code), (coupons, changed.text)
    listed = (await client.get("/api/paid-plans", headers=admin)).json()["items"]
    assert [(p["code"], p["benefits"]) for p in listed] == [("PLUS-M", benefits)]


async def test_tier_upgrade_gift_coupons_are_gift_templates_of_the_merchant(client, admin):
    gift = await add_template(client, admin, channels=["gift"])
    self_only = await add_template(client, admin, channels=["self"], name="self only")
    foreign = await _foreign_template()
    upgrade_gift = {"points": 10, "balance": 0, "coupons": [{"template_id": gift["id"], "quantity": 2}]}
    tier = await add_tier(client, admin, "silver", 1, 1000, upgrade_gift=upgrade_gift)
    assert tier["upgrade_gift"] == upgrade_gift
    for coupons, code, suffix in _bad_packs(gift["id"], self_only["id"], foreign):
        body = tier_body("gold", 2, 5000, upgrade_gift={"coupons": coupons})
        created = await client.post("/api/tiers", json=body, headers=admin)
        assert (created.status_code, error_of(created)["code"]) == (422, code), (coupons, created.text)
        assert error_of(created)["field"].startswith("upgrade_gift.coupons"), created.text
        assert error_of(created)["field"].endswith(suffix), created.text
        changed = await client.put(f"/api/tiers/{tier['id']}", json=tier_body("silver", 1, 1000, **{
            "upgrade_gift": {"coupons": coupons}}), headers=admin)  # fmt: skip
        assert (changed.status_code, error_of(changed)["code"]) == (422, code), (coupons, changed.text)
    listed = (await client.get("/api/tiers", headers=admin)).json()["items"]
    assert [(t["code"], t["upgrade_gift"]) for t in listed] == [("silver", upgrade_gift)]
