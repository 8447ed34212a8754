"""What a merchant sells through WeChat Pay: recharge packages and paid plans (the plan tables are models/plans)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.models import Model

from models.coupons.issue import check_gift_templates
from models.kernel import clock
from models.kernel.errors import Conflict, NotFound, Unprocessable
from models.payments.orders import purchases_counted
from models.plans.terms import PaidPlan
from models.tiers.tables import Tier


class RechargePackage(Model):
    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField()
    name = fields.CharField(max_length=64)
    price = fields.BigIntField()  # fen paid, credited as principal
    bonus_balance = fields.BigIntField(default=0)  # fen given on top, kept apart as bonus
    bonus_points = fields.BigIntField(default=0)
    gift_tier_id = fields.IntField(null=True)
    gifts: dict[str, Any] = fields.JSONField(default=dict)  # coupons (marketing issue)
    valid_from = fields.DatetimeField(null=True)
    valid_until = fields.DatetimeField(null=True)
    per_member_limit = fields.IntField(default=0)  # 0 = unlimited
    sort = fields.IntField(default=0)
    is_active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "recharge_package"


PERIODS = ("month", "quarter", "year", "lifetime")
REFUND_RULES = ("pro_rata", "none")
# Custom-amount recharges (no package, no bonus) are allowed for every merchant within these limits (fen).
CUSTOM_AMOUNT_MIN = 1
CUSTOM_AMOUNT_MAX = 500_000
PACKAGE_FIELDS = (
    "name",
    "price",
    "bonus_balance",
    "bonus_points",
    "gift_tier_id",
    "gifts",
    "valid_from",
    "valid_until",
    "per_member_limit",
    "sort",
    "is_active",
)
PLAN_FIELDS = (
    "code",
    "name",
    "period",
    "price",
    "tier_id",
    "points_multiplier_permille",
    "benefits",
    "refund_rule",
    "is_active",
)


async def _check_tier(*, merchant_id: int, tier_id: int | None, field: str) -> None:
    """A named tier must be one of the merchant's."""

    if tier_id is not None and not await Tier.exists(id=tier_id, merchant_id=merchant_id):
        raise Unprocessable("no such tier", code="tier.not_found", field=field)


async def _check_package(*, merchant_id: int, values: dict[str, Any]) -> None:
    if values["price"] <= 0:
        raise Unprocessable("price must be more than 0 fen", code="recharge_package.price_invalid", field="price")
    if values.get("valid_from") and values.get("valid_until") and values["valid_from"] >= values["valid_until"]:
        raise Unprocessable(
            "valid_until must be after valid_from", code="recharge_package.window_invalid", field="valid_until"
        )
    await _check_tier(merchant_id=merchant_id, tier_id=values.get("gift_tier_id"), field="gift_tier_id")
    coupons = (values.get("gifts") or {}).get("coupons") or []
    if coupons:
        await check_gift_templates(
            merchant_id=merchant_id, template_ids=[c["template_id"] for c in coupons], field="gifts.coupons"
        )


async def create_package(*, merchant_id: int, values: dict[str, Any]) -> RechargePackage:
    """Add a recharge package: a positive price, bonuses never negative, a valid window that is not empty."""
    await _check_package(merchant_id=merchant_id, values=values)
    return await RechargePackage.create(merchant_id=merchant_id, **{k: values[k] for k in PACKAGE_FIELDS})


async def get_package(*, merchant_id: int, package_id: int) -> RechargePackage:
    """One of the merchant's packages (404 otherwise)."""
    package = await RechargePackage.get_or_none(id=package_id, merchant_id=merchant_id)
    if package is None:
        raise NotFound("recharge package not found", code="recharge_package.not_found")
    return package


async def update_package(*, merchant_id: int, package_id: int, values: dict[str, Any]) -> RechargePackage:
    """Replace a package's terms; orders already created keep the snapshot they were sold with."""
    package = await get_package(merchant_id=merchant_id, package_id=package_id)
    await _check_package(merchant_id=merchant_id, values=values)
    package.update_from_dict({k: values[k] for k in PACKAGE_FIELDS})
    await package.save()
    return package


async def list_packages(*, merchant_id: int) -> list[RechargePackage]:
    """Every package of the merchant, in display order."""
    return await RechargePackage.filter(merchant_id=merchant_id).order_by("sort", "id")


def _on_sale(package: RechargePackage, now: datetime) -> bool:
    return (
        package.is_active
        and (package.valid_from is None or package.valid_from <= now)
        and (package.valid_until is None or now < package.valid_until)
    )


def package_on_sale(*, package: RechargePackage, now: datetime) -> bool:
    """Active and inside its validity window."""
    return _on_sale(package, now)


async def _check_plan(*, merchant_id: int, values: dict[str, Any]) -> None:
    if values["price"] <= 0:
        raise Unprocessable("price must be more than 0 fen", code="paid_plan.price_invalid", field="price")
    if values["period"] not in PERIODS:
        raise Unprocessable(f"period must be one of {', '.join(PERIODS)}", code="paid_plan.period", field="period")
    if values["refund_rule"] not in REFUND_RULES:
        raise Unprocessable("refund_rule must be pro_rata or none", code="paid_plan.refund_rule", field="refund_rule")
    if values["points_multiplier_permille"] <= 0:
        raise Unprocessable(
            "points_multiplier_permille must be positive",
            code="paid_plan.multiplier_invalid",
            field="points_multiplier_permille",
        )
    await _check_tier(merchant_id=merchant_id, tier_id=values.get("tier_id"), field="tier_id")
    coupons = (values.get("benefits") or {}).get("coupons") or []
    if coupons:
        await check_gift_templates(
            merchant_id=merchant_id, template_ids=[c["template_id"] for c in coupons], field="benefits.coupons"
        )


async def _save_plan(plan: PaidPlan) -> PaidPlan:
    try:
        await plan.save()
    except IntegrityError:
        raise Conflict("a plan with this code exists", code="paid_plan.code_taken", field="code") from None
    return plan


async def create_plan(*, merchant_id: int, values: dict[str, Any]) -> PaidPlan:
    """Add a paid membership plan; its code is unique per merchant."""
    await _check_plan(merchant_id=merchant_id, values=values)
    return await _save_plan(PaidPlan(merchant_id=merchant_id, **{k: values[k] for k in PLAN_FIELDS}))


async def get_plan(*, merchant_id: int, plan_id: int) -> PaidPlan:
    """One of the merchant's plans (404 otherwise)."""
    plan = await PaidPlan.get_or_none(id=plan_id, merchant_id=merchant_id)
    if plan is None:
        raise NotFound("paid plan not found", code="paid_plan.not_found")
    return plan


async def update_plan(*, merchant_id: int, plan_id: int, values: dict[str, Any]) -> PaidPlan:
    """Replace a plan's terms; terms already bought keep the order's snapshot."""
    plan = await get_plan(merchant_id=merchant_id, plan_id=plan_id)
    await _check_plan(merchant_id=merchant_id, values=values)
    plan.update_from_dict({k: values[k] for k in PLAN_FIELDS})
    return await _save_plan(plan)


async def list_plans(*, merchant_id: int, active_only: bool = False) -> list[PaidPlan]:
    """The merchant's plans, by price."""
    query = PaidPlan.filter(merchant_id=merchant_id)
    if active_only:
        query = query.filter(is_active=True)
    return await query.order_by("price", "id")


@dataclass(frozen=True)
class PackageOffer:
    package: RechargePackage
    remaining: int | None  # purchases left for this member; None = unlimited


async def offers_for_member(*, merchant_id: int, member_id: int) -> list[PackageOffer]:
    """Packages a member can buy now, with how many purchases the per-member limit still allows."""

    now = clock.now()
    packages = [p for p in await list_packages(merchant_id=merchant_id) if _on_sale(p, now)]
    limited = [p.id for p in packages if p.per_member_limit > 0]
    used = await purchases_counted(member_id=member_id, package_ids=limited, now=now) if limited else {}
    return [
        PackageOffer(p, max(0, p.per_member_limit - used.get(p.id, 0)) if p.per_member_limit > 0 else None)
        for p in packages
    ]
