"""Merchant member management: search, CSV export and import, timeline."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import Field
from sanic import Blueprint
from sanic.request import Request
from sanic_ext.extensions.openapi.builders import OperationStore
from sanic_ext.extensions.openapi.definitions import RequestBody, Response

from handlers.members import MemberFilters
from models.kernel.errors import DomainError
from models.members import export as member_export
from models.members import imports, members, timeline
from server.api import Out, Schema, endpoint, ok
from server.auth import ADMINS, ALL_STAFF

bp = Blueprint("member_admin", url_prefix="/api/members")
CSV_TYPES = ("text/csv", "application/csv", "application/vnd.ms-excel")


def _csv_document(*, body: bool = False, response: str = "") -> Callable:
    """The OpenAPI says CSV (not JSON) for this endpoint's request body and/or success response."""

    def decorator(handler: Callable) -> Callable:
        operation = OperationStore()[handler]
        csv_schema = {"schema": {"type": "string", "format": "binary"}}
        if body:
            operation.requestBody = RequestBody.make({"text/csv": csv_schema}, required=True)
        if response:
            operation.responses[200] = Response.make({"text/csv": csv_schema}, response)
        return handler

    return decorator


class ImportStarted(Out):
    job_id: int


class ImportUploadQuery(Schema):
    filename: str = Field("", max_length=255, description="Shown in the job; the file name the user picked")


class ImportJobOut(Out):
    id: int
    filename: str
    status: str = Field(description="pending | running | done | failed")
    total: int | None = Field(description="Rows in the file (header excluded); null until counted")
    processed: int
    created: int
    unchanged: int = Field(description="Phone already a member: nothing changed")
    rejected: int
    percent: float
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RejectsQuery(Schema):
    offset: int = Field(0, ge=0, le=100_000_000)
    limit: int = Field(100, ge=1, le=1000)


class RejectOut(Out):
    line: int = Field(description="1-based physical line of the file; the header is line 1")
    reason: str


class RejectPage(Out):
    items: list[RejectOut]


class TimelineQuery(Schema):
    before_id: int | None = Field(None, ge=1, le=2**63 - 1)
    limit: int = Field(50, ge=1, le=200)


class ActivityOut(Out):
    id: int
    kind: str = Field(description="registered, scanned, card_claimed, activated, profile_changed, ...")
    actor: str = Field(description="staff:<id> | member | wechat | system | import")
    detail: dict[str, Any]
    created_at: datetime


class TimelinePage(Out):
    items: list[ActivityOut]
    next_before_id: int | None


def _job_out(job: imports.ImportJob) -> ImportJobOut:
    return ImportJobOut(
        id=job.id,
        filename=job.filename,
        status=job.status,
        total=None if job.status == "pending" else job.total_rows,
        processed=job.processed_rows,
        created=job.created_rows,
        unchanged=job.unchanged_rows,
        rejected=job.rejected_rows,
        percent=job.percent,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


@bp.get("/export.csv")
@_csv_document(response="UTF-8 CSV with a BOM: member columns, then one column per custom field key")
@endpoint(
    summary="Export members as CSV",
    tag="members",
    roles=ADMINS,
    query=MemberFilters,
    description="Streams every member matching the search filters, in id order. Columns: id, member_no, phone, "
    "name, gender, birthday, store_code, source, points, balance_fen, created_at (merchant-local ISO), then the "
    "custom field keys. The ID-card number is never exported.",
)
async def export_members(request: Request, query: MemberFilters):
    chunks = member_export.export_members_csv(**query.for_principal(request.ctx.principal))
    response = await request.respond(
        content_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="members.csv"', "cache-control": "no-store"},
    )
    async for chunk in chunks:
        await response.send(chunk.encode("utf-8"))
    await response.eof()


async def _receive_upload(request: Request, path: Path) -> None:
    limit = request.app.ctx.settings.server.import_max_size
    size = 0
    with path.open("wb") as upload:  # noqa: ASYNC230 - local temp file, buffered writes
        while (chunk := await request.stream.read()) is not None:
            size += len(chunk)
            if size > limit:
                raise DomainError(
                    f"the file is larger than {limit} bytes", code="request.too_large", status=413, limit=limit
                )
            upload.write(chunk)
    if size == 0:
        raise DomainError("the CSV file is empty", code="import.header_missing", status=422)


async def _run_then_clean(job_id: int, path: Path, directory: Path) -> None:
    try:
        await imports.run_import(job_id=job_id, path=path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@bp.post("/imports", stream=True)
@_csv_document(body=True)
@endpoint(
    summary="Import members from a CSV file",
    tag="members",
    roles=ADMINS,
    query=ImportUploadQuery,
    response=ImportStarted,
    status=202,
    errors=(413, 415, 422),
    description="Body: the CSV file (UTF-8, optional BOM, header row). Columns: phone (required), name, birthday "
    "(YYYY-MM-DD), gender (male/female/unknown/男/女), store_code, points, balance (fen), reason, then custom field "
    "keys. Runs as a background job: poll GET /api/members/imports/{job_id}. A phone that is already a member is "
    "left unchanged, so importing the same file again changes nothing. Up to 512 MB.",
)
async def start_import(request: Request, query: ImportUploadQuery):
    principal = request.ctx.principal
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in CSV_TYPES:
        raise DomainError("send the file as text/csv", code="import.media_type", status=415)
    directory = Path(tempfile.mkdtemp(prefix="huiyuan-upload-"))
    try:
        path = directory / "members.csv"
        await _receive_upload(request, path)
        job = await imports.create_import_job(
            merchant_id=principal.merchant_id, staff_id=principal.subject_id, path=path, filename=query.filename
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    request.app.purge_tasks()
    request.app.add_task(_run_then_clean(job.id, path, directory), name=f"member-import:{job.id}")
    return ok(ImportStarted(job_id=job.id), status=202)


@bp.get("/imports/<job_id:int>")
@endpoint(summary="Progress of a member import", tag="members", roles=ADMINS, response=ImportJobOut, errors=(404,))
async def read_import(request: Request, job_id: int):
    job = await imports.get_import_job(merchant_id=request.ctx.principal.merchant_id, job_id=job_id)
    return ok(_job_out(job))


@bp.get("/imports/<job_id:int>/rejects")
@endpoint(
    summary="Rows a member import rejected",
    tag="members",
    roles=ADMINS,
    query=RejectsQuery,
    response=RejectPage,
    errors=(404,),
    description="In line order, with the reason of each.",
)
async def import_rejects(request: Request, job_id: int, query: RejectsQuery):
    rejects = await imports.list_rejects(
        merchant_id=request.ctx.principal.merchant_id, job_id=job_id, offset=query.offset, limit=query.limit
    )
    return ok(RejectPage(items=[RejectOut(line=r.line, reason=r.reason) for r in rejects]))


@bp.get("/<member_id:int>/timeline")
@endpoint(
    summary="A member's timeline",
    tag="members",
    roles=ALL_STAFF,
    query=TimelineQuery,
    response=TimelinePage,
    errors=(404,),
    description="Registration, scans, card events and profile changes (who changed what), newest first.",
)
async def member_timeline(request: Request, member_id: int, query: TimelineQuery):
    principal = request.ctx.principal
    await members.ensure_visible(merchant_id=principal.merchant_id, member_id=member_id, store_id=principal.store_scope)
    items = await timeline.list_activity(
        merchant_id=principal.merchant_id, member_id=member_id, before_id=query.before_id, limit=query.limit
    )
    next_id = items[-1].id if len(items) == query.limit else None
    return ok(TimelinePage(items=[ActivityOut.model_validate(a) for a in items], next_before_id=next_id))
