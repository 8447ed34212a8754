"""Rule tags: the outbox deliveries that re-evaluate them after a change, and the nightly refresh."""

from __future__ import annotations

import logging
from typing import Any

from jobs.context import JobContext
from models.kernel.outbox import OutboxMessage
from models.segments import evaluate

log = logging.getLogger("huiyuan.segments")


async def member_changed(gateway: Any, message: OutboxMessage) -> None:
    """Re-evaluate one member's rule tags, after the change that queued it committed."""
    await evaluate.evaluate_member(merchant_id=message.merchant_id, member_id=int(message.payload["member_id"]))


async def evaluate_tag(gateway: Any, message: OutboxMessage) -> None:
    """A new rule tag: its members computed for the whole merchant, in member-id batches."""
    result = await evaluate.evaluate_tag_by_id(tag_id=int(message.payload["tag_id"]))
    log.info("tag %s evaluated: %s members, +%s", message.payload["tag_id"], result.members, result.added)


async def refresh(ctx: JobContext) -> str:
    """Re-evaluate the rule tags that move with the clock (age, birthday month, days ago, windows), all members."""
    tags, total = await evaluate.refresh_timely_tags()
    return f"{tags} rule tags refreshed: {total.members} member checks, +{total.added} -{total.removed}"
