"""The daily roll-ups of settled purchases, per merchant-local day and store, and the job's watermarks."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class SalesDay(Model):
    """One store's (0: no store) settled purchases of one merchant-local day, recomputed whole from purchase."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    store_id = fields.IntField()  # 0: purchases recorded without a store
    day = fields.DateField()
    orders = fields.IntField()
    members = fields.IntField()  # distinct members of the day at the store
    amount = fields.BigIntField()  # fen paid
    member_amount = fields.BigIntField()  # fen paid by members (every purchase has one so far)
    quantity = fields.BigIntField(default=0)  # item units of the day's lines

    class Meta:
        table = "sales_day"
        unique_together = (("merchant_id", "day", "store_id"),)


class SkuDay(Model):
    """One SKU's lines at one store on one merchant-local day."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    store_id = fields.IntField()
    day = fields.DateField()
    sku = fields.CharField(max_length=64)  # "" for a line without a sku
    category = fields.CharField(max_length=64)  # "" for a line without a category
    quantity = fields.BigIntField()
    amount = fields.BigIntField()  # fen of the lines
    orders = fields.IntField()  # purchases with a line of this sku

    class Meta:
        table = "sku_day"
        unique_together = (("merchant_id", "day", "store_id", "sku", "category"),)


class CategoryDay(Model):
    """One category's lines at one store on one merchant-local day (orders: purchases with such a line)."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    store_id = fields.IntField()
    day = fields.DateField()
    category = fields.CharField(max_length=64)
    quantity = fields.BigIntField()
    amount = fields.BigIntField()
    orders = fields.IntField()

    class Meta:
        table = "category_day"
        unique_together = (("merchant_id", "day", "store_id", "category"),)


class RollupMark(Model):
    """How far the roll-up job has read a merchant's purchases, points ledger and POS returns (by id)."""

    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField(unique=True)
    purchase_id = fields.BigIntField(default=0)
    points_entry_id = fields.BigIntField(default=0)
    return_id = fields.BigIntField(default=0)
    rolled_at = fields.DatetimeField(null=True)

    class Meta:
        table = "analytics_rollup_mark"
