"""Member tags: the merchant's tags (manual and rule), a member's tags, and tagging one member or many."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, StrictBool, StrictInt
from sanic import Blueprint
from sanic.request import Request
from sanic_ext.extensions.openapi.builders import OperationStore
from sanic_ext.extensions.openapi.definitions import RequestBody

from models.kernel.errors import DomainError, Unprocessable
from models.segments import tags as tag_domain
from models.segments.bulk_csv import parse_bulk_csv
from models.segments.tables import Tag
from server.api import Out, Schema, endpoint, json_schema, ok, parse_body
from server.auth import ALL_STAFF, MANAGERS, scope_of

bp = Blueprint("segments")
CODE = r"^[A-Za-z0-9_\-]{1,32}$"
CSV_TYPES = ("text/csv", "application/csv")
RULE_TEXT = (
    "A rule is {all|any|none: [nodes]} or a condition {field, op, value[, window_days]}; fields: gender (eq/in),"
    ' age (gte/lte/between), birthday_month (eq/in; 1-12 or "this_month"), tier (in: codes or ids),'
    " origin_store (in: store ids), registered_at (between: [YYYY-MM-DD, YYYY-MM-DD]), registered_days_ago,"
    " source (in), subscribed and card_activated (eq: bool), last_purchase_days_ago (never matches a member who"
    " never bought), purchase_count, purchase_amount (fen), avg_order_value (fen; window_days optional: the"
    " merchant-local days up to today), points_balance, points_expiring_within (op within, value {days, gte}),"
    " balance (fen), plan_active (eq), coupons_used_within (window_days), coupons_usable, custom.<key> (by the"
    " field's type). 422 rule.* with the JSON path (e.g. rule.all.1.op) in `field`; nothing is written."
)


class TagIn(Schema):
    code: str = Field(pattern=CODE)
    name: str = Field(min_length=1, max_length=64)
    kind: Literal["manual", "rule"]
    rule: dict[str, Any] | None = Field(None, description="Rule tags only: " + RULE_TEXT)


class TagPatch(Schema):
    name: str | None = Field(None, min_length=1, max_length=64)
    archived: StrictBool | None = Field(None, description="true archives (no new members), false restores")


class TagOut(Out):
    id: int
    code: str
    name: str
    kind: str
    rule: dict[str, Any] | None = Field(description="Tiers named by id")
    status: str
    created_by: int | None
    created_at: datetime
    evaluated_at: datetime | None = Field(description="The last whole-merchant evaluation of a rule tag")


class TagList(Out):
    items: list[TagOut]


class TagQuery(Schema):
    status: Literal["active", "archived"] | None = None


class MemberTagIn(Schema):
    tag_id: StrictInt = Field(ge=1, le=2**31 - 1)


class MemberTagOut(Out):
    tag_id: int
    code: str
    name: str
    kind: str
    source: str = Field(description="manual | rule")
    rule: dict[str, Any] | None = Field(description="The rule that gave it, for a rule tag")
    added_by: int | None = Field(description="Staff id for a manual tag")
    added_at: datetime


class MemberTagList(Out):
    items: list[MemberTagOut]


class Added(Out):
    added: bool = Field(description="False: the member had the tag already, nothing changed")


class Removed(Out):
    removed: bool = Field(description="False: the member did not have the tag")


class BulkIn(Schema):
    member_ids: list[StrictInt] = Field(default_factory=list, max_length=tag_domain.MAX_BULK)
    phones: list[str] = Field(default_factory=list, max_length=tag_domain.MAX_BULK)
    segment_id: StrictInt | None = Field(
        None, ge=1, le=2**31 - 1, description="Every member of this segment (as it matches now, in your scope)"
    )


class UnknownLine(Out):
    line: int = Field(description="The CSV's file line (header = 1), or the 1-based position in the JSON list")
    value: str


class BulkOut(Out):
    added: int
    already: int = Field(description="Members that had the tag already (or were named twice)")
    unknown: list[UnknownLine] = Field(description="No such member visible to the caller")


def _tag_out(tag: Tag) -> TagOut:
    return TagOut.model_validate(tag)


@bp.post("/api/tags")
@endpoint(
    summary="Add a tag",
    tag="tags",
    roles=MANAGERS,
    body=TagIn,
    response=TagOut,
    status=201,
    errors=(409,),
    description="A manual tag, or a rule tag whose members are computed soon after and kept current. 409"
    " tag.code_taken. " + RULE_TEXT,
)
async def create_tag(request: Request, body: TagIn):
    principal = request.ctx.principal
    tag = await tag_domain.create_tag(
        merchant_id=principal.merchant_id,
        code=body.code,
        name=body.name,
        kind=body.kind,
        rule=body.rule,
        staff_id=principal.subject_id,
    )
    return ok(_tag_out(tag), status=201)


@bp.get("/api/tags")
@endpoint(summary="The merchant's tags", tag="tags", roles=ALL_STAFF, query=TagQuery, response=TagList)
async def list_tags(request: Request, query: TagQuery):
    tags = await tag_domain.list_tags(merchant_id=request.ctx.principal.merchant_id, status=query.status)
    return ok(TagList(items=[_tag_out(t) for t in tags]))


@bp.patch("/api/tags/<tag_id:int>")
@endpoint(summary="Rename, archive or restore a tag", tag="tags", roles=MANAGERS, body=TagPatch, response=TagOut)
async def update_tag(request: Request, tag_id: int, body: TagPatch):
    tag = await tag_domain.update_tag(
        merchant_id=request.ctx.principal.merchant_id, tag_id=tag_id, name=body.name, archived=body.archived
    )
    return ok(_tag_out(tag))


@bp.get("/api/members/<member_id:int>/tags")
@endpoint(summary="A member's tags", tag="tags", roles=ALL_STAFF, response=MemberTagList)
async def member_tags(request: Request, member_id: int):
    views = await tag_domain.member_tags(scope=scope_of(request.ctx.principal), member_id=member_id)
    items = [
        MemberTagOut(
            tag_id=v.tag.id,
            code=v.tag.code,
            name=v.tag.name,
            kind=v.tag.kind,
            source=v.source,
            rule=v.tag.rule if v.source == "rule" else None,
            added_by=v.added_by,
            added_at=v.added_at,
        )
        for v in views
    ]
    return ok(MemberTagList(items=items))


@bp.post("/api/members/<member_id:int>/tags")
@endpoint(
    summary="Tag a member with a manual tag",
    tag="tags",
    roles=MANAGERS,
    body=MemberTagIn,
    response=Added,
    status=201,
    also=(200,),
    errors=(409,),
    description="201 added (on the member's timeline), 200 had it already (nothing changed). 404 member.not_found"
    " for another store's member (store roles), tag.not_found; 409 tag.rule_managed for a rule tag, tag.archived.",
)
async def add_member_tag(request: Request, member_id: int, body: MemberTagIn):
    principal = request.ctx.principal
    added = await tag_domain.add_member_tag(
        scope=scope_of(principal), member_id=member_id, tag_id=body.tag_id, staff_id=principal.subject_id
    )
    return ok(Added(added=added), status=201 if added else 200)


@bp.delete("/api/members/<member_id:int>/tags/<tag_id:int>")
@endpoint(
    summary="Take a manual tag off a member",
    tag="tags",
    roles=MANAGERS,
    response=Removed,
    errors=(409,),
    description="On the member's timeline when removed; a repeat changes nothing. 409 tag.rule_managed.",
)
async def remove_member_tag(request: Request, member_id: int, tag_id: int):
    principal = request.ctx.principal
    removed = await tag_domain.remove_member_tag(
        scope=scope_of(principal), member_id=member_id, tag_id=tag_id, staff_id=principal.subject_id
    )
    return ok(Removed(removed=removed))


def _bulk_document(handler: Any) -> Any:
    """The OpenAPI says JSON or CSV for this endpoint's request body."""
    OperationStore()[handler].requestBody = RequestBody.make(
        {
            "application/json": json_schema(BulkIn),
            "text/csv": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "UTF-8 CSV, a header row `phone` or `member_id`, then one member a line.",
                }
            },
        },
        required=True,
    )
    return handler


@bp.post("/api/tags/<tag_id:int>/members")
@_bulk_document
@endpoint(
    summary="Tag many members with a manual tag",
    tag="tags",
    roles=MANAGERS,
    response=BulkOut,
    errors=(400, 409, 413, 415, 422),
    description=f"JSON {{member_ids}} or {{phones}} (one of them: 422 tag.bulk_ambiguous) or {{segment_id}}"
    " (alone: every member of the segment in the caller's scope, not limited in number; 404 segment.not_found),"
    " or a CSV (text/csv, one column phone or member_id); at most"
    f" {tag_domain.MAX_BULK} members (422 tag.bulk_too_large). Answers how many were added (each on its member's"
    " timeline), already had it, and the unknown lines (no such member, or another store's for a store role)."
    " Sending it again adds nothing. 409 tag.rule_managed, tag.archived; 415 for another media type.",
)
async def bulk_add(request: Request, tag_id: int):
    principal = request.ctx.principal
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type in CSV_TYPES:
        lines = await asyncio.to_thread(parse_bulk_csv, request.body)
        member_ids, phones, bad = lines.member_ids, lines.phones, lines.bad
    elif media_type == "application/json":
        body = parse_body(request, BulkIn)
        assert isinstance(body, BulkIn)
        if body.segment_id is not None:
            if body.member_ids or body.phones:
                raise Unprocessable(
                    "segment_id goes alone, without member_ids or phones", code="tag.bulk_mixed", field="segment_id"
                )
            by_segment = await tag_domain.bulk_add_segment(
                scope=scope_of(principal), tag_id=tag_id, segment_id=body.segment_id, staff_id=principal.subject_id
            )
            return ok(BulkOut(added=by_segment.added, already=by_segment.already, unknown=[]))
        if body.member_ids and body.phones:  # each list's lines are its own positions: one list a request
            raise Unprocessable("give member_ids or phones, not both", code="tag.bulk_ambiguous", field="phones")
        member_ids = [(i + 1, member_id) for i, member_id in enumerate(body.member_ids)]
        phones = [(i + 1, phone) for i, phone in enumerate(body.phones)]
        bad = []
    else:
        raise DomainError("send JSON or text/csv", code="tag.media_type", status=415)
    result = await tag_domain.bulk_add(
        scope=scope_of(principal), tag_id=tag_id, staff_id=principal.subject_id, member_ids=member_ids, phones=phones
    )
    unknown = sorted([*result.unknown, *bad])
    return ok(
        BulkOut(
            added=result.added,
            already=result.already,
            unknown=[UnknownLine(line=line, value=value) for line, value in unknown],
        )
    )
