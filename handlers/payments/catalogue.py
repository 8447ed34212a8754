"""What a merchant sells through WeChat Pay: recharge packages and paid plans (staff), and the member's view."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, ConfigDict, Field, StrictBool, StrictInt
from sanic import Blueprint
from sanic.request import Request

from handlers.schemas import CouponGiftIn
from models.payments import catalogue as recharge
from server.api import Out, Schema, endpoint, ok
from server.auth import ALL_STAFF, MANAGERS, MEMBER

bp = Blueprint("pay_catalogue")
FEN_MAX = 100_000_000  # one million yuan: anything above is a typo


class PackageGiftsIn(Schema):
    coupons: list[CouponGiftIn] = Field(default_factory=list, max_length=10)


class PackageIn(Schema):
    name: str = Field(min_length=1, max_length=64)
    price: StrictInt = Field(gt=0, le=FEN_MAX, description="Fen paid, credited as principal")
    bonus_balance: StrictInt = Field(0, ge=0, le=FEN_MAX, description="Fen given on top, kept apart as bonus")
    bonus_points: StrictInt = Field(0, ge=0, le=1_000_000_000)
    gift_tier_id: StrictInt | None = Field(
        None, ge=1, description="Tier the member is placed on when the order is paid (if above theirs), held for a year"
    )
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None
    per_member_limit: StrictInt = Field(0, ge=0, le=1000, description="Purchases per member; 0 = unlimited")
    sort: StrictInt = Field(0, ge=-10_000, le=10_000)
    is_active: StrictBool = True
    gifts: PackageGiftsIn = Field(
        default_factory=PackageGiftsIn, description="Coupons granted once per paid order (gift channel)"
    )


class PackageOut(Out):
    id: int
    name: str
    price: int
    bonus_balance: int
    bonus_points: int
    gift_tier_id: int | None
    gifts: dict[str, Any]
    valid_from: datetime | None
    valid_until: datetime | None
    per_member_limit: int
    sort: int
    is_active: bool


class PackageList(Out):
    items: list[PackageOut]


class PlanBenefitsIn(Schema):
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)  # free items and the like, kept as given

    coupons: list[CouponGiftIn] = Field(
        default_factory=list, max_length=10, description="The monthly coupon pack, granted each month of the term"
    )


class PlanIn(Schema):
    code: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str = Field(min_length=1, max_length=64)
    period: Literal["month", "quarter", "year", "lifetime"]
    price: StrictInt = Field(gt=0, le=FEN_MAX)
    tier_id: StrictInt | None = Field(None, ge=1, description="Tier held while the plan runs")
    points_multiplier_permille: StrictInt = Field(1000, gt=0, le=100_000, description="1500 = points ×1.5")
    benefits: PlanBenefitsIn = Field(default_factory=PlanBenefitsIn, description="Monthly coupon pack, free items…")
    refund_rule: Literal["pro_rata", "none"] = "pro_rata"
    is_active: StrictBool = True


class PlanOut(Out):
    id: int
    code: str
    name: str
    period: str
    price: int
    tier_id: int | None
    points_multiplier_permille: int
    benefits: dict[str, Any]
    refund_rule: str
    is_active: bool


class PlanList(Out):
    items: list[PlanOut]


class OfferOut(PackageOut):
    remaining: int | None = Field(description="Purchases this member may still make; null = unlimited")


class CustomAmountOut(Out):
    min: int
    max: int


class OfferList(Out):
    items: list[OfferOut]
    custom_amount: CustomAmountOut = Field(description="Limits (fen) of a recharge without a package")


@bp.get("/api/recharge-packages")
@endpoint(summary="Recharge packages", tag="payments", roles=ALL_STAFF, response=PackageList)
async def list_packages(request: Request):
    items = await recharge.list_packages(merchant_id=request.ctx.principal.merchant_id)
    return ok(PackageList(items=[PackageOut.model_validate(p) for p in items]))


@bp.post("/api/recharge-packages")
@endpoint(
    summary="Add a recharge package",
    tag="payments",
    roles=MANAGERS,
    body=PackageIn,
    response=PackageOut,
    status=201,
    errors=(422,),
    description="Pay `price` fen, get `price` principal plus `bonus_balance` bonus fen and `bonus_points` "
    "(and gifts.coupons, granted at settlement). "
    f"Without a package a member may recharge a custom amount of {recharge.CUSTOM_AMOUNT_MIN}.."
    f"{recharge.CUSTOM_AMOUNT_MAX} fen (no bonus).",
)
async def create_package(request: Request, body: PackageIn):
    package = await recharge.create_package(merchant_id=request.ctx.principal.merchant_id, values=body.model_dump())
    return ok(PackageOut.model_validate(package), status=201)


@bp.put("/api/recharge-packages/<package_id:int>")
@endpoint(
    summary="Replace a recharge package",
    tag="payments",
    roles=MANAGERS,
    body=PackageIn,
    response=PackageOut,
    errors=(404,),
    description="Orders already created keep the terms they were sold with.",
)
async def update_package(request: Request, package_id: int, body: PackageIn):
    package = await recharge.update_package(
        merchant_id=request.ctx.principal.merchant_id, package_id=package_id, values=body.model_dump()
    )
    return ok(PackageOut.model_validate(package))


@bp.get("/api/paid-plans")
@endpoint(summary="Paid membership plans", tag="payments", roles=ALL_STAFF, response=PlanList)
async def list_plans(request: Request):
    items = await recharge.list_plans(merchant_id=request.ctx.principal.merchant_id)
    return ok(PlanList(items=[PlanOut.model_validate(p) for p in items]))


@bp.post("/api/paid-plans")
@endpoint(
    summary="Add a paid membership plan",
    tag="payments",
    roles=MANAGERS,
    body=PlanIn,
    response=PlanOut,
    status=201,
    errors=(409, 422),
    description="409 paid_plan.code_taken when the code is in use; benefits.coupons are active templates with the "
    "gift channel (422 coupon_template.not_giftable).",
)
async def create_plan(request: Request, body: PlanIn):
    plan = await recharge.create_plan(merchant_id=request.ctx.principal.merchant_id, values=body.model_dump())
    return ok(PlanOut.model_validate(plan), status=201)


@bp.put("/api/paid-plans/<plan_id:int>")
@endpoint(
    summary="Replace a paid membership plan",
    tag="payments",
    roles=MANAGERS,
    body=PlanIn,
    response=PlanOut,
    errors=(404, 409, 422),
    description="Terms already bought keep the order's snapshot; benefits.coupons are checked as on create.",
)
async def update_plan(request: Request, plan_id: int, body: PlanIn):
    plan = await recharge.update_plan(
        merchant_id=request.ctx.principal.merchant_id, plan_id=plan_id, values=body.model_dump()
    )
    return ok(PlanOut.model_validate(plan))


@bp.get("/api/mp/recharge-packages")
@endpoint(
    summary="Recharge packages I can buy now",
    tag="miniprogram",
    roles=(MEMBER,),
    response=OfferList,
    description="Active packages inside their validity window, with the purchases my per-member limit allows.",
)
async def my_packages(request: Request):
    principal = request.ctx.principal
    offers = await recharge.offers_for_member(merchant_id=principal.merchant_id, member_id=principal.subject_id)
    items = [OfferOut(**PackageOut.model_validate(o.package).model_dump(), remaining=o.remaining) for o in offers]
    limits = CustomAmountOut(min=recharge.CUSTOM_AMOUNT_MIN, max=recharge.CUSTOM_AMOUNT_MAX)
    return ok(OfferList(items=items, custom_amount=limits))


@bp.get("/api/mp/paid-plans")
@endpoint(summary="Paid plans on sale", tag="miniprogram", roles=(MEMBER,), response=PlanList)
async def my_plans(request: Request):
    items = await recharge.list_plans(merchant_id=request.ctx.principal.merchant_id, active_only=True)
    return ok(PlanList(items=[PlanOut.model_validate(p) for p in items]))
