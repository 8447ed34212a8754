"""Coupon tables: the template (terms, stock counter), the member's coupon, its claim slot and its reminder."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

KINDS = ("full_reduction", "discount", "cash", "gift")
CHANNELS = ("self", "staff", "campaign", "gift")
COUPON_STATUSES = ("usable", "used", "expired", "voided")


class CouponTemplate(Model):
    """What a coupon gives and who may claim it (issued only moves by the guarded stock UPDATE in issue.py)."""

    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField(db_index=True)
    kind = fields.CharField(max_length=16)  # full_reduction | discount | cash | gift
    name = fields.CharField(max_length=64)
    description = fields.CharField(max_length=255, default="")
    threshold = fields.BigIntField(default=0)  # fen; 0 = none
    reduction = fields.BigIntField(default=0)  # fen (full_reduction, cash)
    discount_permille = fields.IntField(default=0)  # permille OFF (discount): 150 = 15 % off
    max_discount = fields.BigIntField(null=True)  # fen cap of a discount
    gift_sku = fields.CharField(max_length=64, null=True)
    store_ids: list[int] = fields.JSONField(default=list)  # empty = every store
    sku_include: list[str] = fields.JSONField(default=list)
    sku_exclude: list[str] = fields.JSONField(default=list)
    category_include: list[str] = fields.JSONField(default=list)
    category_exclude: list[str] = fields.JSONField(default=list)
    tier_ids: list[int] = fields.JSONField(default=list)  # empty = every tier (and members without one)
    valid_from = fields.DatetimeField(null=True)  # UTC, fixed validity
    valid_until = fields.DatetimeField(null=True)  # UTC, fixed validity (exclusive)
    valid_days = fields.IntField(null=True)  # or: valid through the end of the Nth merchant-local day after claim
    total_stock = fields.IntField(null=True)  # null = unlimited
    issued = fields.IntField(default=0)
    per_member_limit = fields.IntField(default=1)
    channels: list[str] = fields.JSONField(default=list)  # self | staff | campaign | gift
    stackable = fields.BooleanField(default=True)  # usable together with the tier discount
    returnable = fields.BooleanField(default=True)  # back to the member when the whole order is returned
    status = fields.CharField(max_length=8, default="active")  # active | voided
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "coupon_template"


class CouponClaim(Model):
    """One claim of a template by a member: the slot unique key is the per-member limit, the key the idempotency."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    template_id = fields.IntField()
    member_id = fields.IntField()
    slot = fields.IntField(null=True)  # 1..per_member_limit; null for gifts, which the limit does not count
    idempotency_key = fields.CharField(max_length=128)
    channel = fields.CharField(max_length=8)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "coupon_claim"
        unique_together = (("template_id", "member_id", "slot"), ("template_id", "idempotency_key"))


class Coupon(Model):
    """A member's coupon: usable until used (guarded in redemption.py), expired by the job, or restored on return."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    template_id = fields.IntField()
    member_id = fields.IntField()
    claim_id = fields.BigIntField(unique=True)
    channel = fields.CharField(max_length=8)
    status = fields.CharField(max_length=8, default="usable")  # usable | used | expired | voided
    valid_from = fields.DatetimeField()
    valid_until = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)
    order_ref = fields.CharField(max_length=64, null=True)
    # set while used when what paid for its pack was refunded (models/coupons/takeback.py): a return of the order
    # that used it voids it instead of giving it back
    taken_back_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "coupon"
        indexes = (("member_id", "status", "valid_until"), ("status", "valid_until"))


class CouponReminder(Model):
    """The one expiry reminder of a coupon (its unique key makes the reminder job exactly-once)."""

    id = fields.BigIntField(primary_key=True)
    coupon_id = fields.BigIntField(unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "coupon_reminder"
