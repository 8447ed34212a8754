"""WeChat Pay orders of members (recharges, plans, service packages), their refunds and the anomalies staff must see."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q, Subquery
from tortoise.functions import Count
from tortoise.models import Model
from tortoise.queryset import QuerySet

from models.kernel import clock
from models.kernel.errors import Conflict, NotFound
from models.members.members import member_rows
from models.tenancy.visibility import Scope

log = logging.getLogger("huiyuan.payments")


class PayOrder(Model):
    """CREATED → PAID | CLOSED, then PAID → REFUNDING → REFUNDED, every move is a conditional update."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    kind = fields.CharField(max_length=12)  # recharge | plan | package (a service package, 套餐)
    out_trade_no = fields.CharField(max_length=32, unique=True)
    package_id = fields.IntField(null=True)  # the recharge package (kind package: the template is in the snapshot)
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
    reconcile_failures = fields.IntField(default=0)  # order queries in a row that failed (WeChat away, bad answer)
    next_reconcile_at = fields.DatetimeField(null=True)  # after a failed query: not asked again before this
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


COUNTED_STATUSES = ("PAID", "REFUNDING", "REFUNDED")  # a purchase counts against a limit even once refunded
ANOMALY_KINDS = (
    "amount_mismatch",
    "unknown_order",
    "appid_mismatch",
    "mch_id_mismatch",
    "state_conflict",
    "statement_mismatch",
)


def _open_or_counted(now: datetime) -> Q:
    return Q(status__in=COUNTED_STATUSES) | Q(status="CREATED", expires_at__gt=now)


async def purchases_counted(*, member_id: int, package_ids: list[int], now: datetime) -> dict[int, int]:
    """Per package: the member's paid orders plus the open (unexpired) unpaid ones."""
    rows = (
        await PayOrder.filter(_open_or_counted(now), member_id=member_id, package_id__in=package_ids)
        .group_by("package_id")
        .annotate(n=Count("id"))
        .values("package_id", "n")
    )
    return {row["package_id"]: int(row["n"]) for row in rows}


async def get_order(*, scope: Scope, order_id: int) -> PayOrder:
    """One of the merchant's orders; a store-scoped role sees only its own members' orders (404 otherwise)."""
    order = await PayOrder.filter(id=order_id, **member_rows(scope)).first()
    if order is None:
        raise NotFound("pay order not found", code="pay_order.not_found")
    return order


async def get_member_order(*, merchant_id: int, member_id: int, out_trade_no: str) -> PayOrder:
    """A member's own order by out_trade_no; another member's order is 404, not 403."""
    order = await PayOrder.get_or_none(out_trade_no=out_trade_no, merchant_id=merchant_id, member_id=member_id)
    if order is None:
        raise NotFound("pay order not found", code="pay_order.not_found")
    return order


async def list_orders(
    *,
    scope: Scope,
    status: str | None,
    member_id: int | None,
    kind: str | None,
    before_id: int | None,
    limit: int,
) -> list[PayOrder]:
    """The merchant's orders newest first, paged by id; a store-scoped role sees its own members' orders."""

    query = PayOrder.filter(**member_rows(scope))
    if status:
        query = query.filter(status=status)
    if member_id:
        query = query.filter(member_id=member_id)
    if kind:
        query = query.filter(kind=kind)
    if before_id:
        query = query.filter(id__lt=before_id)
    return await query.order_by("-id").limit(limit)


async def record_anomaly(
    *, merchant_id: int, kind: str, dedupe_key: str, out_trade_no: str = "", detail: dict[str, Any]
) -> bool:
    """Record something staff must look at, once per dedupe_key; True when it is new."""
    try:
        await PayAnomaly.create(
            merchant_id=merchant_id, kind=kind, out_trade_no=out_trade_no[:64], detail=detail, dedupe_key=dedupe_key
        )
    except IntegrityError:
        return False
    log.warning("pay anomaly %s for merchant %s: %s", kind, merchant_id, out_trade_no)
    return True


def _anomalies(*, scope: Scope) -> QuerySet[PayAnomaly]:
    """The anomalies a caller may see: all of the merchant's, or for a store role those of its members' orders."""
    query = PayAnomaly.filter(merchant_id=scope.merchant_id)
    if not scope.limited:
        return query
    orders = PayOrder.filter(**member_rows(scope))
    return query.filter(out_trade_no__in=Subquery(orders.values("out_trade_no")))


async def list_anomalies(*, scope: Scope, resolved: bool | None, before_id: int | None, limit: int) -> list[PayAnomaly]:
    """The payment anomalies the caller may see, newest first."""
    query = _anomalies(scope=scope)
    if resolved is not None:
        query = query.filter(resolved=resolved)
    if before_id:
        query = query.filter(id__lt=before_id)
    return await query.order_by("-id").limit(limit)


async def resolve_anomaly(*, scope: Scope, anomaly_id: int, staff_id: int, note: str) -> PayAnomaly:
    """Mark an anomaly the caller may see handled, keeping who did it and why; resolving twice is 409."""
    anomaly = await _anomalies(scope=scope).get_or_none(id=anomaly_id)
    if anomaly is None:
        raise NotFound("pay anomaly not found", code="pay_anomaly.not_found")
    resolution = {"by_staff_id": staff_id, "note": note, "at": clock.now().isoformat()}
    detail = {**anomaly.detail, "resolution": resolution}
    if not await PayAnomaly.filter(id=anomaly.id, resolved=False).update(resolved=True, detail=detail):
        raise Conflict("the anomaly is already resolved", code="pay_anomaly.resolved")
    anomaly.resolved, anomaly.detail = True, detail
    return anomaly
