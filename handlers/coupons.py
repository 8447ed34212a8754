"""Coupons: templates (HQ), staff grants, the member's self-claim and lists in the mini-program."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, StrictBool, StrictInt
from sanic import Blueprint
from sanic.request import Request

from models.coupons import templates
from models.coupons.issue import claimable, coupons_of, issue, next_self_slot
from models.coupons.tables import Coupon, CouponTemplate
from models.coupons.templates import MAX_FEN, last_day
from models.kernel.errors import Unprocessable
from models.members import members
from models.tenancy.merchants import merchant_zone
from server.api import MAX_ID, Out, Schema, endpoint, ok
from server.auth import ADMINS, ALL_STAFF, MEMBER, scope_of

bp = Blueprint("coupons")

Kind = Literal["full_reduction", "discount", "cash", "gift"]
Channel = Literal["self", "staff", "campaign", "gift"]
Fen = Field(ge=0, le=MAX_FEN)
WHEN = "An ISO datetime with offset, or a YYYY-MM-DD merchant-local day (from its start / through its end)"


class TemplateIn(Schema):
    kind: Kind
    name: str = Field(min_length=1, max_length=64)
    description: str = Field("", max_length=255)
    threshold: StrictInt = Field(0, ge=0, le=MAX_FEN, description="Fen; 0 = none")
    reduction: StrictInt = Field(0, ge=0, le=MAX_FEN, description="Fen (full_reduction, cash)")
    discount_permille: StrictInt = Field(0, ge=0, le=1000, description="Permille OFF, 1..999 (discount)")
    max_discount: StrictInt | None = Field(None, ge=1, le=MAX_FEN)
    gift_sku: str | None = Field(None, min_length=1, max_length=64)
    store_ids: list[StrictInt] = Field(default_factory=list, max_length=500)
    sku_include: list[str] = Field(default_factory=list, max_length=500)
    sku_exclude: list[str] = Field(default_factory=list, max_length=500)
    category_include: list[str] = Field(default_factory=list, max_length=500)
    category_exclude: list[str] = Field(default_factory=list, max_length=500)
    tier_ids: list[StrictInt] = Field(default_factory=list, max_length=100)
    valid_from: str | None = Field(None, min_length=10, max_length=40, description=WHEN)
    valid_until: str | None = Field(None, min_length=10, max_length=40, description=WHEN)
    valid_days: StrictInt | None = Field(None, ge=1, le=3660, description="Or: through the end of the Nth local day")
    total_stock: StrictInt | None = Field(None, ge=0, le=10**9, description="null: unlimited")
    per_member_limit: StrictInt = Field(1, ge=1, le=100)
    channels: list[Channel] = Field(
        default_factory=lambda: list[Channel](["self", "staff"]), min_length=1, max_length=4
    )
    stackable: StrictBool = True
    returnable: StrictBool = True


class TemplatePatch(Schema):
    name: str | None = Field(None, min_length=1, max_length=64)
    description: str | None = Field(None, max_length=255)
    total_stock: StrictInt | None = Field(None, ge=0, le=10**9, description="Never below issued; null: unlimited")
    per_member_limit: StrictInt | None = Field(None, ge=1, le=100)
    channels: list[Channel] | None = Field(None, min_length=1, max_length=4)
    valid_until: str | None = Field(None, min_length=10, max_length=40, description="Only later once issued")
    kind: Kind | None = None
    threshold: StrictInt | None = Field(None, ge=0, le=MAX_FEN)
    reduction: StrictInt | None = Field(None, ge=0, le=MAX_FEN)
    discount_permille: StrictInt | None = Field(None, ge=0, le=1000)
    max_discount: StrictInt | None = Field(None, ge=1, le=MAX_FEN)
    gift_sku: str | None = Field(None, min_length=1, max_length=64)


NULLABLE = ("total_stock", "max_discount", "gift_sku")


class TemplateOut(Out):
    id: int
    kind: str
    name: str
    description: str
    threshold: int
    reduction: int
    discount_permille: int
    max_discount: int | None
    gift_sku: str | None
    store_ids: list[int]
    sku_include: list[str]
    sku_exclude: list[str]
    category_include: list[str]
    category_exclude: list[str]
    tier_ids: list[int]
    valid_from: datetime | None
    valid_until: datetime | None
    last_day: date | None = Field(description="Last merchant-local day of fixed validity")
    valid_days: int | None
    total_stock: int | None
    issued: int
    per_member_limit: int
    channels: list[str]
    stackable: bool
    returnable: bool
    status: str
    created_at: datetime


class TemplatePage(Out):
    total: int
    items: list[TemplateOut]


class TemplateQuery(Schema):
    status: Literal["active", "voided"] | None = None
    offset: int = Field(0, ge=0, le=1_000_000)
    limit: int = Field(50, ge=1, le=200)


class ClaimableOut(TemplateOut):
    may_claim: int = Field(description="How many more the member may claim")


class ClaimableList(Out):
    items: list[ClaimableOut]


class GrantIn(Schema):
    template_id: StrictInt = Field(ge=1, le=MAX_ID)
    idempotency_key: str = Field(min_length=1, max_length=128)


class SelfClaimIn(Schema):
    template_id: StrictInt = Field(ge=1, le=MAX_ID)


class CouponOut(Out):
    id: int
    template_id: int
    member_id: int
    name: str
    kind: str
    channel: str
    status: str
    valid_from: datetime
    valid_until: datetime
    last_day: date = Field(description="Last merchant-local day the coupon can be used")
    used_at: datetime | None
    order_ref: str | None
    created_at: datetime


class CouponList(Out):
    items: list[CouponOut]


class CouponQuery(Schema):
    status: Literal["usable", "used", "expired", "voided"] | None = None


def _template(template: CouponTemplate, zone: ZoneInfo, **extra: Any) -> dict[str, Any]:
    out = TemplateOut.model_validate(
        {
            **{name: getattr(template, name) for name in TemplateOut.model_fields if hasattr(template, name)},
            "last_day": last_day(template.valid_until, zone) if template.valid_until else None,
        }
    )
    return {**out.model_dump(mode="json"), **extra}


def _coupon(coupon: Coupon, name: str, kind: str, zone: ZoneInfo) -> dict[str, Any]:
    return CouponOut(
        id=coupon.id,
        template_id=coupon.template_id,
        member_id=coupon.member_id,
        name=name,
        kind=kind,
        channel=coupon.channel,
        status=coupon.status,
        valid_from=coupon.valid_from,
        valid_until=coupon.valid_until,
        last_day=last_day(coupon.valid_until, zone),
        used_at=coupon.used_at,
        order_ref=coupon.order_ref,
        created_at=coupon.created_at,
    ).model_dump(mode="json")


@bp.post("/api/coupon-templates")
@endpoint(
    summary="Create a coupon template",
    tag="coupons",
    roles=ADMINS,
    body=TemplateIn,
    response=TemplateOut,
    status=201,
    description="满减 full_reduction, 折扣 discount (permille off), 现金 cash, 兑换 gift; fixed dates or valid_days.",
)
async def create_template(request: Request, body: TemplateIn):
    merchant_id = int(request.ctx.principal.merchant_id)
    template = await templates.create(merchant_id=merchant_id, data=body.model_dump())
    return ok(_template(template, await merchant_zone(merchant_id=merchant_id)), status=201)


@bp.get("/api/coupon-templates")
@endpoint(summary="The coupon templates", tag="coupons", roles=ALL_STAFF, query=TemplateQuery, response=TemplatePage)
async def list_templates(request: Request, query: TemplateQuery):
    merchant_id = int(request.ctx.principal.merchant_id)
    total, rows = await templates.get_all(
        merchant_id=merchant_id, status=query.status, offset=query.offset, limit=query.limit
    )
    zone = await merchant_zone(merchant_id=merchant_id)
    return ok({"total": total, "items": [_template(t, zone) for t in rows]})


@bp.get("/api/coupon-templates/<template_id:int>")
@endpoint(summary="A coupon template", tag="coupons", roles=ALL_STAFF, response=TemplateOut)
async def get_template(request: Request, template_id: int):
    merchant_id = int(request.ctx.principal.merchant_id)
    template = await templates.get(merchant_id=merchant_id, template_id=template_id)
    return ok(_template(template, await merchant_zone(merchant_id=merchant_id)))


@bp.patch("/api/coupon-templates/<template_id:int>")
@endpoint(
    summary="Change a coupon template",
    tag="coupons",
    roles=ADMINS,
    body=TemplatePatch,
    response=TemplateOut,
    errors=(409,),
    description="Name, description, stock (never below issued), limit, channels, a later valid_until; kind and "
    "amounts only before any is issued (409 coupon_template.in_use).",
)
async def patch_template(request: Request, template_id: int, body: TemplatePatch):
    merchant_id = int(request.ctx.principal.merchant_id)
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None or k in NULLABLE}
    template = await templates.update(merchant_id=merchant_id, template_id=template_id, changes=changes)
    return ok(_template(template, await merchant_zone(merchant_id=merchant_id)))


@bp.post("/api/coupon-templates/<template_id:int>/void")
@endpoint(
    summary="Void a coupon template: no new claims",
    tag="coupons",
    roles=ADMINS,
    response=TemplateOut,
    description="Coupons already claimed stay usable. A repeat changes nothing.",
)
async def void_template(request: Request, template_id: int):
    merchant_id = int(request.ctx.principal.merchant_id)
    template = await templates.void(merchant_id=merchant_id, template_id=template_id)
    return ok(_template(template, await merchant_zone(merchant_id=merchant_id)))


@bp.post("/api/members/<member_id:int>/coupons")
@endpoint(
    summary="Grant a member a coupon (staff channel)",
    tag="coupons",
    roles=ALL_STAFF,
    body=GrantIn,
    response=CouponOut,
    status=201,
    also=(200,),
    errors=(409,),
    description="201 a new coupon; 200 the first coupon of a repeated idempotency_key. 409 coupon.out_of_stock, "
    "coupon.limit_reached, coupon_template.voided; 403 coupon.channel_closed when the template has no staff channel.",
)
async def grant(request: Request, member_id: int, body: GrantIn):
    principal = request.ctx.principal
    merchant_id = int(principal.merchant_id)
    await members.ensure_visible(scope=scope_of(principal), member_id=member_id)
    issued = await issue(
        merchant_id=merchant_id,
        member_id=member_id,
        template_id=body.template_id,
        channel="staff",
        idempotency_key=body.idempotency_key,
    )
    return await _issued(merchant_id, issued.coupon, 200 if issued.replayed else 201)


async def _issued(merchant_id: int, coupon: Coupon, status: int):
    template = await CouponTemplate.get(id=coupon.template_id)
    zone = await merchant_zone(merchant_id=merchant_id)
    return ok(_coupon(coupon, template.name, template.kind, zone), status=status)


@bp.get("/api/members/<member_id:int>/coupons")
@endpoint(summary="A member's coupons", tag="coupons", roles=ALL_STAFF, query=CouponQuery, response=CouponList)
async def member_coupons(request: Request, member_id: int, query: CouponQuery):
    principal = request.ctx.principal
    merchant_id = int(principal.merchant_id)
    await members.ensure_visible(scope=scope_of(principal), member_id=member_id)
    return await _list(merchant_id, member_id, query.status)


async def _list(merchant_id: int, member_id: int, status: str | None):
    rows = await coupons_of(merchant_id=merchant_id, member_id=member_id, status=status)
    zone = await merchant_zone(merchant_id=merchant_id)
    return ok({"items": [_coupon(c, name, kind, zone) for c, name, kind in rows]})


@bp.post("/api/mp/coupons")
@endpoint(
    summary="Claim a coupon in the mini-program",
    tag="coupons",
    roles=(MEMBER,),
    body=SelfClaimIn,
    response=CouponOut,
    status=201,
    also=(200,),
    errors=(404, 409),
    description="Needs the template's self channel. An Idempotency-Key header makes a retry return the first coupon;"
    " without it a double click still takes one (both clicks use the member's next free slot as the key).",
)
async def self_claim(request: Request, body: SelfClaimIn):
    principal = request.ctx.principal
    merchant_id, member_id = int(principal.merchant_id), int(principal.subject_id)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= 100:
        raise Unprocessable("Idempotency-Key is 1..100 characters", code="validation.failed", field="Idempotency-Key")
    if key is None:
        slot = await next_self_slot(template_id=body.template_id, member_id=member_id)
        key = f"self:{member_id}:{body.template_id}:{slot}"
    else:
        key = f"mp:{member_id}:{key}"
    issued = await issue(
        merchant_id=merchant_id, member_id=member_id, template_id=body.template_id, channel="self", idempotency_key=key
    )
    return await _issued(merchant_id, issued.coupon, 200 if issued.replayed else 201)


@bp.get("/api/mp/me/coupons")
@endpoint(summary="My coupons", tag="coupons", roles=(MEMBER,), query=CouponQuery, response=CouponList)
async def my_coupons(request: Request, query: CouponQuery):
    principal = request.ctx.principal
    return await _list(int(principal.merchant_id), int(principal.subject_id), query.status)


@bp.get("/api/mp/coupon-templates")
@endpoint(summary="Coupons I can claim now", tag="coupons", roles=(MEMBER,), response=ClaimableList)
async def my_claimable(request: Request):
    principal = request.ctx.principal
    merchant_id = int(principal.merchant_id)
    rows = await claimable(merchant_id=merchant_id, member_id=int(principal.subject_id))
    zone = await merchant_zone(merchant_id=merchant_id)
    return ok({"items": [_template(t, zone, may_claim=left) for t, left in rows]})
