"""Running member imports: claim a job's lease, resume at its committed point, end it done or failed.

Any process may run this (the scheduled job members.imports, the upload request's kick, the CLI): a job is
claimed through its lease, so a second runner of the same job does nothing, and a runner that died is replaced
once its lease expires. After MAX_ATTEMPTS leases the job is failed with the error and the line it reached.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from models.kernel import clock
from models.kernel.errors import Unprocessable
from models.members.custom_fields import list_fields
from models.members.import_batches import BATCH_ROWS, BatchContext, import_batch, replay_batch
from models.members.import_rows import CsvSource, RowRules, SeenPhones, check_header, count_records, read_header
from models.members.import_upload import UploadLines, delete_upload, list_stale_uploads, read_chunk
from models.members.imports import (
    ACTIVE,
    LEASE,
    MAX_ATTEMPTS,
    ImportJob,
    LeaseLostError,
    claim_import,
    end_import,
    give_up_import,
    list_claimable_imports,
    release_import,
    renew_lease,
    start_import,
)
from models.tenancy.merchants import Store

log = logging.getLogger("huiyuan.imports")

RETRY_AFTER = timedelta(seconds=5)


class _Lease:
    """Renews the lease while a long pass (counting, replaying) reads chunks between batch commits."""

    def __init__(self, job: ImportJob, owner: str) -> None:
        self.job, self.owner, self.renewed = job, owner, clock.now()

    async def keep(self) -> None:
        now = clock.now()
        if now - self.renewed > LEASE / 4:
            await renew_lease(job_id=self.job.id, owner=self.owner, now=now)
            self.renewed = now

    def lines(self, start: int) -> UploadLines:
        return UploadLines(self.job.upload_key, start, asyncio.get_running_loop(), self.keep)


def _new_owner() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


async def run_pending_imports() -> int:
    """Run every import that is pending or whose worker stopped (its lease expired), oldest first; returns how many."""
    ran = 0
    for job_id in await list_claimable_imports(now=clock.now()):
        ran += await run_import_job(job_id=job_id) is not None
    return ran


async def run_import_job(*, job_id: int, on_batch: Callable[[ImportJob], None] | None = None) -> ImportJob | None:
    """Claim the job and import the rest of its file in batches of 500; None when another worker holds it."""
    owner = _new_owner()
    if not await claim_import(job_id=job_id, owner=owner, now=clock.now()):
        job = await ImportJob.filter(id=job_id, attempts__gte=MAX_ATTEMPTS, status__in=ACTIVE).first()
        if job is not None and await give_up_import(job=job, now=clock.now()):
            log.warning("import %s failed: %s", job_id, job.error)
            return job
        return None
    job = await ImportJob.get(id=job_id)
    try:
        await _run(job, owner, on_batch)
        await end_import(job=job, owner=owner, status="done", error="", now=clock.now())
    except LeaseLostError:
        log.warning("import %s: taken over by another worker at line %s", job_id, job.reached_line)
        return None
    except asyncio.CancelledError:  # the process is stopping: another worker may resume at once
        await release_import(job=job, owner=owner, error="", retry_at=None, retry=False)
        raise
    except Unprocessable as exc:  # the file itself is wrong: another attempt would fail the same way
        await end_import(job=job, owner=owner, status="failed", error=exc.message, now=clock.now())
    except Exception as exc:  # noqa: BLE001 - any other failure is retried, then ends the job with the reason shown
        log.exception("import %s failed at line %s (attempt %s)", job_id, job.reached_line, job.attempts)
        error = f"{type(exc).__name__}: {exc}"
        if job.attempts >= MAX_ATTEMPTS:
            error += f" (after {job.attempts} attempts; rows up to line {job.reached_line} are imported)"
            await end_import(job=job, owner=owner, status="failed", error=error, now=clock.now())
        else:
            await release_import(job=job, owner=owner, error=error, retry_at=clock.now() + RETRY_AFTER, retry=True)
    return job


async def _run(job: ImportJob, owner: str, on_batch: Callable[[ImportJob], None] | None) -> None:
    lease = _Lease(job, owner)
    if not job.upload_key:  # queued before uploads were kept in the database
        raise Unprocessable("the file was not kept: import it again", code="import.upload_missing")
    columns = read_header(await read_chunk(key=job.upload_key, seq=0) or b"")
    definitions = {d.key: d for d in await list_fields(merchant_id=job.merchant_id)}
    check_header(columns, set(definitions))
    if job.started_at is None:
        total = await asyncio.to_thread(count_records, lease.lines(0))
        await start_import(job=job, owner=owner, total_rows=total, now=clock.now())
    stores = dict(await Store.filter(merchant_id=job.merchant_id).values_list("code", "id"))
    actor = f"staff:{job.staff_id}" if job.staff_id else "import"
    with tempfile.TemporaryDirectory(prefix="huiyuan-import-") as work:
        seen = await asyncio.to_thread(SeenPhones, Path(work) / "seen.sqlite3")
        rules = RowRules(job.merchant_id, columns, stores, definitions, clock.now().date())
        ctx = BatchContext(job, owner, rules, seen, actor)
        try:
            if job.reached_byte:  # resumed: the phones accepted before the resume point still count as seen
                earlier = await asyncio.to_thread(CsvSource, lease.lines(0), line=0)
                while rows := await asyncio.to_thread(earlier.take, BATCH_ROWS, job.reached_byte):
                    await replay_batch(ctx, rows)
            source = await asyncio.to_thread(CsvSource, lease.lines(job.reached_byte), line=job.reached_line)
            while rows := await asyncio.to_thread(source.take, BATCH_ROWS):
                await import_batch(ctx, rows, source.position)
                lease.renewed = clock.now()
                if on_batch is not None:
                    on_batch(job)
        finally:
            seen.close()


async def delete_stale_uploads(*, before: datetime) -> int:
    """Drop uploads begun before `before` that no pending or running job reads (the upload request died)."""
    keys = await list_stale_uploads(before=before)
    if not keys:
        return 0
    active = set(await ImportJob.filter(upload_key__in=keys, status__in=ACTIVE).values_list("upload_key", flat=True))
    dropped = [key for key in keys if key not in active]
    for key in dropped:
        await delete_upload(key=key)
    return len(dropped)
