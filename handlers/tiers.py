"""Tiers: the merchant's ladder and policy, staff views and assignment, and the member's own tier."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, Field, StrictBool, StrictInt
from sanic import Blueprint
from sanic.request import Request

from handlers.schemas import CouponGiftIn, MemberTierOut, TierOut, member_tier_out
from models.coupons.issue import check_gift_templates
from models.members import members
from models.tiers import admin as tier_admin
from models.tiers import policy as tier_policy
from models.tiers.tables import Tier, TierChange
from server.api import Out, Schema, endpoint, ok
from server.auth import ADMINS, ALL_STAFF, MANAGERS, MEMBER, scope_of

bp = Blueprint("tiers")
CODE = r"^[A-Za-z0-9_\-]{1,32}$"


class Benefits(Schema):
    birthday_gift_points: StrictInt = Field(0, ge=0, le=1_000_000)
    free_items: list[str] = Field(default_factory=list, max_length=50)
    priority_support: StrictBool = False


class UpgradeGift(Schema):
    points: StrictInt = Field(0, ge=0, le=1_000_000_000)
    balance: StrictInt = Field(0, ge=0, le=1_000_000_000, description="Fen")
    coupons: list[CouponGiftIn] = Field(
        default_factory=list, max_length=10, description="Coupons granted once with the gift (gift channel templates)"
    )


class TierIn(Schema):
    code: str = Field(pattern=CODE)
    name: str = Field(min_length=1, max_length=32)
    rank: StrictInt = Field(ge=0, le=1000, description="0 is the entry tier (threshold 0); higher is better")
    threshold: StrictInt = Field(ge=0, le=10**15, description="In the basis unit: growth value or fen recharged")
    points_multiplier_permille: StrictInt = Field(1000, gt=0, le=100_000, description="1500 = ×1.5")
    discount_permille: StrictInt = Field(1000, ge=1, le=1000, description="950 = orders at 95 %")
    benefits: Benefits = Field(default_factory=Benefits)
    upgrade_gift: UpgradeGift = Field(default_factory=UpgradeGift)
    is_active: StrictBool = True


class TierList(Out):
    items: list[TierOut]


class PolicyOut(Out, tier_policy.TierPolicy):
    pass


class AssignIn(Schema):
    tier_code: str = Field(pattern=CODE)
    reason: str = Field(min_length=1, max_length=255)
    until: date = Field(description="Held until the end of this merchant-local day")


class ChangeOut(Out):
    id: int
    from_tier: str | None = Field(description="Tier code before")
    to_tier: str | None = Field(description="Tier code after")
    reason: str
    detail: str
    rule_snapshot: dict[str, Any]
    operator_staff_id: int | None
    created_at: datetime


class HistoryQuery(Schema):
    before_id: int | None = Field(None, ge=1, le=2**63 - 1)
    limit: int = Field(20, ge=1, le=100)


class HistoryPage(Out):
    items: list[ChangeOut]
    next_before_id: int | None


def _dump(body: BaseModel) -> dict[str, Any]:
    return body.model_dump()


async def _check_gift(merchant_id: int, body: TierIn) -> None:
    """The upgrade gift's coupons are the merchant's active templates open to the gift channel (422 otherwise)."""
    if body.upgrade_gift.coupons:
        await check_gift_templates(
            merchant_id=merchant_id,
            template_ids=[c.template_id for c in body.upgrade_gift.coupons],
            field="upgrade_gift.coupons",
        )


@bp.get("/api/tiers")
@endpoint(summary="The merchant's tiers", tag="tiers", roles=ALL_STAFF, response=TierList)
async def list_tiers(request: Request):
    tiers = await tier_admin.list_tiers(merchant_id=request.ctx.principal.merchant_id)
    return ok(TierList(items=[TierOut.model_validate(t) for t in tiers]))


@bp.post("/api/tiers")
@endpoint(
    summary="Add a tier",
    tag="tiers",
    roles=ADMINS,
    body=TierIn,
    response=TierOut,
    status=201,
    errors=(409,),
    description="Active tiers need strictly increasing thresholds by rank (422 tier.threshold_overlap); "
    "upgrade_gift.coupons are active templates with the gift channel (422 coupon_template.not_giftable).",
)
async def create_tier(request: Request, body: TierIn):
    await _check_gift(request.ctx.principal.merchant_id, body)
    tier = await tier_admin.create_tier(merchant_id=request.ctx.principal.merchant_id, data=_dump(body))
    return ok(TierOut.model_validate(tier), status=201)


@bp.put("/api/tiers/<tier_id:int>")
@endpoint(
    summary="Change a tier",
    tag="tiers",
    roles=ADMINS,
    body=TierIn,
    response=TierOut,
    errors=(404, 409),
    description="Members move on their next event or at settlement, never retroactively; upgrade_gift.coupons "
    "are checked as on create.",
)
async def update_tier(request: Request, tier_id: int, body: TierIn):
    await _check_gift(request.ctx.principal.merchant_id, body)
    tier = await tier_admin.update_tier(
        merchant_id=request.ctx.principal.merchant_id, tier_id=tier_id, data=_dump(body)
    )
    return ok(TierOut.model_validate(tier))


@bp.get("/api/loyalty/tier-policy")
@endpoint(summary="Tier policy", tag="loyalty", roles=ALL_STAFF, response=PolicyOut)
async def get_policy(request: Request):
    policy = await tier_policy.get_policy(merchant_id=request.ctx.principal.merchant_id)
    return ok(PolicyOut.model_validate(policy.model_dump()))


@bp.put("/api/loyalty/tier-policy")
@endpoint(
    summary="Replace the tier policy",
    tag="loyalty",
    roles=ADMINS,
    body=tier_policy.TierPolicy,
    response=PolicyOut,
    description="Growth earning, basis, monthly settlement grace, downgrade notice and the upgrade gift period.",
)
async def put_policy(request: Request, body: tier_policy.TierPolicy):
    policy = await tier_policy.save_policy(merchant_id=request.ctx.principal.merchant_id, policy=body)
    return ok(PolicyOut.model_validate(policy.model_dump()))


@bp.get("/api/mp/me/tier")
@endpoint(summary="My tier and what the next one needs", tag="mini-program", roles=(MEMBER,), response=MemberTierOut)
async def my_tier(request: Request):
    principal = request.ctx.principal
    return ok(
        member_tier_out(
            await tier_admin.member_tier_view(merchant_id=principal.merchant_id, member_id=principal.subject_id)
        )
    )


@bp.get("/api/members/<member_id:int>/tier")
@endpoint(summary="A member's tier", tag="tiers", roles=ALL_STAFF, response=MemberTierOut, errors=(404,))
async def member_tier(request: Request, member_id: int):
    principal = request.ctx.principal
    await members.ensure_visible(scope=scope_of(principal), member_id=member_id)
    return ok(
        member_tier_out(await tier_admin.member_tier_view(merchant_id=principal.merchant_id, member_id=member_id))
    )


@bp.post("/api/members/<member_id:int>/tier")
@endpoint(
    summary="Assign a tier until a date",
    tag="tiers",
    roles=MANAGERS,
    body=AssignIn,
    response=ChangeOut,
    status=201,
    errors=(404,),
    description="Held until the end of `until` (merchant-local); higher tiers earned meanwhile still apply.",
)
async def assign_tier(request: Request, member_id: int, body: AssignIn):
    principal = request.ctx.principal
    await members.ensure_visible(scope=scope_of(principal), member_id=member_id)
    change = await tier_admin.assign_tier(
        merchant_id=principal.merchant_id,
        member_id=member_id,
        tier_code=body.tier_code,
        reason=body.reason,
        until=body.until,
        operator_staff_id=principal.subject_id,
    )
    names = await tier_admin.tiers_by_id(merchant_id=principal.merchant_id)
    return ok(_change_out(change, names), status=201)


def _change_out(change: TierChange, tiers: dict[int, Tier]) -> ChangeOut:
    def code(tier_id: int | None) -> str | None:
        return tiers[tier_id].code if tier_id is not None and tier_id in tiers else None

    return ChangeOut(
        id=change.id,
        from_tier=code(change.from_tier_id),
        to_tier=code(change.to_tier_id),
        reason=change.reason,
        detail=change.detail,
        rule_snapshot=change.rule_snapshot,
        operator_staff_id=change.operator_staff_id,
        created_at=change.created_at,
    )


@bp.get("/api/members/<member_id:int>/tier/history")
@endpoint(
    summary="A member's tier changes",
    tag="tiers",
    roles=ALL_STAFF,
    query=HistoryQuery,
    response=HistoryPage,
    errors=(404,),
)
async def tier_history(request: Request, member_id: int, query: HistoryQuery):
    principal = request.ctx.principal
    await members.ensure_visible(scope=scope_of(principal), member_id=member_id)
    changes = await tier_admin.tier_history(
        merchant_id=principal.merchant_id, member_id=member_id, before_id=query.before_id, limit=query.limit
    )
    names = await tier_admin.tiers_by_id(merchant_id=principal.merchant_id)
    next_id = changes[-1].id if len(changes) == query.limit else None
    return ok(HistoryPage(items=[_change_out(c, names) for c in changes], next_before_id=next_id))
