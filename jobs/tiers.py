"""Scheduled tier jobs: the monthly settlement, downgrade notices before it, and the end of manual holds."""

from __future__ import annotations

from jobs.context import JobContext
from models.tiers import settlement as tier_settlement


async def settle(ctx: JobContext) -> str:
    """Monthly tier settlement on the merchant-local 1st: upgrades, and downgrades after the grace period."""
    count = await tier_settlement.settle_all()
    return (
        f"settled {count.merchants} merchants: {count.members} members checked, "
        f"{count.upgraded} up, {count.downgraded} down"
    )


async def notice(ctx: JobContext) -> str:
    """Announce coming downgrades notice_days before the settlement, once per member and period."""
    return f"{await tier_settlement.send_notices()} downgrade notices queued"


async def manual_expire(ctx: JobContext) -> str:
    """End staff-assigned tier holds whose day has passed and place the members on their basis."""
    return f"{await tier_settlement.expire_manual_holds()} manual holds ended"
