"""A paid plan's monthly coupon pack: each begun month of an active term once, never again on a re-run."""

from __future__ import annotations

from datetime import UTC, datetime

from models.coupons.plan_packs import grant_plan_packs
from models.coupons.tables import Coupon
from models.plans.terms import MemberPlan, PaidPlan
from tests.coupons.helpers import add_template, member_id


async def test_monthly_pack_once_per_month(client, admin, demo):
    template = await add_template(client, admin, channels=["gift"], total_stock=None)
    member = await member_id(client, admin, "13900000501")
    plan = await PaidPlan.create(
        merchant_id=demo.merchant.id,
        code="PLUS",
        name="Plus",
        period="quarter",
        price=100,
        benefits={"coupons": [{"template_id": template["id"], "quantity": 2}]},
    )
    start = datetime(2027, 1, 10, 2, 0, tzinfo=UTC)
    await MemberPlan.create(
        merchant_id=demo.merchant.id,
        member_id=member,
        plan_id=plan.id,
        order_id=1,
        starts_at=start,
        ends_at=datetime(2027, 4, 10, 2, 0, tzinfo=UTC),
    )
    assert await grant_plan_packs(now=datetime(2027, 2, 11, tzinfo=UTC)) == 2
    assert await Coupon.filter(member_id=member).count() == 4
    await grant_plan_packs(now=datetime(2027, 2, 12, tzinfo=UTC))
    assert await Coupon.filter(member_id=member).count() == 4
    await grant_plan_packs(now=datetime(2027, 3, 10, 3, 0, tzinfo=UTC))
    assert await Coupon.filter(member_id=member).count() == 6
    assert await grant_plan_packs(now=datetime(2027, 5, 1, tzinfo=UTC)) == 0  # the term ended
