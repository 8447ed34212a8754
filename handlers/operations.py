"""Operators' view of the outbox: counts and ages per topic, dead messages, and a retry for one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field
from sanic import Blueprint
from sanic.request import Request

from models.kernel import outbox
from server.api import Out, Schema, endpoint, ok
from server.auth import ADMINS

bp = Blueprint("operations", url_prefix="/api/outbox")


class TopicStateOut(Out):
    topic: str
    pending: int
    processing: int
    delivered: int
    dead: int
    oldest_pending_seconds: int | None = Field(
        description="Age (since created_at) of the topic's oldest pending or processing message; null when none"
    )
    overdue_seconds: int | None = Field(
        description="How long the pending message due the longest has been due; 0 when all wait for a retry time"
    )


class SummaryOut(Out):
    topics: list[TopicStateOut]
    oldest_pending_seconds: int | None = Field(description="The largest of the topics' oldest_pending_seconds")
    dead: int


class DeadQuery(Schema):
    topic: str | None = Field(None, min_length=1, max_length=64)
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, min_length=3, max_length=40, description="next_cursor of the previous page")


class DeadOut(Out):
    id: int
    topic: str
    attempts: int
    last_error: str
    created_at: datetime
    died_at: datetime
    payload: dict[str, Any] = Field(description="Ids, kinds, dates and amounts; other values (openids, codes) '***'")


class DeadPageOut(Out):
    items: list[DeadOut]
    next_cursor: str | None


class RetriedOut(Out):
    id: int
    topic: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str


@bp.get("")
@endpoint(
    summary="Outbox messages by topic and status",
    tag="ops",
    roles=ADMINS,
    response=SummaryOut,
    description="The merchant's outbox (WeChat calls caused by changes) per topic: counts by status and the age "
    "of the oldest message not yet delivered.",
)
async def summary(request: Request):
    states = await outbox.outbox_summary(merchant_id=request.ctx.principal.merchant_id)
    ages = [s.oldest_pending_seconds for s in states if s.oldest_pending_seconds is not None]
    return ok(
        SummaryOut(
            topics=[
                TopicStateOut(
                    topic=s.topic,
                    oldest_pending_seconds=s.oldest_pending_seconds,
                    overdue_seconds=s.overdue_seconds,
                    **s.counts,
                )
                for s in states
            ],
            oldest_pending_seconds=max(ages) if ages else None,
            dead=sum(s.counts["dead"] for s in states),
        )
    )


@bp.get("/dead")
@endpoint(
    summary="Dead outbox messages",
    tag="ops",
    roles=ADMINS,
    query=DeadQuery,
    response=DeadPageOut,
    description="Messages that failed every attempt, the latest to die first, with their last error.",
)
async def dead_messages(request: Request, query: DeadQuery):
    page = await outbox.list_dead(
        merchant_id=request.ctx.principal.merchant_id, topic=query.topic, limit=query.limit, cursor=query.cursor
    )
    items = [
        DeadOut(
            id=m.id,
            topic=m.topic,
            attempts=m.attempts,
            last_error=m.last_error,
            created_at=m.created_at,
            died_at=m.next_attempt_at,
            payload=outbox.shown_payload(m.payload),
        )
        for m in page.items
    ]
    return ok(DeadPageOut(items=items, next_cursor=page.next_cursor))


@bp.post("/<message_id:int>/retry")
@endpoint(
    summary="Retry a dead outbox message",
    tag="ops",
    roles=ADMINS,
    response=RetriedOut,
    errors=(404, 409),
    description="Due now, with a fresh round of attempts. 409 outbox.not_dead when the message is not dead "
    "(already retried, delivered or still being tried).",
)
async def retry(request: Request, message_id: int):
    principal = request.ctx.principal
    message = await outbox.retry_dead(
        merchant_id=principal.merchant_id, message_id=message_id, staff_id=principal.subject_id
    )
    return ok(RetriedOut.model_validate(message))
