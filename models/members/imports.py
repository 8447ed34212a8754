"""Bulk member imports: a job with progress, and the rows it rejected with their reasons."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tortoise import fields
from tortoise.exceptions import IntegrityError, OperationalError
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.kernel import clock
from models.kernel.errors import Conflict, NotFound, Unprocessable
from models.ledger import books as ledger
from models.members.custom_fields import list_fields
from models.members.import_rows import (
    Candidate,
    CsvSource,
    Row,
    RowRules,
    SeenPhones,
    check_header,
    count_records,
    parse_row,
    read_header,
)
from models.members.members import Member, new_referral_code
from models.members.timeline import MemberActivity
from models.tenancy.merchants import Store

log = logging.getLogger("huiyuan.imports")


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

    class Meta:
        table = "import_job"

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


BATCH_ROWS = 500
COUNTERS = ("processed", "created", "unchanged", "rejected")


async def create_import_job(*, merchant_id: int, staff_id: int | None, path: str | Path, filename: str) -> ImportJob:
    """Accept a CSV file for import if its header names known columns (phone required); the job starts pending."""
    columns = await asyncio.to_thread(read_header, path)
    check_header(columns, {d.key for d in await list_fields(merchant_id=merchant_id)})
    return await ImportJob.create(merchant_id=merchant_id, staff_id=staff_id, filename=filename[:255])


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


@dataclass
class _Context:
    job: ImportJob
    rules: RowRules
    seen: SeenPhones
    actor: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))


async def _create(ctx: _Context, rows: list[Candidate]) -> None:
    """Members, their accounts, timeline and opening ledger rows; call inside the batch's transaction."""
    merchant_id, job = ctx.job.merchant_id, ctx.job
    await Member.bulk_create(
        [
            Member(
                merchant_id=merchant_id,
                origin_store_id=c.store_id,
                source="import",
                phone=c.phone,
                name=c.name,
                gender=c.gender,
                birthday=c.birthday,
                custom_fields=c.custom_fields,
                referral_code=new_referral_code(),
            )
            for c in rows
        ]
    )
    ids = dict(
        await Member.filter(merchant_id=merchant_id, phone__in=[c.phone for c in rows]).values_list("phone", "id")
    )
    books: tuple[type[ledger._Account], ...] = (ledger.PointsAccount, ledger.BalanceAccount)
    for account in books:
        await account.bulk_create([account(member_id=ids[c.phone], merchant_id=merchant_id) for c in rows])
    await MemberActivity.bulk_create(
        [
            MemberActivity(
                merchant_id=merchant_id,
                member_id=ids[c.phone],
                kind="registered",
                actor=ctx.actor,
                detail={"source": "import", "store_id": c.store_id, "import_job_id": job.id, "line": c.line},
            )
            for c in rows
        ]
    )
    for c in rows:
        openings = (("balance", c.balance, ledger.change_balance), ("points", c.points, ledger.change_points))
        for book, delta, change in openings:  # balance before points: the ledgers' lock order
            if delta:
                await change(
                    merchant_id=merchant_id,
                    member_id=ids[c.phone],
                    delta=delta,
                    kind="import",
                    reason=c.reason,
                    idempotency_key=f"import:{book}:{c.phone}",
                    ref_type="import",
                    ref_id=str(job.id),
                    operator_staff_id=job.staff_id,
                )


async def _create_one_by_one(ctx: _Context, rows: list[Candidate]) -> tuple[int, int, list[tuple[int, str]]]:
    """After a batch conflict: each row alone; a phone taken meanwhile is unchanged, a used opening key rejected."""
    created = unchanged = 0
    rejects: list[tuple[int, str]] = []
    for candidate in rows:
        for attempt in range(3):
            try:
                async with in_transaction():
                    await _create(ctx, [candidate])
                created += 1
                break
            except IntegrityError:
                if await Member.exists(merchant_id=ctx.job.merchant_id, phone=candidate.phone):
                    unchanged += 1
                    break
                if attempt == 2:  # a referral code collided three times: give up on this row only
                    rejects.append((candidate.line, "member could not be created; import the row again"))
            except OperationalError:
                if attempt == 2:  # lock conflicts three times in a row: the database is in trouble, stop the job
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
            except Conflict as exc:
                rejects.append((candidate.line, f"opening amount already imported for this phone ({exc.code})"))
                break
    return created, unchanged, rejects


async def _save_batch(ctx: _Context, rows: int, created: int, unchanged: int, rejects: list[tuple[int, str]]) -> None:
    """Rejects and counters of one batch; call inside the batch's transaction."""
    counts = ctx.counts
    await ImportReject.bulk_create(
        [ImportReject(job_id=ctx.job.id, line=line, reason=why[:255]) for line, why in rejects]
    )
    await ImportJob.filter(id=ctx.job.id).update(
        processed_rows=counts["processed"] + rows,
        created_rows=counts["created"] + created,
        unchanged_rows=counts["unchanged"] + unchanged,
        rejected_rows=counts["rejected"] + len(rejects),
    )


async def _import_batch(ctx: _Context, rows: list[Row]) -> None:
    rejects: list[tuple[int, str]] = []
    valid: list[Candidate] = []
    for row in rows:
        result = row.error or await parse_row(ctx.rules, row)
        if isinstance(result, str):
            rejects.append((row.line, result))
        else:
            valid.append(result)
    repeats = await asyncio.to_thread(ctx.seen.claim, [(c.phone, c.line) for c in valid])
    rejects += [(line, f"duplicate phone (first on line {first})") for line, first in repeats.items()]
    valid = [c for c in valid if c.line not in repeats]
    phones = [c.phone for c in valid]
    existing = Member.filter(merchant_id=ctx.job.merchant_id, phone__in=phones).values_list("phone", flat=True)
    taken = set(await existing) if phones else set()
    new = [c for c in valid if c.phone not in taken]
    created, unchanged = len(new), len(valid) - len(new)
    try:
        async with in_transaction():
            if new:
                await _create(ctx, new)
            await _save_batch(ctx, len(rows), created, unchanged, rejects)
    except (IntegrityError, Conflict, OperationalError):  # a concurrent import or registration, or a deadlock
        log.info("import %s: batch conflict at line %s, creating row by row", ctx.job.id, rows[0].line)
        created, late_unchanged, late_rejects = await _create_one_by_one(ctx, new)
        unchanged += late_unchanged
        rejects += late_rejects
        async with in_transaction():
            await _save_batch(ctx, len(rows), created, unchanged, rejects)
    for name, added in zip(COUNTERS, (len(rows), created, unchanged, len(rejects)), strict=True):
        ctx.counts[name] += added
        setattr(ctx.job, f"{name}_rows", ctx.counts[name])


async def run_import(
    *, job_id: int, path: str | Path, on_batch: Callable[[ImportJob], None] | None = None
) -> ImportJob:
    """Import the file in batches of 500, each committed with its rejects and counters; idempotent by phone."""
    job = await ImportJob.get(id=job_id)
    try:
        columns = await asyncio.to_thread(read_header, path)
        definitions = {d.key: d for d in await list_fields(merchant_id=job.merchant_id)}
        check_header(columns, set(definitions))
        job.total_rows = await asyncio.to_thread(count_records, path)
        job.status, job.started_at = "running", clock.now()
        await job.save(update_fields=["total_rows", "status", "started_at"])
        stores = dict(await Store.filter(merchant_id=job.merchant_id).values_list("code", "id"))
        actor = f"staff:{job.staff_id}" if job.staff_id else "import"
        with tempfile.TemporaryDirectory(prefix="huiyuan-import-") as work:
            seen = await asyncio.to_thread(SeenPhones, Path(work) / "seen.sqlite3")
            source = await asyncio.to_thread(CsvSource, path)
            rules = RowRules(job.merchant_id, columns, stores, definitions, clock.now().date())
            ctx = _Context(job, rules, seen, actor)
            try:
                while rows := await asyncio.to_thread(source.take, BATCH_ROWS):
                    await _import_batch(ctx, rows)
                    if on_batch is not None:
                        on_batch(job)
            finally:
                source.close()
                seen.close()
        job.status, job.finished_at = "done", clock.now()
        await job.save(update_fields=["status", "finished_at"])
    except asyncio.CancelledError:
        await _fail(job, "interrupted: the server stopped; import the file again (rows already imported stay)")
        raise
    except Exception as exc:  # noqa: BLE001 - any failure ends the job as failed, with the reason shown
        log.exception("import %s failed", job.id)
        await _fail(job, exc.message if isinstance(exc, Unprocessable) else f"{type(exc).__name__}: {exc}")
    return job


async def _fail(job: ImportJob, error: str) -> None:
    await ImportJob.filter(id=job.id).update(status="failed", error=error[:2000], finished_at=clock.now())
    job.status, job.error = "failed", error[:2000]
