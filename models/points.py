"""Points lots: every credit is a lot with an expiry, every debit records the lots it used."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class PointsLot(Model):
    """Points credited by one ledger row, spent oldest-expiry first and expired by what remains."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    entry_id = fields.BigIntField(unique=True)  # the points_ledger row that credited it
    amount = fields.BigIntField()
    remaining = fields.BigIntField()
    expires_at = fields.DatetimeField(null=True)  # UTC, from the merchant-local policy; null never expires
    status = fields.CharField(max_length=8, default="open")  # open | spent | expired
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "points_lot"
        indexes = (("member_id", "status", "expires_at", "id"), ("status", "expires_at", "id"))


class PointsLotUse(Model):
    """How much of a lot one debit consumed (and how much a reversal has given back)."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    debit_entry_id = fields.BigIntField(db_index=True)
    lot_id = fields.BigIntField(db_index=True)
    amount = fields.BigIntField()
    restored = fields.BigIntField(default=0)

    class Meta:
        table = "points_lot_use"


class PointsReminder(Model):
    """One expiry reminder per member, expiry day and lead time, so a rerun never sends it twice."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    expires_on = fields.DateField()  # merchant-local day the points expire
    days_before = fields.IntField()
    points = fields.BigIntField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "points_reminder"
        unique_together = (("member_id", "expires_on", "days_before"),)
