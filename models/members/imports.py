"""Bulk member imports: a job with progress and a lease a worker holds, and the rows it rejected with their reasons.

A job is pending until a worker has counted its rows, then running, then done or failed. Whoever runs it holds the
lease (lease_owner until lease_until), renewed with every batch; a worker that stops (a crash, kill -9) lets the
lease expire and the next worker resumes at reached_line / reached_byte, the point committed with the last batch.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from datetime import datetime, timedelta

from tortoise import fields
from tortoise.exceptions import OperationalError
from tortoise.expressions import F, Q
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.kernel.errors import NotFound
from models.members.custom_fields import list_fields
from models.members.import_rows import check_header, read_header
from models.members.import_upload import delete_upload, store_upload

ACTIVE = ("pending", "running")
LEASE = timedelta(seconds=20)  # a worker renews it with every batch; a stopped worker's job resumes after this
MAX_ATTEMPTS = 3


class LeaseLostError(Exception):
    """Another worker took the job over (this one's lease had expired); stop without writing anything more."""


class ImportJob(Model):
    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField()
    staff_id = fields.IntField(null=True)
    filename = fields.CharField(max_length=255, default="")
    status = fields.CharField(max_length=12, default="pending")  # pending | running | done | failed
    total_rows = fields.IntField(default=0)
    processed_rows = fields.IntField(default=0)
    created_rows = fields.IntField(default=0)
    unchanged_rows = fields.IntField(default=0)
    rejected_rows = fields.IntField(default=0)
    error = fields.TextField(default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)
    upload_key = fields.CharField(max_length=32, default="")  # import_chunk rows holding the file
    lease_owner = fields.CharField(max_length=64, null=True)
    lease_until = fields.DatetimeField(null=True)
    attempts = fields.IntField(default=0)  # leases taken
    reached_line = fields.IntField(default=0)  # last physical line of the last committed batch (header = 1)
    reached_byte = fields.BigIntField(default=0)  # byte offset after that line: where a resumed run reads on

    class Meta:
        table = "import_job"
        indexes = (("status", "lease_until"),)

    @property
    def percent(self) -> float:
        if self.status == "done":
            return 100.0
        return round(100 * self.processed_rows / self.total_rows, 1) if self.total_rows else 0.0


class ImportReject(Model):
    id = fields.BigIntField(primary_key=True)
    job_id = fields.IntField()
    line = fields.IntField()
    reason = fields.CharField(max_length=255)

    class Meta:
        table = "import_reject"
        indexes = (("job_id", "line"),)


async def create_import_job(
    *, merchant_id: int, staff_id: int | None, body: AsyncIterable[bytes], filename: str
) -> ImportJob:
    """Store a CSV file for import if its header names known columns (phone required); the job starts pending."""
    upload = await store_upload(body=body)
    try:
        check_header(read_header(upload.head), {d.key for d in await list_fields(merchant_id=merchant_id)})
        return await ImportJob.create(
            merchant_id=merchant_id, staff_id=staff_id, filename=filename[:255], upload_key=upload.key
        )
    except BaseException:
        await delete_upload(key=upload.key)
        raise


async def get_import_job(*, merchant_id: int, job_id: int) -> ImportJob:
    """An import job of this merchant."""
    job = await ImportJob.filter(id=job_id, merchant_id=merchant_id).first()
    if job is None:
        raise NotFound("import job not found", code="import.not_found")
    return job


async def list_rejects(*, merchant_id: int, job_id: int, offset: int, limit: int) -> list[ImportReject]:
    """The rows a job rejected, in line order."""
    await get_import_job(merchant_id=merchant_id, job_id=job_id)
    return await ImportReject.filter(job_id=job_id).order_by("line", "id").offset(offset).limit(limit)


def _lease_free(now: datetime) -> Q:
    return Q(status__in=ACTIVE) & (Q(lease_until__isnull=True) | Q(lease_until__lt=now))


async def list_claimable_imports(*, now: datetime, limit: int = 100) -> list[int]:
    """Ids of pending or running jobs nobody holds (never leased, or the lease expired), oldest first."""
    rows = await ImportJob.filter(_lease_free(now)).order_by("id").limit(limit).values("id")
    return [row["id"] for row in rows]


async def claim_import(*, job_id: int, owner: str, now: datetime) -> bool:
    """Take a free or expired lease: of workers racing for one job exactly one wins (row count of a guarded UPDATE)."""
    try:
        claimed = await ImportJob.filter(_lease_free(now), id=job_id, attempts__lt=MAX_ATTEMPTS).update(
            lease_owner=owner, lease_until=now + LEASE, attempts=F("attempts") + 1
        )
    except OperationalError:  # Galera certification / TiDB write conflict: the other claimer won
        return False
    return claimed == 1


async def renew_lease(*, job_id: int, owner: str, now: datetime) -> None:
    """Extend this worker's lease; raises LeaseLostError when another worker has taken the job over."""
    if not await ImportJob.filter(id=job_id, lease_owner=owner).update(lease_until=now + LEASE):
        raise LeaseLostError(f"import {job_id}: lease lost")


async def start_import(*, job: ImportJob, owner: str, total_rows: int, now: datetime) -> None:
    """Record the row count: the job is running from now on (it is pending while counted)."""
    started = await ImportJob.filter(id=job.id, lease_owner=owner).update(
        status="running", total_rows=total_rows, started_at=now, lease_until=now + LEASE
    )
    if not started:
        raise LeaseLostError(f"import {job.id}: lease lost")
    job.status, job.total_rows, job.started_at = "running", total_rows, now


async def release_import(*, job: ImportJob, owner: str, error: str, retry_at: datetime | None, retry: bool) -> None:
    """Give the lease back: with retry, another attempt may start at retry_at; without, the attempt is not counted."""
    attempts = F("attempts") if retry else F("attempts") - 1
    await ImportJob.filter(id=job.id, lease_owner=owner).update(
        lease_owner=None, lease_until=retry_at, error=error[:2000], attempts=attempts
    )
    job.error, job.lease_owner, job.lease_until = error[:2000], None, retry_at


async def end_import(*, job: ImportJob, owner: str, status: str, error: str, now: datetime) -> None:
    """Mark the job done or failed and delete its upload, in one transaction; LeaseLostError if taken over."""
    if not await _end(job, Q(lease_owner=owner), status, error, now):
        raise LeaseLostError(f"import {job.id}: lease lost")


async def give_up_import(*, job: ImportJob, now: datetime) -> bool:
    """Fail a job whose workers stopped MAX_ATTEMPTS times (the last lease expired); the rows imported so far stay."""
    why = job.error or "the worker stopped"
    error = f"stopped {MAX_ATTEMPTS} times before finishing ({why}); rows up to line {job.reached_line} are imported"
    return await _end(job, _lease_free(now) & Q(attempts__gte=MAX_ATTEMPTS), "failed", error, now)


async def _end(job: ImportJob, guard: Q, status: str, error: str, now: datetime) -> bool:
    async with in_transaction():
        ended = await ImportJob.filter(guard, id=job.id).update(
            status=status, error=error[:2000], finished_at=now, lease_owner=None, lease_until=None
        )
        if ended:
            await delete_upload(key=job.upload_key)
    if ended:
        job.status, job.error, job.finished_at = status, error[:2000], now
        job.lease_owner = job.lease_until = None
    return bool(ended)
