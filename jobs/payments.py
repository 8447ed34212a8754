"""Scheduled payments jobs: reconcile unpaid orders with WeChat, and the daily orders-vs-ledger statement."""

from __future__ import annotations

from jobs.scheduler import JobContext, job
from models import pay_reconcile


@job("payments.reconcile", every_seconds=60)
async def reconcile(ctx: JobContext) -> str:
    """Query CREATED orders older than 5 minutes: settle the paid ones, close the expired unpaid ones."""
    outcomes = await pay_reconcile.reconcile_open_orders(gateway=ctx.gateway)
    if not outcomes:
        return "no open orders to reconcile"
    return "reconciled: " + ", ".join(f"{outcome} {n}" for outcome, n in sorted(outcomes.items()))


@job("payments.statement", every_seconds=86400)
async def statement(ctx: JobContext) -> str:
    """Compare yesterday's paid recharge orders with the balance ledger; each mismatch becomes an anomaly."""
    merchants, orders, mismatches = await pay_reconcile.daily_statement()
    return f"statement: {merchants} merchants, {orders} paid orders, {mismatches} mismatches"
