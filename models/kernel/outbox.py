"""Transactional outbox: side effects that leave the process are rows written with the change."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise import fields
from tortoise.expressions import Q
from tortoise.functions import Count, Min
from tortoise.models import Model

from models.kernel import clock
from models.kernel.errors import Conflict, NotFound, Unprocessable

log = logging.getLogger("huiyuan.outbox")

MAX_ATTEMPTS = 12
STATUSES = ("pending", "processing", "delivered", "dead")
BACKLOG = ("pending", "processing", "dead")  # everything but the delivered rows, which grow without bound


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
        indexes = (("status", "next_attempt_at"), ("merchant_id", "status", "topic"))


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


# What operators see of a payload: ids, kinds, dates and amounts. Everything else (openids, card codes,
# activate tickets, template contents) is masked, whichever topic adds it later.
SHOWN_PAYLOAD_KEYS = frozenset({"kind", "books", "points", "expires_on", "ends_on", "settles_on", "tier", "to_tier"})
MASK = "***"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR = re.compile(r"^(\d{1,19})-(\d{1,19})$")  # microseconds since the epoch of its death, id
MAX_MESSAGE_ID = 2**63 - 1


@dataclass(frozen=True)
class TopicState:
    """One topic's messages by status, and how long its oldest undelivered one has waited."""

    topic: str
    counts: dict[str, int]
    oldest_pending_seconds: int | None  # since created_at, of the oldest pending or processing message
    overdue_seconds: int | None  # since next_attempt_at, of the pending message due the longest (0: none due)


@dataclass(frozen=True)
class DeadPage:
    items: list[OutboxMessage]
    next_cursor: str | None


def _seconds_since(moment: datetime | None, now: datetime) -> int | None:
    return None if moment is None else max(0, int((now - moment).total_seconds()))


async def _topic_states(*, merchant_id: int | None, with_delivered: bool) -> list[TopicState]:
    """Counts per topic and status in one GROUP BY over the backlog (plus one over delivered rows if asked)."""
    backlog = OutboxMessage.filter(status__in=BACKLOG)
    if merchant_id is not None:
        backlog = backlog.filter(merchant_id=merchant_id)
    rows = (
        await backlog.annotate(n=Count("id"), first_created=Min("created_at"), first_due=Min("next_attempt_at"))
        .group_by("topic", "status")
        .values("topic", "status", "n", "first_created", "first_due")
    )
    if with_delivered:
        delivered = OutboxMessage.filter(status="delivered")
        if merchant_id is not None:
            delivered = delivered.filter(merchant_id=merchant_id)
        rows += await delivered.annotate(n=Count("id")).group_by("topic", "status").values("topic", "status", "n")
    now = clock.now()
    shown = STATUSES if with_delivered else BACKLOG
    counts: dict[str, dict[str, int]] = {}
    oldest: dict[str, datetime] = {}
    first_due: dict[str, datetime] = {}
    for row in rows:
        topic = row["topic"]
        counts.setdefault(topic, dict.fromkeys(shown, 0))[row["status"]] = int(row["n"])
        created = clock.as_utc(row.get("first_created"))
        if row["status"] in ("pending", "processing") and created is not None:
            oldest[topic] = min(created, oldest.get(topic, created))
        due = clock.as_utc(row.get("first_due"))
        if row["status"] == "pending" and due is not None:
            first_due[topic] = due
    return [
        TopicState(
            topic=topic,
            counts=counts[topic],
            oldest_pending_seconds=_seconds_since(oldest.get(topic), now),
            overdue_seconds=_seconds_since(first_due.get(topic), now),
        )
        for topic in sorted(counts)
    ]


async def outbox_summary(*, merchant_id: int) -> list[TopicState]:
    """The merchant's messages per topic and status, with the age of each topic's oldest undelivered one."""
    return await _topic_states(merchant_id=merchant_id, with_delivered=True)


async def backlog_by_topic() -> list[TopicState]:
    """Every merchant's undelivered and dead messages per topic (the delivered bulk is never scanned)."""
    return await _topic_states(merchant_id=None, with_delivered=False)


def shown_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as operators see it: ids, kinds, dates and amounts; other values masked."""

    def shown(key: str, value: Any) -> bool:
        scalar = value is None or isinstance(value, int | str)
        listed = isinstance(value, list) and all(isinstance(v, int | str) for v in value)
        return (key.endswith("_id") and scalar) or (key in SHOWN_PAYLOAD_KEYS and (scalar or listed))

    return {key: value if shown(key, value) else MASK for key, value in payload.items()}


def _cursor_of(message: OutboxMessage) -> str:
    return f"{(message.next_attempt_at - _EPOCH) // timedelta(microseconds=1)}-{message.id}"


def _parse_cursor(cursor: str) -> tuple[datetime, int]:
    matched = _CURSOR.match(cursor)
    try:
        if matched is None or int(matched[2]) > MAX_MESSAGE_ID:
            raise ValueError(cursor)
        return _EPOCH + timedelta(microseconds=int(matched[1])), int(matched[2])
    except (ValueError, OverflowError):
        raise Unprocessable("cursor: not a cursor this list gave", code="validation.failed", field="cursor") from None


async def list_dead(
    *, merchant_id: int, topic: str | None = None, limit: int = 50, cursor: str | None = None
) -> DeadPage:
    """The merchant's dead messages, the latest to die first; the cursor continues after the last one shown.

    Ordered by the time each died (next_attempt_at, set when it gave up), not by id: ids are not in time order
    on every engine.
    """
    query = OutboxMessage.filter(merchant_id=merchant_id, status="dead")
    if topic is not None:
        query = query.filter(topic=topic)
    if cursor is not None:
        died, before_id = _parse_cursor(cursor)
        query = query.filter(Q(next_attempt_at__lt=died) | Q(next_attempt_at=died, id__lt=before_id))
    items = await query.order_by("-next_attempt_at", "-id").limit(limit)
    return DeadPage(items=items, next_cursor=_cursor_of(items[-1]) if len(items) == limit else None)


async def retry_dead(*, merchant_id: int, message_id: int, staff_id: int | None = None) -> OutboxMessage:
    """Queue a dead message again, due now with a fresh round of attempts; last_error stays until the next try.

    One conditional UPDATE (status dead → pending) whose row count is the answer: of two operators retrying at
    once, or a retry racing a worker, exactly one wins and the other gets 409.
    """
    revived = await OutboxMessage.filter(id=message_id, merchant_id=merchant_id, status="dead").update(
        status="pending", attempts=0, next_attempt_at=clock.now(), locked_until=None
    )
    message = await OutboxMessage.get_or_none(id=message_id, merchant_id=merchant_id)
    if message is None:
        raise NotFound(f"no outbox message {message_id}", code="outbox.not_found")
    if revived != 1:
        raise Conflict(
            f"outbox message {message_id} is {message.status}, not dead",
            code="outbox.not_dead",
            current_status=message.status,
        )
    log.info("outbox %s #%s queued again by staff %s", message.topic, message.id, staff_id)
    return message
