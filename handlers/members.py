"""Members by staff: registration, lookup, profile changes; search, the CSV export and import, timelines."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import date, datetime
from typing import Any, Literal

from pydantic import Field
from sanic import Blueprint
from sanic.request import Request
from sanic_ext.extensions.openapi.builders import OperationStore
from sanic_ext.extensions.openapi.definitions import RequestBody, Response

from handlers.schemas import ActivePackage, ActivityOut, MemberFilters, MemberOut, serialize
from models.kernel.errors import DomainError
from models.members import export as member_export
from models.members import import_worker, imports, members, timeline
from models.packages.sales import list_packages
from models.tenancy import merchants as tenancy
from server.api import Out, Schema, endpoint, ok, stream_csv
from server.auth import ADMINS, ALL_STAFF, Principal, scope_of

members_bp = Blueprint("members", url_prefix="/api/members")
WRITERS = ("owner", "hq_admin", "store_manager", "cashier")


class MemberIn(Schema):
    store_id: int | None = Field(None, description="Origin store; store-scoped staff always register into theirs")
    phone: str | None = Field(None, max_length=24)
    name: str = Field("", max_length=64)
    gender: Literal["unknown", "male", "female"] = "unknown"
    birthday: date | None = None
    openid: str | None = Field(None, max_length=64)
    unionid: str | None = Field(None, max_length=64)
    id_card_no: str | None = Field(None, max_length=18, description="Stored encrypted; only a mask is returned")
    custom_fields: dict[str, Any] = Field(default_factory=dict)


class MemberPatch(Schema):
    phone: str | None = Field(None, max_length=24)
    name: str | None = Field(None, max_length=64)
    gender: Literal["unknown", "male", "female"] | None = None
    birthday: date | None = None
    id_card_no: str | None = Field(None, max_length=18)
    custom_fields: dict[str, Any] | None = Field(None, description="Merged into the current values; null removes")


class MemberQuery(MemberFilters):
    offset: int = Field(0, ge=0, le=10_000_000)
    limit: int = Field(20, ge=1, le=100)


class MemberDetail(MemberOut):
    packages: list[ActivePackage] = Field(description="Active packages (套餐/次卡), newest first, at most 20")


class MemberPage(Out):
    total: int
    items: list[MemberOut]


async def visible_member(principal: Principal, member_id: int) -> members.Member:
    """The member if the caller may see it (same merchant; same store for store-scoped roles)."""
    return await members.get_member(scope=scope_of(principal), member_id=member_id)


@members_bp.post("/")
@endpoint(
    summary="Register a member",
    tag="members",
    roles=WRITERS,
    body=MemberIn,
    response=MemberOut,
    status=201,
    errors=(404, 409),
    description="409 with `member_id` when the phone, openid or ID card is taken.",
)
async def create_member(request: Request, body: MemberIn):
    principal = request.ctx.principal
    store_id = principal.store_scope if principal.store_scope is not None else body.store_id
    if store_id is not None:
        await tenancy.get_store(merchant_id=principal.merchant_id, store_id=store_id)
    profile = body.model_dump(exclude={"store_id"})
    member = await members.create_member(
        merchant_id=principal.merchant_id,
        origin_store_id=store_id,
        profile=profile,
        actor=f"staff:{principal.subject_id}",
    )
    return ok(await serialize(member), status=201)


@members_bp.get("/")
@endpoint(
    summary="Search members",
    tag="members",
    roles=ALL_STAFF,
    query=MemberQuery,
    response=MemberPage,
    description="Newest first. Store-scoped roles see only members of their store (store_id is ignored for them). "
    "Registration dates are days in the merchant's time zone. A tier filter comes with the loyalty engine.",
)
async def search_members(request: Request, query: MemberQuery):
    filters = query.for_principal(request.ctx.principal)
    total, found = await members.search_members(offset=query.offset, limit=query.limit, **filters)
    return ok(MemberPage(total=total, items=[await serialize(m) for m in found]))


@members_bp.get("/<member_id:int>")
@endpoint(summary="Read a member", tag="members", roles=ALL_STAFF, response=MemberDetail, errors=(404,))
async def read_member(request: Request, member_id: int):
    member = await visible_member(request.ctx.principal, member_id)
    active = await list_packages(merchant_id=member.merchant_id, member_id=member.id, status="active", limit=20)
    packages = [ActivePackage.model_validate(row, from_attributes=True) for row in active]
    return ok(MemberDetail(**(await serialize(member)).model_dump(), packages=packages))


@members_bp.patch("/<member_id:int>")
@endpoint(
    summary="Update a member", tag="members", roles=WRITERS, body=MemberPatch, response=MemberOut, errors=(404, 409)
)
async def update_member(request: Request, member_id: int, body: MemberPatch):
    principal = request.ctx.principal
    member = await visible_member(principal, member_id)
    updated = await members.update_member(
        member=member, changes=body.model_dump(exclude_unset=True), actor=f"staff:{principal.subject_id}"
    )
    return ok(await serialize(updated))


member_admin_bp = Blueprint("member_admin", url_prefix="/api/members")
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


@member_admin_bp.get("/export.csv")
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
    await stream_csv(request, chunks, filename="members.csv")


async def _upload_body(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives, refused past the configured size."""
    limit = request.app.ctx.settings.server.import_max_size
    size = 0
    while (chunk := await request.stream.read()) is not None:  # type: ignore[union-attr]  # stream=True route
        size += len(chunk)
        if size > limit:
            raise DomainError(
                f"the file is larger than {limit} bytes", code="request.too_large", status=413, limit=limit
            )
        yield chunk


@member_admin_bp.post("/imports", stream=True)
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
    "keys. The file is stored, then imported by a background job that resumes where it stopped if a server stops: "
    "poll GET /api/members/imports/{job_id}. A phone that is already a member is left unchanged, so importing the "
    "same file again changes nothing. Up to 512 MB.",
)
async def start_import(request: Request, query: ImportUploadQuery):
    principal = request.ctx.principal
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in CSV_TYPES:
        raise DomainError("send the file as text/csv", code="import.media_type", status=415)
    job = await imports.create_import_job(
        merchant_id=principal.merchant_id,
        staff_id=principal.subject_id,
        body=_upload_body(request),
        filename=query.filename,
    )
    # start it here so a small file is done at once; the scheduled job members.imports runs it otherwise, or
    # resumes it if this process stops (the job's lease makes a second runner a no-op)
    request.app.purge_tasks()
    request.app.add_task(import_worker.run_import_job(job_id=job.id), name=f"member-import:{job.id}")
    return ok(ImportStarted(job_id=job.id), status=202)


@member_admin_bp.get("/imports/<job_id:int>")
@endpoint(summary="Progress of a member import", tag="members", roles=ADMINS, response=ImportJobOut, errors=(404,))
async def read_import(request: Request, job_id: int):
    job = await imports.get_import_job(merchant_id=request.ctx.principal.merchant_id, job_id=job_id)
    return ok(_job_out(job))


@member_admin_bp.get("/imports/<job_id:int>/rejects")
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


@member_admin_bp.get("/<member_id:int>/timeline")
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
    await members.ensure_visible(scope=scope_of(principal), member_id=member_id)
    items = await timeline.list_activity(
        merchant_id=principal.merchant_id, member_id=member_id, before_id=query.before_id, limit=query.limit
    )
    next_id = items[-1].id if len(items) == query.limit else None
    return ok(TimelinePage(items=[ActivityOut.model_validate(a) for a in items], next_before_id=next_id))


bp = Blueprint.group(members_bp, member_admin_bp)
