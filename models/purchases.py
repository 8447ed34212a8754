"""Consumption records: what a member bought, and the points and growth value it earned."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class Purchase(Model):
    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    store_id = fields.IntField(null=True)
    order_no = fields.CharField(max_length=64)  # the caller's order number, unique per merchant
    amount = fields.BigIntField()  # fen actually paid
    items: list[dict[str, Any]] = fields.JSONField(default=list)  # sku, category, amount, quantity
    points = fields.BigIntField(default=0)
    growth = fields.BigIntField(default=0)
    status = fields.CharField(max_length=12, default="settled")  # settled | reversed
    occurred_at = fields.DatetimeField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "purchase"
        unique_together = (("merchant_id", "order_no"),)
        indexes = (("member_id", "occurred_at"),)
