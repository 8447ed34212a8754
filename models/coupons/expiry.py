"""Coupons past their validity: marked expired in bounded batches; one reminder per coupon before it expires."""

from __future__ import annotations

from datetime import datetime, timedelta

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Subquery
from tortoise.transactions import in_transaction

from models.coupons.changes import coupons_changed
from models.coupons.tables import Coupon, CouponReminder, CouponTemplate
from models.kernel.outbox import enqueue

NOTICE_TOPIC = "member.notice"
BATCH = 500


async def expire_due(*, now: datetime, batch: int = BATCH, max_batches: int = 100) -> int:
    """Mark usable coupons whose validity ended as expired; a coupon used meanwhile is left as it is.

    Each batch is one transaction that emits COUPONS_CHANGED once for the batch's distinct members.
    """
    total = 0
    for _ in range(max_batches):
        async with in_transaction():
            rows = list(
                await Coupon.filter(status="usable", valid_until__lte=now)
                .order_by("valid_until")
                .limit(batch)
                .values_list("id", "merchant_id", "member_id")
            )
            if not rows:
                break
            ids = [row[0] for row in rows]
            expired = await Coupon.filter(id__in=ids, status="usable", valid_until__lte=now).update(status="expired")
            if expired:  # a member whose coupon was used meanwhile gets one needless sync: it reads the state anyway
                await coupons_changed((int(merchant_id), int(member_id)) for _, merchant_id, member_id in rows)
            total += expired
        if len(rows) < batch:
            break
    return total


async def send_reminders(*, now: datetime, days: int, batch: int = BATCH) -> int:
    """One member.notice per coupon expiring within `days` days; the reminder row's unique key makes it once."""
    reminded = Subquery(CouponReminder.all().values("coupon_id"))
    due = (
        await Coupon.filter(status="usable", valid_until__gt=now, valid_until__lte=now + timedelta(days=days))
        .filter(id__not_in=reminded)
        .order_by("valid_until")
        .limit(batch)
    )
    names = dict(await CouponTemplate.filter(id__in={c.template_id for c in due}).values_list("id", "name"))
    sent = 0
    for coupon in due:
        try:
            async with in_transaction():
                await CouponReminder.create(coupon_id=coupon.id)
                await enqueue(
                    merchant_id=coupon.merchant_id,
                    topic=NOTICE_TOPIC,
                    payload={
                        "member_id": coupon.member_id,
                        "kind": "coupon_expiring",
                        "coupon_id": coupon.id,
                        "name": names.get(coupon.template_id, ""),
                        "valid_until": coupon.valid_until.isoformat(),
                    },
                )
            sent += 1
        except IntegrityError:
            continue
    return sent
