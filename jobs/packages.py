"""Scheduled package jobs: mark packages past their validity expired."""

from __future__ import annotations

from jobs.context import JobContext
from models.kernel import clock
from models.packages.uses import expire_due_packages


async def expire_packages(ctx: JobContext) -> str:
    """Expire every active package whose validity ended (a merchant-local midnight); each once."""
    expired = await expire_due_packages(now=clock.now())
    return f"{expired} packages expired"
