"""A paid plan's monthly coupon pack: granted for each month of every active term, once per month."""

from __future__ import annotations

from datetime import datetime

from tortoise.expressions import Q

from models.coupons.issue import grant_gift_coupons
from models.kernel.calendar import add_local_months
from models.plans.terms import MemberPlan, PaidPlan
from models.tenancy.merchants import merchant_zone

BATCH = 200


def _pack(plan: PaidPlan) -> list[dict]:
    return [c for c in (plan.benefits or {}).get("coupons") or [] if isinstance(c, dict)]


async def grant_plan_packs(*, now: datetime, batch: int = BATCH) -> int:
    """Grant every started month's pack of every active term (`plan:<term id>:<month index>:<template>:<i>`)."""
    plans = {p.id: p for p in await PaidPlan.filter() if _pack(p)}
    if not plans:
        return 0
    months = 0
    cursor = 0
    while True:
        terms = (
            await MemberPlan.filter(id__gt=cursor, status="active", plan_id__in=list(plans), starts_at__lte=now)
            .filter(Q(ends_at__isnull=True) | Q(ends_at__gt=now))
            .order_by("id")
            .limit(batch)
        )
        for term in terms:
            zone = await merchant_zone(merchant_id=term.merchant_id)
            index = 0
            while add_local_months(term.starts_at, index, zone) <= now:
                await grant_gift_coupons(
                    merchant_id=term.merchant_id,
                    member_id=term.member_id,
                    coupons=_pack(plans[term.plan_id]),
                    key_prefix=f"plan:{term.id}:{index}",
                )
                months += 1
                index += 1
        if len(terms) < batch:
            return months
        cursor = terms[-1].id
