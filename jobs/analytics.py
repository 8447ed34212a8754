"""Scheduled analytics jobs: the daily roll-ups of purchases, every minute."""

from __future__ import annotations

from jobs.context import JobContext
from models.analytics.rollup import rollup_all
from models.kernel import clock


async def rollup(ctx: JobContext) -> str:
    """Recompute the daily roll-ups (sales, sku, category, member) of each local day touched since the watermark."""
    merchants, days = await rollup_all(now=clock.now())
    return f"rolled up {days} days of {merchants} merchants"
