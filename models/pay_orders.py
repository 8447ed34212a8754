"""WeChat Pay orders of members (recharges and plans), their refunds and the anomalies staff must see."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class PayOrder(Model):
    """CREATED → PAID | CLOSED, then PAID → REFUNDING → REFUNDED, every move is a conditional update."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    kind = fields.CharField(max_length=12)  # recharge | plan
    out_trade_no = fields.CharField(max_length=32, unique=True)
    package_id = fields.IntField(null=True)
    plan_id = fields.IntField(null=True)
    amount = fields.BigIntField()  # fen to pay, fixed server-side
    bonus_balance = fields.BigIntField(default=0)
    bonus_points = fields.BigIntField(default=0)
    description = fields.CharField(max_length=127)
    status = fields.CharField(max_length=12, default="CREATED")
    api_version = fields.CharField(max_length=4)  # v2 | v3
    mch_id = fields.CharField(max_length=32)
    appid = fields.CharField(max_length=32)
    openid = fields.CharField(max_length=64)
    prepay_id = fields.CharField(max_length=64, default="")
    transaction_id = fields.CharField(max_length=64, default="")
    snapshot: dict[str, Any] = fields.JSONField(default=dict)  # the package/plan as sold
    paid_at = fields.DatetimeField(null=True)
    closed_at = fields.DatetimeField(null=True)
    expires_at = fields.DatetimeField()  # unpaid after this, the order is closed
    refunded_amount = fields.BigIntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "pay_order"
        indexes = (("status", "created_at"), ("member_id", "id"), ("merchant_id", "id"))


class PayRefund(Model):
    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    order_id = fields.BigIntField(db_index=True)
    out_refund_no = fields.CharField(max_length=64, unique=True)
    amount = fields.BigIntField()  # fen returned to the payer
    forfeited_bonus = fields.BigIntField(default=0)
    status = fields.CharField(max_length=12, default="PENDING")  # PENDING | SUCCESS | FAILED
    refund_id = fields.CharField(max_length=64, default="")
    reason = fields.CharField(max_length=255, default="")
    last_error = fields.CharField(max_length=255, default="")
    operator_staff_id = fields.IntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    settled_at = fields.DatetimeField(null=True)

    class Meta:
        table = "pay_refund"


class PayAnomaly(Model):
    """A verified notify that could not be applied (amount or ids mismatch, unknown order): for staff."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    kind = fields.CharField(max_length=32)  # amount_mismatch | unknown_order | appid_mismatch | state_conflict
    out_trade_no = fields.CharField(max_length=64, default="")
    detail: dict[str, Any] = fields.JSONField(default=dict)
    dedupe_key = fields.CharField(max_length=128, unique=True)  # notify id or transaction id + kind
    resolved = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "pay_anomaly"
