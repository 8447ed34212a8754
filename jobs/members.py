"""Scheduled member jobs: run the member imports that are waiting or whose worker stopped."""

from __future__ import annotations

from datetime import timedelta

from jobs.context import JobContext
from models.kernel import clock
from models.members.import_worker import delete_stale_uploads, run_pending_imports

ABANDONED_UPLOAD = timedelta(hours=6)  # an upload this old with no job was cut off mid-request


async def run_imports(ctx: JobContext) -> str:
    """Run pending member imports and resume those whose worker stopped; drop uploads abandoned mid-request."""
    ran = await run_pending_imports()
    dropped = await delete_stale_uploads(before=clock.now() - ABANDONED_UPLOAD)
    return f"{ran} member imports run, {dropped} abandoned uploads deleted"
