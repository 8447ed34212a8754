"""The daily roll-ups of settled purchases, per merchant-local day and store, and the job's watermarks."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

AMOUNT_BUCKETS = (0, 2000, 5000, 10000, 20000, 50000, 100000)  # fen: each bucket from one edge to the next


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
    # orders by amount: amount_b<i> counts those from AMOUNT_BUCKETS[i] up to (not including) the next edge
    amount_b0 = fields.IntField(default=0)
    amount_b1 = fields.IntField(default=0)
    amount_b2 = fields.IntField(default=0)
    amount_b3 = fields.IntField(default=0)
    amount_b4 = fields.IntField(default=0)
    amount_b5 = fields.IntField(default=0)
    amount_b6 = fields.IntField(default=0)

    class Meta:
        table = "sales_day"
        unique_together = (("merchant_id", "day", "store_id"),)


class MemberDay(Model):
    """One member's settled purchases at one store on one merchant-local day: distinct members and visits of any
    range and store read this (indexed by day, covering) instead of the purchases."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    store_id = fields.IntField()
    day = fields.DateField()
    member_id = fields.IntField()
    orders = fields.IntField()

    class Meta:
        table = "member_day"
        unique_together = (("merchant_id", "day", "store_id", "member_id"),)
        # by member first: the visits histogram groups by member in index order, with no temporary table
        # by member first: the visits histogram groups by member in index order, with no temporary table
        indexes = (
            ("merchant_id", "member_id", "day", "orders"),
            ("merchant_id", "store_id", "day", "member_id", "orders"),
        )


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
    """How far the roll-up job has read a merchant's purchases, reversals and POS returns (by time, never by id)."""

    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField(unique=True)
    # rows created (or reversed) before this instant, less the overlap, have been read; None: not yet run
    scanned_until = fields.DatetimeField(null=True)
    rolled_at = fields.DatetimeField(null=True)

    class Meta:
        table = "analytics_rollup_mark"
