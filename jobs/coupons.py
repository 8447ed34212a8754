"""Scheduled coupon jobs: mark expired coupons, remind members before their coupons expire."""

from __future__ import annotations

from jobs.context import JobContext
from models.coupons.expiry import expire_due, send_reminders
from models.coupons.plan_packs import grant_plan_packs
from models.kernel import clock


async def expire(ctx: JobContext) -> str:
    """Mark usable coupons past their validity as expired, in bounded batches."""
    return f"{await expire_due(now=clock.now())} coupons expired"


async def remind(ctx: JobContext) -> str:
    """Queue one member.notice per coupon expiring within jobs.coupon_remind_days (default 3)."""
    days = ctx.settings.jobs.coupon_remind_days
    return f"{await send_reminders(now=clock.now(), days=days)} coupon reminders queued"


async def plan_packs(ctx: JobContext) -> str:
    """Grant each active paid-plan term's monthly coupon pack for every month begun, once per month."""
    return f"{await grant_plan_packs(now=clock.now())} plan months checked"
