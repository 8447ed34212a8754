"""Stored-value lots: every balance credit keeps its principal and bonus apart, for refunds and reports."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class BalanceLot(Model):
    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    entry_id = fields.BigIntField(unique=True)  # the balance_ledger row that credited it
    order_id = fields.BigIntField(null=True, db_index=True)  # the pay order it came from, if any
    principal = fields.BigIntField(default=0)  # fen paid by the member (refundable)
    bonus = fields.BigIntField(default=0)  # fen given by the merchant (forfeited on refund)
    principal_remaining = fields.BigIntField(default=0)
    bonus_remaining = fields.BigIntField(default=0)
    status = fields.CharField(max_length=8, default="open")  # open | spent | refunded
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "balance_lot"
        indexes = (("member_id", "status", "id"),)


class BalanceLotUse(Model):
    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    debit_entry_id = fields.BigIntField(db_index=True)
    lot_id = fields.BigIntField(db_index=True)
    principal = fields.BigIntField(default=0)
    bonus = fields.BigIntField(default=0)
    restored = fields.BooleanField(default=False)

    class Meta:
        table = "balance_lot_use"
