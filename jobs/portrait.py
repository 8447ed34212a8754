"""Scheduled portrait jobs: each merchant's RFM quintile cut points, nightly."""

from __future__ import annotations

from jobs.context import JobContext
from models.kernel import clock
from models.portrait.rfm import compute_all_cuts


async def rfm_cuts(ctx: JobContext) -> str:
    """Recompute every merchant's RFM quintile cut points over the last 12 months (replaces the previous run's)."""
    merchants = await compute_all_cuts(now=clock.now())
    return f"rfm cuts of {merchants} merchants"
