"""Tiers, growth value and each member's tier, with the history of every change."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class Tier(Model):
    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField()
    code = fields.CharField(max_length=32)
    name = fields.CharField(max_length=32)
    rank = fields.IntField()  # 0 = entry tier, higher is better
    threshold = fields.BigIntField(default=0)  # in the merchant's basis unit (growth value, fen recharged…)
    points_multiplier_permille = fields.IntField(default=1000)  # 1500 = ×1.5
    discount_permille = fields.IntField(default=1000)  # 950 = orders at 95 %
    benefits: dict[str, Any] = fields.JSONField(default=dict)  # birthday gift, free items, priority flags
    upgrade_gift: dict[str, Any] = fields.JSONField(default=dict)  # points, balance (fen), coupons
    is_active = fields.BooleanField(default=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "tier"
        unique_together = (("merchant_id", "code"), ("merchant_id", "rank"))


class MemberTier(Model):
    """A member's current tier, one row per member, changed only through models.tier_rules."""

    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField(unique=True)
    tier_id = fields.IntField(null=True)
    since = fields.DatetimeField()
    keep_until = fields.DatetimeField(null=True)  # a downgrade waits until this settlement day
    manual_until = fields.DatetimeField(null=True)  # staff-assigned tier held until then
    manual_reason = fields.CharField(max_length=255, default="")
    growth_total = fields.BigIntField(default=0)  # lifetime growth value
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "member_tier"


class TierChange(Model):
    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    from_tier_id = fields.IntField(null=True)
    to_tier_id = fields.IntField(null=True)
    reason = fields.CharField(max_length=32)  # upgrade | settlement | manual | manual_expired | plan | package
    detail = fields.CharField(max_length=255, default="")
    rule_snapshot: dict[str, Any] = fields.JSONField(default=dict)
    operator_staff_id = fields.IntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "tier_change"
        indexes = (("member_id", "id"),)


class TierGiftGrant(Model):
    """The upgrade gift pack of a tier, granted once per member, tier and period."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    tier_id = fields.IntField()
    period = fields.CharField(max_length=16)  # e.g. "2027" or "once"
    gift: dict[str, Any] = fields.JSONField(default=dict)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "tier_gift_grant"
        unique_together = (("member_id", "tier_id", "period"),)


class GrowthEntry(Model):
    """Growth value ledger (never spent), summed by occurred_at for rolling windows."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    delta = fields.BigIntField()
    kind = fields.CharField(max_length=16)  # spend | activity | profile | adjust | reverse
    reason = fields.CharField(max_length=255)
    idempotency_key = fields.CharField(max_length=128)
    ref_type = fields.CharField(max_length=32, default="")
    ref_id = fields.CharField(max_length=64, default="")
    occurred_at = fields.DatetimeField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "growth_ledger"
        unique_together = (("merchant_id", "idempotency_key"),)
        indexes = (("member_id", "occurred_at"),)


class GrowthBucket(Model):
    """A member's growth per UTC day (YYYYMMDD), kept with every growth row: rolling windows read days, not rows."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    day = fields.IntField()  # UTC calendar day of occurred_at, e.g. 20270315
    total = fields.BigIntField(default=0)

    class Meta:
        table = "growth_bucket"
        unique_together = (("member_id", "day"),)


class RechargeTotal(Model):
    """Fen a member recharged minus recharges refunded, kept with every such balance row (the total_recharge basis)."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField(unique=True)
    total = fields.BigIntField(default=0)

    class Meta:
        table = "recharge_total"


class TierSettlement(Model):
    """One tier settlement run per merchant and period (e.g. "2027-03"), so a second scheduler skips it."""

    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField()
    period = fields.CharField(max_length=7)
    status = fields.CharField(max_length=12, default="running")  # running | done
    members_checked = fields.IntField(default=0)
    downgraded = fields.IntField(default=0)
    upgraded = fields.IntField(default=0)
    started_at = fields.DatetimeField(auto_now_add=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "tier_settlement"
        unique_together = (("merchant_id", "period"),)


class TierNotice(Model):
    """One downgrade notice per member and settlement period, so a rerun or a second scheduler never sends two."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    period = fields.CharField(max_length=7)  # the settlement the notice announces, e.g. "2027-04"
    from_tier_id = fields.IntField(null=True)
    to_tier_id = fields.IntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "tier_notice"
        unique_together = (("member_id", "period"),)
