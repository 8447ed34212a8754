"""The package tables: what a merchant sells, what a member holds, and each visit that used it."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model

KINDS = ("uses", "time")  # N uses of a service | a time pass of D days (one visit per local day)
TEMPLATE_STATUSES = ("active", "retired")
PACKAGE_STATUSES = ("active", "used_up", "expired", "refunded")
PAY_METHODS = ("balance", "cash", "card", "wechat", "alipay", "other")


class PackageTemplate(Model):
    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField()
    name = fields.CharField(max_length=64)
    kind = fields.CharField(max_length=8)
    uses = fields.IntField(null=True)  # kind uses: N
    days = fields.IntField(null=True)  # kind time: the pass lasts this many local days
    price = fields.BigIntField()  # fen
    valid_days = fields.IntField(null=True)  # kind uses: local days after the sale; null = never expires
    service_sku = fields.CharField(max_length=64, default="")
    service_category = fields.CharField(max_length=64, default="")
    store_ids: list[int] = fields.JSONField(default=list)  # empty = every store
    status = fields.CharField(max_length=8, default="active")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "package_template"
        indexes = (("merchant_id", "status"),)


class MemberPackage(Model):
    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    template_id = fields.IntField()
    kind = fields.CharField(max_length=8)
    name = fields.CharField(max_length=64)  # the template's name at the sale
    uses_total = fields.IntField(default=0)  # kind time: 0 (never counts down)
    uses_left = fields.IntField(default=0)
    days_total = fields.IntField(default=0)  # kind time: the pass's length, for a pro-rata refund
    uses_count = fields.IntField(default=0)  # visits recorded and not reversed (every use changes this row)
    store_ids: list[int] = fields.JSONField(default=list)  # the template's at the sale
    valid_from = fields.DatetimeField()
    valid_until = fields.DatetimeField(null=True)  # exclusive; null = no expiry
    price_paid = fields.BigIntField()
    payments: list[dict[str, Any]] = fields.JSONField(default=list)  # [{method, amount}] summing to price_paid
    balance_paid = fields.BigIntField(default=0)
    balance_entry_id = fields.BigIntField(null=True)  # the stored-value debit of the sale
    status = fields.CharField(max_length=8, default="active")
    sale_key = fields.CharField(max_length=128)
    sold_at = fields.DatetimeField()
    sold_by = fields.IntField(null=True)  # staff id
    store_id = fields.IntField(null=True)
    refund_key = fields.CharField(max_length=128, null=True)
    refund_amount = fields.BigIntField(default=0)
    refund_balance = fields.BigIntField(default=0)  # of refund_amount, back to stored value
    refunded_at = fields.DatetimeField(null=True)

    class Meta:
        table = "member_package"
        unique_together = (("merchant_id", "sale_key"),)
        indexes = (("member_id", "status"), ("status", "valid_until"))


class PackageUse(Model):
    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_package_id = fields.BigIntField()
    visit_key = fields.CharField(max_length=128)
    day = fields.DateField(null=True)  # kind time: the merchant-local day (one visit a day); null once reversed
    store_id = fields.IntField(null=True)
    staff_id = fields.IntField(null=True)
    at = fields.DatetimeField()
    reversed_at = fields.DatetimeField(null=True)

    class Meta:
        table = "package_use"
        unique_together = (("member_package_id", "visit_key"), ("member_package_id", "day"))
