"""Scheduled points jobs: expire due lots, remind members before their points expire."""

from __future__ import annotations

import logging
from typing import Any

from jobs.context import JobContext
from models.kernel import clock
from models.kernel.outbox import OutboxMessage
from models.points.expiry import expire_due_lots, send_expiry_reminders

log = logging.getLogger("huiyuan.points")


async def expire_points(ctx: JobContext) -> str:
    """Expire what is left of every lot past its expiry (merchant-local midnight); exactly once per lot."""
    expired = await expire_due_lots(now=clock.now())
    return f"{expired} points lots expired"


async def remind_expiring_points(ctx: JobContext) -> str:
    """Queue one notice per member, expiry day and lead time (default 30 and 7 days) for points about to expire."""
    sent = await send_expiry_reminders(now=clock.now())
    return f"{sent} expiry reminders queued"


async def deliver_member_notice(gateway: Any, message: OutboxMessage) -> None:
    """Member notices (points expiring, tier changes) are logged as delivered here.

    The campaigns issue delivers them as template/subscribe messages.
    """
    log.info("member notice for member %s: %s", message.payload.get("member_id"), message.payload)
