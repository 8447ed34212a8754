"""Transactional outbox: side effects that leave the process are rows written with the change."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tortoise import fields
from tortoise.models import Model

from models.kernel import clock

MAX_ATTEMPTS = 12


class OutboxMessage(Model):
    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    topic = fields.CharField(max_length=64)
    payload: dict[str, Any] = fields.JSONField()
    coalesce_key = fields.CharField(max_length=96, null=True, db_index=True)  # pending twins are skipped
    status = fields.CharField(max_length=12, default="pending", db_index=True)  # pending|processing|delivered|dead
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField()
    locked_until = fields.DatetimeField(null=True)
    last_error = fields.TextField(default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    delivered_at = fields.DatetimeField(null=True)

    class Meta:
        table = "outbox_message"
        indexes = (("status", "next_attempt_at"),)


async def enqueue(
    *, merchant_id: int, topic: str, payload: dict[str, Any], coalesce_key: str | None = None
) -> OutboxMessage | None:
    """Record a side effect; call inside the transaction of the change it belongs to.

    With a coalesce_key (e.g. "card:<member_id>" for a sync that reads the latest state when delivered),
    nothing is added while an undelivered message with the same key is still pending.
    """
    if coalesce_key is not None and await OutboxMessage.exists(coalesce_key=coalesce_key, status="pending"):
        return None
    return await OutboxMessage.create(
        merchant_id=merchant_id, topic=topic, payload=payload, coalesce_key=coalesce_key, next_attempt_at=clock.now()
    )


async def claim_due(*, limit: int, lease_seconds: int) -> list[OutboxMessage]:
    """Lease due messages to this worker; a conditional update makes each claim exclusive."""
    now = clock.now()
    candidates = await OutboxMessage.filter(status="pending", next_attempt_at__lte=now).order_by("id").limit(limit)
    stale = await OutboxMessage.filter(status="processing", locked_until__lt=now).order_by("id").limit(limit)
    claimed = []
    for message in [*candidates, *stale]:
        won = await OutboxMessage.filter(id=message.id, status=message.status, attempts=message.attempts).update(
            status="processing", locked_until=now + timedelta(seconds=lease_seconds), attempts=message.attempts + 1
        )
        if won == 1:
            message.status, message.attempts = "processing", message.attempts + 1
            claimed.append(message)
    return claimed


async def mark_delivered(*, message_id: int) -> None:
    await OutboxMessage.filter(id=message_id, status="processing").update(
        status="delivered", delivered_at=clock.now(), locked_until=None, last_error=""
    )


async def mark_failed(*, message: OutboxMessage, error: str) -> None:
    """Schedule a retry with exponential backoff, or give up after MAX_ATTEMPTS."""
    if message.attempts >= MAX_ATTEMPTS:
        status, next_at = "dead", clock.now()
    else:
        status, next_at = "pending", clock.now() + timedelta(seconds=min(3600, 2**message.attempts))
    await OutboxMessage.filter(id=message.id, status="processing").update(
        status=status, next_attempt_at=next_at, locked_until=None, last_error=error[:2000]
    )
