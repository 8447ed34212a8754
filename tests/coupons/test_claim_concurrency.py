"""500 concurrent claims of a template with stock 100 and limit 1 issue exactly 100, no member with 2 (MariaDB)."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from models.coupons.tables import Coupon, CouponClaim, CouponTemplate
from models.members.members import Member
from tests.coupons.helpers import add_template
from tests.tiers.helpers import lasting, member_token

pytestmark = pytest.mark.skipif(
    not os.environ.get("HUIYUAN_DATABASE__URL", "").startswith("mysql://"),
    reason="SQLite serialises writers: concurrency is proven on MariaDB",
)


async def test_500_claims_stock_100_limit_1(app, client, admin, demo):
    admin = lasting(app, admin)
    template = await add_template(client, admin, total_stock=100, per_member_limit=1)
    members = [
        await Member.create(merchant_id=demo.merchant.id, name=f"m{i}", phone=f"1370000{i:04d}") for i in range(300)
    ]
    calls = []
    for i, member in enumerate(members):
        clicks = 2 if i < 200 else 1
        for click in range(clicks):
            if i % 2:
                body = {"template_id": template["id"], "idempotency_key": f"staff-{member.id}-{click}"}
                calls.append(client.post(f"/api/members/{member.id}/coupons", json=body, headers=admin))
            else:
                headers = member_token(app, member_id=member.id, merchant_id=demo.merchant.id)
                calls.append(client.post("/api/mp/coupons", json={"template_id": template["id"]}, headers=headers))
    assert len(calls) == 500
    random.Random(13).shuffle(calls)
    responses = await asyncio.gather(*calls)
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 201, 409}, [r.text for r in responses if r.status_code not in (200, 201, 409)]
    assert statuses.count(201) == 100
    assert await Coupon.filter(template_id=template["id"]).count() == 100
    assert await CouponClaim.filter(template_id=template["id"]).count() == 100
    assert (await CouponTemplate.get(id=template["id"])).issued == 100
    holders = await Coupon.filter(template_id=template["id"]).values_list("member_id", flat=True)
    assert len(set(holders)) == 100
