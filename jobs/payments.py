"""Payments work: reconcile unpaid orders and pending refunds with WeChat, the daily statement, refunds sent to
WeChat (outbox), paid-plan reminders."""

from __future__ import annotations

import logging
from typing import Any

from jobs.context import JobContext
from models.kernel.outbox import OutboxMessage
from models.payments import reconcile as pay_reconcile
from models.payments import refund_settle as refunds
from models.plans import terms as plans

log = logging.getLogger("huiyuan.payments")

RECONCILE_AFTER_SECONDS = 600


async def reconcile(ctx: JobContext) -> str:
    """Query CREATED orders older than 5 minutes: settle the paid ones, close the expired unpaid ones."""
    outcomes = await pay_reconcile.reconcile_open_orders(gateway=ctx.gateway)
    if not outcomes:
        return "no open orders to reconcile"
    return "reconciled: " + ", ".join(f"{outcome} {n}" for outcome, n in sorted(outcomes.items()))


async def statement(ctx: JobContext) -> str:
    """Compare yesterday's paid recharge orders with the balance ledger; each mismatch becomes an anomaly."""
    merchants, orders, mismatches = await pay_reconcile.daily_statement()
    return f"statement: {merchants} merchants, {orders} paid orders, {mismatches} mismatches"


async def send_refund(gateway: Any, message: OutboxMessage) -> None:
    """v2 secapi/pay/refund or v3 domestic/refunds for a PENDING refund; a rejection marks it FAILED."""
    await refunds.submit_refund(gateway=gateway, refund_id=int(message.payload["refund_id"]))


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


async def remind_expiring_plans(ctx: JobContext) -> str:
    """One notice per member and last term ending within 7 days."""
    sent = await plans.send_reminders()
    return f"{sent} plan expiry reminders queued"
