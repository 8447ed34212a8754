"""Segments: saved combinations of tags and conditions; live counts, previews, the CSV export and frozen snapshots."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, StrictBool
from sanic import Blueprint
from sanic.request import Request
from sanic_ext.extensions.openapi.builders import OperationStore
from sanic_ext.extensions.openapi.definitions import Response

from models.segments import segments as segment_domain
from models.segments.segments import MAX_PAGE, MemberRow
from models.segments.tables import Segment, SegmentSnapshot
from server.api import Out, Schema, endpoint, ok, stream_csv
from server.auth import ALL_STAFF, MANAGERS, scope_of

bp = Blueprint("audiences")
CODE = r"^[A-Za-z0-9_\-]{1,32}$"
DEFINITION_TEXT = (
    "A definition is {all|any|none: [nodes]} whose leaves are {tag: <tag id or code>} (the member carries that"
    " active tag) or any condition of the rule-tag language ({field, op, value[, window_days]}; see POST"
    " /api/tags). Checked on write: 422 rule.* with the JSON path (e.g. definition.all.0.tag) in `field` for an"
    " unknown, archived or other merchant's tag, tier or store; nothing is written. Tags and tiers are kept by id."
)
SCOPE_TEXT = " A store-scoped role (store_manager, cashier) counts and sees only its store's members."


class SegmentIn(Schema):
    code: str = Field(pattern=CODE)
    name: str = Field(min_length=1, max_length=64)
    definition: dict[str, Any] = Field(description=DEFINITION_TEXT)


class SegmentPatch(Schema):
    name: str | None = Field(None, min_length=1, max_length=64)
    definition: dict[str, Any] | None = Field(None, description=DEFINITION_TEXT)
    archived: StrictBool | None = Field(None, description="true archives (no snapshots), false restores")


class SegmentOut(Out):
    id: int
    code: str
    name: str
    definition: dict[str, Any] = Field(description="Tags and tiers named by id")
    status: str
    created_by: int | None
    created_at: datetime
    updated_at: datetime


class SegmentList(Out):
    items: list[SegmentOut]


class SegmentQuery(Schema):
    status: Literal["active", "archived"] | None = None


class PageQuery(Schema):
    limit: int = Field(50, ge=1, le=MAX_PAGE)
    after: int = Field(0, ge=0, le=2**31 - 1, description="The last member id of the previous page (0: first)")


class CountOut(Out):
    count: int = Field(description="Members matching now, in the caller's scope")


class MemberRowOut(Out):
    id: int
    name: str | None
    phone_masked: str | None = Field(description="138****0001")
    tier_code: str | None
    tier_name: str | None
    points: int


class PreviewOut(Out):
    total: int = Field(description="Members matching now, in the caller's scope (as /count)")
    items: list[MemberRowOut] = Field(description="In member id order")
    next_after: int | None = Field(description="Pass as `after` for the next page; null: this was the last")


class SnapshotOut(Out):
    id: int
    segment_id: int
    store_id: int | None = Field(description="The store a store-scoped role took it for; null: the whole merchant")
    definition: dict[str, Any] = Field(description="The segment's definition when it was taken")
    member_count: int
    created_by: int | None
    created_at: datetime


class SnapshotMembersOut(Out):
    snapshot: SnapshotOut
    items: list[MemberRowOut] = Field(description="In member id order; name, tier and points as they are now")
    next_after: int | None


def _segment_out(segment: Segment) -> SegmentOut:
    return SegmentOut.model_validate(segment)


def _snapshot_out(snapshot: SegmentSnapshot) -> SnapshotOut:
    return SnapshotOut.model_validate(snapshot)


def _page(rows: list[MemberRow], limit: int) -> tuple[list[MemberRowOut], int | None]:
    items = [MemberRowOut.model_validate(row) for row in rows]
    return items, rows[-1].id if len(rows) == limit else None


@bp.post("/api/segments")
@endpoint(
    summary="Save a segment",
    tag="segments",
    roles=MANAGERS,
    body=SegmentIn,
    response=SegmentOut,
    status=201,
    errors=(409,),
    description="409 segment.code_taken. " + DEFINITION_TEXT,
)
async def create_segment(request: Request, body: SegmentIn):
    principal = request.ctx.principal
    segment = await segment_domain.create_segment(
        merchant_id=principal.merchant_id,
        code=body.code,
        name=body.name,
        definition=body.definition,
        staff_id=principal.subject_id,
    )
    return ok(_segment_out(segment), status=201)


@bp.get("/api/segments")
@endpoint(summary="The merchant's segments", tag="segments", roles=ALL_STAFF, query=SegmentQuery, response=SegmentList)
async def list_segments(request: Request, query: SegmentQuery):
    segments = await segment_domain.list_segments(merchant_id=request.ctx.principal.merchant_id, status=query.status)
    return ok(SegmentList(items=[_segment_out(s) for s in segments]))


@bp.get("/api/segments/<segment_id:int>")
@endpoint(summary="A segment", tag="segments", roles=ALL_STAFF, response=SegmentOut)
async def get_segment(request: Request, segment_id: int):
    segment = await segment_domain.get_segment(merchant_id=request.ctx.principal.merchant_id, segment_id=segment_id)
    return ok(_segment_out(segment))


@bp.patch("/api/segments/<segment_id:int>")
@endpoint(
    summary="Rename, redefine, archive or restore a segment",
    tag="segments",
    roles=MANAGERS,
    body=SegmentPatch,
    response=SegmentOut,
    description="A new definition is checked like a new segment's; snapshots already taken keep their copy. "
    + DEFINITION_TEXT,
)
async def update_segment(request: Request, segment_id: int, body: SegmentPatch):
    segment = await segment_domain.update_segment(
        merchant_id=request.ctx.principal.merchant_id,
        segment_id=segment_id,
        name=body.name,
        definition=body.definition,
        archived=body.archived,
    )
    return ok(_segment_out(segment))


@bp.get("/api/segments/<segment_id:int>/count")
@endpoint(
    summary="How many members match a segment now",
    tag="segments",
    roles=ALL_STAFF,
    response=CountOut,
    description="One COUNT over the compiled definition." + SCOPE_TEXT,
)
async def count_segment(request: Request, segment_id: int):
    count = await segment_domain.count_members(scope=scope_of(request.ctx.principal), segment_id=segment_id)
    return ok(CountOut(count=count))


@bp.get("/api/segments/<segment_id:int>/members")
@endpoint(
    summary="Preview a segment's members",
    tag="segments",
    roles=ALL_STAFF,
    query=PageQuery,
    response=PreviewOut,
    description="Pages by member id (keyset: pass next_after as after)." + SCOPE_TEXT,
)
async def preview_segment(request: Request, segment_id: int, query: PageQuery):
    total, rows = await segment_domain.preview(
        scope=scope_of(request.ctx.principal), segment_id=segment_id, limit=query.limit, after=query.after
    )
    items, next_after = _page(rows, query.limit)
    return ok(PreviewOut(total=total, items=items, next_after=next_after))


def _csv_response(handler: Any) -> Any:
    """The OpenAPI says CSV for this endpoint's success response."""
    OperationStore()[handler].responses[200] = Response.make(
        {"text/csv": {"schema": {"type": "string", "format": "binary"}}},
        "UTF-8 CSV with a BOM: the members export's columns",
    )
    return handler


@bp.get("/api/segments/<segment_id:int>/export.csv")
@_csv_response
@endpoint(
    summary="Export a segment's members as CSV",
    tag="segments",
    roles=ALL_STAFF,
    description="Streams the matching members in id order, a thousand a query, with the columns of"
    " /api/members/export.csv (never the ID-card number)." + SCOPE_TEXT,
)
async def export_segment(request: Request, segment_id: int):
    scope = scope_of(request.ctx.principal)
    await segment_domain.get_segment(merchant_id=scope.merchant_id, segment_id=segment_id)  # 404 before streaming
    chunks = segment_domain.export_csv(scope=scope, segment_id=segment_id)
    await stream_csv(request, chunks, filename=f"segment-{segment_id}.csv")


@bp.post("/api/segments/<segment_id:int>/snapshots")
@endpoint(
    summary="Freeze a segment's audience",
    tag="segments",
    roles=MANAGERS,
    response=SnapshotOut,
    status=201,
    errors=(409,),
    description="Copies the members matching now (in the caller's scope) into a snapshot that never changes"
    " afterwards: a campaign's audience. 409 segment.archived.",
)
async def take_snapshot(request: Request, segment_id: int):
    principal = request.ctx.principal
    snapshot = await segment_domain.take_snapshot(
        scope=scope_of(principal), segment_id=segment_id, staff_id=principal.subject_id
    )
    return ok(_snapshot_out(snapshot), status=201)


@bp.get("/api/segments/<segment_id:int>/snapshots/<snapshot_id:int>/members")
@endpoint(
    summary="A snapshot's members",
    tag="segments",
    roles=ALL_STAFF,
    query=PageQuery,
    response=SnapshotMembersOut,
    description="Pages by member id (keyset: pass next_after as after). A store-scoped role sees only snapshots"
    " taken for its store.",
)
async def snapshot_members(request: Request, segment_id: int, snapshot_id: int, query: PageQuery):
    snapshot, rows = await segment_domain.snapshot_members(
        scope=scope_of(request.ctx.principal),
        segment_id=segment_id,
        snapshot_id=snapshot_id,
        limit=query.limit,
        after=query.after,
    )
    items, next_after = _page(rows, query.limit)
    return ok(SnapshotMembersOut(snapshot=_snapshot_out(snapshot), items=items, next_after=next_after))
