"""One batch of a member import: validate rows, create the new members, commit counters and the resume point."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from tortoise.exceptions import IntegrityError, OperationalError
from tortoise.transactions import in_transaction

from models.kernel import clock
from models.kernel.errors import Conflict
from models.ledger import books as ledger
from models.members.import_rows import Candidate, Row, RowRules, SeenPhones, parse_row
from models.members.imports import LEASE, ImportJob, ImportReject, LeaseLostError
from models.members.members import Member, new_referral_code
from models.members.timeline import MemberActivity

log = logging.getLogger("huiyuan.imports")

BATCH_ROWS = 500
COUNTERS = ("processed", "created", "unchanged", "rejected")


@dataclass
class BatchContext:
    job: ImportJob
    owner: str  # the lease holder: a batch commits only while this worker still holds the job
    rules: RowRules
    seen: SeenPhones
    actor: str
    counts: dict[str, int] = field(init=False)  # from the job row: a resumed run counts on

    def __post_init__(self) -> None:
        self.counts = {name: getattr(self.job, f"{name}_rows") for name in COUNTERS}


async def _create(ctx: BatchContext, rows: list[Candidate]) -> None:
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


async def _create_one_by_one(ctx: BatchContext, rows: list[Candidate]) -> tuple[int, int, list[tuple[int, str]]]:
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


async def _save_batch(
    ctx: BatchContext, rows: int, created: int, unchanged: int, rejects: list[tuple[int, str]], reached: tuple[int, int]
) -> None:
    """Rejects, counters, resume point and a renewed lease; call inside the batch's transaction."""
    counts = ctx.counts
    await ImportReject.bulk_create(
        [ImportReject(job_id=ctx.job.id, line=line, reason=why[:255]) for line, why in rejects]
    )
    saved = await ImportJob.filter(id=ctx.job.id, lease_owner=ctx.owner).update(
        processed_rows=counts["processed"] + rows,
        created_rows=counts["created"] + created,
        unchanged_rows=counts["unchanged"] + unchanged,
        rejected_rows=counts["rejected"] + len(rejects),
        reached_line=reached[0],
        reached_byte=reached[1],
        lease_until=clock.now() + LEASE,
    )
    if not saved:  # taken over after our lease expired: roll the batch back, the new holder redoes it
        raise LeaseLostError(f"import {ctx.job.id}: lease lost")


async def _accept(ctx: BatchContext, rows: list[Row]) -> tuple[list[Candidate], list[tuple[int, str]]]:
    """The valid rows whose phone is new in this file, and the rejects with their reasons."""
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
    return [c for c in valid if c.line not in repeats], rejects


async def replay_batch(ctx: BatchContext, rows: list[Row]) -> None:
    """Rows a previous run already committed: only remember their phones, so later repeats are still rejected."""
    await _accept(ctx, rows)


async def import_batch(ctx: BatchContext, rows: list[Row], reached: tuple[int, int]) -> None:
    """Import one batch and commit it with its counters and resume point (line, byte); idempotent by phone."""
    valid, rejects = await _accept(ctx, rows)
    phones = [c.phone for c in valid]
    existing = Member.filter(merchant_id=ctx.job.merchant_id, phone__in=phones).values_list("phone", flat=True)
    taken = set(await existing) if phones else set()
    new = [c for c in valid if c.phone not in taken]
    created, unchanged = len(new), len(valid) - len(new)
    try:
        async with in_transaction():
            if new:
                await _create(ctx, new)
            await _save_batch(ctx, len(rows), created, unchanged, rejects, reached)
    except (IntegrityError, Conflict, OperationalError):  # a concurrent import or registration, or a deadlock
        log.info("import %s: batch conflict at line %s, creating row by row", ctx.job.id, rows[0].line)
        created, late_unchanged, late_rejects = await _create_one_by_one(ctx, new)
        unchanged += late_unchanged
        rejects += late_rejects
        async with in_transaction():
            await _save_batch(ctx, len(rows), created, unchanged, rejects, reached)
    for name, added in zip(COUNTERS, (len(rows), created, unchanged, len(rejects)), strict=True):
        ctx.counts[name] += added
        setattr(ctx.job, f"{name}_rows", ctx.counts[name])
    ctx.job.reached_line, ctx.job.reached_byte = reached
