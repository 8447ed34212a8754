"""Refund delivery to WeChat (outbox), refund reconciliation, and paid-plan expiry reminders."""

from __future__ import annotations

import logging
from typing import Any

from jobs.outbox import topic
from jobs.scheduler import JobContext, job
from models import plans, refunds
from models.outbox import OutboxMessage

log = logging.getLogger("huiyuan.refunds")

RECONCILE_AFTER_SECONDS = 600


@topic(refunds.REFUND_TOPIC)
async def send_refund(gateway: Any, message: OutboxMessage) -> None:
    """v2 secapi/pay/refund or v3 domestic/refunds for a PENDING refund; a rejection marks it FAILED."""
    await refunds.submit_refund(gateway=gateway, refund_id=int(message.payload["refund_id"]))


@job("refunds.reconcile", every_seconds=300)
async def reconcile_refunds(ctx: JobContext) -> str:
    """PENDING refunds older than 10 minutes are queried and settled exactly once, as the notify would."""
    outcomes: dict[str, int] = {}
    for refund in await refunds.pending_refunds(older_than_seconds=RECONCILE_AFTER_SECONDS):
        try:
            outcome = await refunds.reconcile_refund(gateway=ctx.gateway, refund=refund)
        except Exception as exc:  # noqa: BLE001 - one refund's failure must not stop the others
            log.warning("refund %s could not be queried: %s", refund.id, exc)
            outcome = "error"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    summary = ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items()))
    return f"pending refunds: {summary or 'none'}"


@job("plans.remind", every_seconds=3600)
async def remind_expiring_plans(ctx: JobContext) -> str:
    """One notice per member and last term ending within 7 days."""
    sent = await plans.send_reminders()
    return f"{sent} plan expiry reminders queued"
