"""A recharge refund racing the till for its gift coupons: each coupon ends used or voided, never both (MariaDB)."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.coupons.helpers import add_template
from tests.payments.helpers import add_package, pay, paying_member, recharge, use_pay_version
from tests.payments.wallet_helpers import assert_consistent, refund

pytestmark = pytest.mark.skipif(
    not os.environ.get("HUIYUAN_DATABASE__URL", "").startswith("mysql://"),
    reason="SQLite serialises writers: concurrency is proven on MariaDB",
)


async def test_a_refund_racing_redemptions_voids_exactly_the_unused(app, client, admin, demo):
    await use_pay_version("v3")
    template = await add_template(client, admin, channels=["gift"], total_stock=None)
    package = await add_package(client, admin, gifts={"coupons": [{"template_id": template["id"], "quantity": 8}]})
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-race-1")
    order = (await recharge(client, headers, package_id=package["id"]))["order"]
    await pay(client, order["out_trade_no"])
    coupons = (await client.get(f"/api/members/{member_id}/coupons", headers=admin)).json()["items"]
    assert len(coupons) == 8

    def till(coupon_id: int, n: int) -> dict:
        return {
            "store_id": demo.store.id,
            "member_id": member_id,
            "items": [{"sku": "T1", "name": "Tea", "category": "drink", "unit_price": 15000, "quantity": 1}],
            "coupon_id": coupon_id,
            "idempotency_key": f"race-{n}",
            "payments": [{"method": "cash", "amount": 13000}],
        }

    async def later(delay: float, body: dict):
        await asyncio.sleep(delay)
        return await client.post("/api/pos/orders", json=body, headers=admin)

    # every coupon at the till twice (two tills), staggered over the refund's transaction, all at once
    sales = [later(0.01 * (n % 8), till(c["id"], n)) for n, c in enumerate(coupons * 2)]
    answers = await asyncio.gather(refund(client, admin, order["id"]), *sales)
    refunded, settled = answers[0], answers[1:]
    assert refunded.status_code == 201, refunded.text
    assert {r.status_code for r in settled} <= {201, 409}, [r.text for r in settled if r.status_code not in (201, 409)]
    used_at_till = sorted(r.json()["coupon_id"] for r in settled if r.status_code == 201)
    assert len(used_at_till) == len(set(used_at_till))  # one coupon, one order

    final = {
        c["id"]: c["status"]
        for c in (await client.get(f"/api/members/{member_id}/coupons", headers=admin)).json()["items"]
    }
    assert sorted(i for i, s in final.items() if s == "used") == used_at_till
    assert sorted(s for s in final.values()) == sorted(
        ["used"] * len(used_at_till) + ["voided"] * (8 - len(used_at_till))
    )
    body = refunded.json()
    assert (body["coupons_voided"], body["coupons_kept_used"]) == (8 - len(used_at_till), len(used_at_till))
    await assert_consistent(member_id)
