"""Recharge packages and paid membership plans a merchant sells, and the plans members hold."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


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


class PaidPlan(Model):
    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField()
    code = fields.CharField(max_length=32)
    name = fields.CharField(max_length=64)
    period = fields.CharField(max_length=12)  # month | quarter | year | lifetime
    price = fields.BigIntField()
    tier_id = fields.IntField(null=True)  # tier held while the plan runs
    points_multiplier_permille = fields.IntField(default=1000)
    benefits: dict[str, Any] = fields.JSONField(default=dict)  # monthly coupon pack, free items
    refund_rule = fields.CharField(max_length=12, default="pro_rata")  # pro_rata | none
    is_active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "paid_plan"
        unique_together = (("merchant_id", "code"),)


class MemberPlan(Model):
    """One purchased term of a plan. Renewals stack: each term starts when the previous one ends."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    plan_id = fields.IntField()
    order_id = fields.BigIntField(unique=True)
    starts_at = fields.DatetimeField()
    ends_at = fields.DatetimeField(null=True)  # null for lifetime
    status = fields.CharField(max_length=12, default="active")  # active | refunded
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "member_plan"
        indexes = (("member_id", "ends_at"),)
