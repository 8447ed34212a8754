"""Stored value (balance = principal + bonus, split ledger), refunds of pay orders, paid-plan terms and stats."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import Field
from sanic import Blueprint
from sanic.request import Request

from handlers.schemas import LedgerQuery
from models.ledger import balance_lots as wallet
from models.members import members
from models.payments import orders as pay_orders
from models.payments import refund_settle as refunds
from models.payments import refunds as refund_requests
from models.plans import terms as plans
from server.api import Out, Schema, endpoint, ok
from server.auth import ADMINS, ALL_STAFF, MANAGERS, MEMBER, scope_of

bp = Blueprint("wallet")


class BalanceRowOut(Out):
    id: int
    kind: str
    reason: str
    delta: int
    balance_after: int
    principal: int | None  # fen of principal this row added (+) or took (-); None when unknown (before lots)
    bonus: int | None
    ref_type: str
    ref_id: str
    created_at: datetime


class BalanceOut(Out):
    balance: int
    principal: int
    bonus: int
    items: list[BalanceRowOut]
    next_before_id: int | None


async def _statement(merchant_id: int, member_id: int, query: LedgerQuery) -> BalanceOut:
    statement = await wallet.balance_statement(
        merchant_id=merchant_id, member_id=member_id, before_id=query.before_id, limit=query.limit
    )
    items = [
        BalanceRowOut(
            id=row.entry.id,
            kind=row.entry.kind,
            reason=row.entry.reason,
            delta=row.entry.delta,
            balance_after=row.entry.balance_after,
            principal=row.split.principal if row.split else None,
            bonus=row.split.bonus if row.split else None,
            ref_type=row.entry.ref_type,
            ref_id=row.entry.ref_id,
            created_at=row.entry.created_at,
        )
        for row in statement.rows
    ]
    next_id = items[-1].id if len(items) == query.limit else None
    return BalanceOut(
        balance=statement.balance,
        principal=statement.principal,
        bonus=statement.bonus,
        items=items,
        next_before_id=next_id,
    )


@bp.get("/api/mp/me/balance")
@endpoint(
    summary="My stored value: principal, bonus and the ledger",
    tag="wallet",
    roles=(MEMBER,),
    query=LedgerQuery,
    response=BalanceOut,
    description="principal + bonus = balance; each ledger row shows the principal/bonus it moved.",
)
async def my_balance(request: Request, query: LedgerQuery):
    principal = request.ctx.principal
    return ok(await _statement(principal.merchant_id, principal.subject_id, query))


@bp.get("/api/members/<member_id:int>/balance")
@endpoint(
    summary="A member's stored value: principal, bonus and the ledger",
    tag="wallet",
    roles=ALL_STAFF,
    query=LedgerQuery,
    response=BalanceOut,
    errors=(404,),
)
async def member_balance(request: Request, member_id: int, query: LedgerQuery):
    principal = request.ctx.principal
    await members.ensure_visible(scope=scope_of(principal), member_id=member_id)
    return ok(await _statement(principal.merchant_id, member_id, query))


class RefundIn(Schema):
    reason: str = Field(min_length=1, max_length=255)
    idempotency_key: str = Field(
        min_length=1, max_length=128, description="Unique per merchant; a repeat returns the first refund"
    )


class RefundOut(Out):
    id: int
    order_id: int
    out_refund_no: str
    amount: int = Field(description="Fen paid back through WeChat")
    forfeited_bonus: int
    status: str = Field(description="PENDING | SUCCESS | FAILED | CANCELLED")
    refund_id: str
    reason: str
    last_error: str
    operator_staff_id: int | None
    created_at: datetime
    settled_at: datetime | None


class RefundResultOut(Out):
    refund: RefundOut
    replayed: bool
    points_clawed_back: int
    points_not_clawed: int = Field(description="Gift points the member had already used: not taken below zero")
    coupons_voided: int = Field(description="The package's gift coupons still unused, voided by this refund")
    coupons_kept_used: int = Field(description="The package's gift coupons the member had already used: kept")


class RefundsQuery(Schema):
    status: Literal["PENDING", "SUCCESS", "FAILED", "CANCELLED"] | None = None
    order_id: int | None = Field(None, ge=1, le=2**63 - 1)
    before_id: int | None = Field(None, ge=1, le=2**63 - 1)
    limit: int = Field(50, ge=1, le=200)


class RefundPage(Out):
    items: list[RefundOut]
    next_before_id: int | None


@bp.post("/api/pay-orders/<order_id:int>/refund")
@endpoint(
    summary="Refund a paid order",
    tag="refunds",
    roles=MANAGERS,
    body=RefundIn,
    response=RefundResultOut,
    status=201,
    also=(200,),
    errors=(404, 409),
    description="Recharge: the unspent principal is paid back and the unspent bonus forfeited, gift points clawed "
    "back as far as they remain, the package's unused gift coupons voided (used ones stay used). Plan: the unused "
    "days pro rata, the term ends now. The balance is debited first; "
    "WeChat is called through the outbox. 409 refund.nothing_refundable / refund.not_refundable.",
)
async def refund_order(request: Request, order_id: int, body: RefundIn):
    principal = request.ctx.principal
    await pay_orders.get_order(scope=scope_of(principal), order_id=order_id)
    result = await refund_requests.request_refund(
        merchant_id=principal.merchant_id,
        order_id=order_id,
        reason=body.reason,
        idempotency_key=body.idempotency_key,
        staff_id=principal.subject_id,
    )
    out = RefundResultOut(
        refund=RefundOut.model_validate(result.refund),
        replayed=result.replayed,
        points_clawed_back=result.detail.points_clawed_back,
        points_not_clawed=result.detail.points_not_clawed,
        coupons_voided=result.coupons.voided,
        coupons_kept_used=result.coupons.kept_used,
    )
    return ok(out, status=200 if result.replayed else 201)


@bp.get("/api/pay-refunds")
@endpoint(summary="Refunds, newest first", tag="refunds", roles=MANAGERS, query=RefundsQuery, response=RefundPage)
async def list_refunds(request: Request, query: RefundsQuery):
    principal = request.ctx.principal
    rows = await refunds.list_refunds(
        scope=scope_of(principal),
        status=query.status,
        order_id=query.order_id,
        before_id=query.before_id,
        limit=query.limit,
    )
    next_id = rows[-1].id if len(rows) == query.limit else None
    return ok(RefundPage(items=[RefundOut.model_validate(r) for r in rows], next_before_id=next_id))


async def _own_refund(request: Request, refund_id: int) -> None:
    principal = request.ctx.principal
    refund = await refunds.get_refund(merchant_id=principal.merchant_id, refund_id=refund_id)
    await pay_orders.get_order(scope=scope_of(principal), order_id=refund.order_id)


@bp.post("/api/pay-refunds/<refund_id:int>/retry")
@endpoint(
    summary="Send a failed refund to WeChat again",
    tag="refunds",
    roles=MANAGERS,
    response=RefundOut,
    errors=(404, 409),
    description="FAILED -> PENDING with the same out_refund_no; 409 refund.not_failed otherwise.",
)
async def retry_refund(request: Request, refund_id: int):
    await _own_refund(request, refund_id)
    refund = await refunds.retry_refund(merchant_id=request.ctx.principal.merchant_id, refund_id=refund_id)
    return ok(RefundOut.model_validate(refund))


@bp.post("/api/pay-refunds/<refund_id:int>/cancel")
@endpoint(
    summary="Give up a failed refund and restore what it took",
    tag="refunds",
    roles=ADMINS,
    response=RefundOut,
    errors=(404, 409),
    description="The only way money comes back: the same balance lots, points, plan days and voided gift coupons "
    "are restored "
    "(ledger kind reverse, with the operator) and the order is PAID again. 409 refund.not_failed otherwise.",
)
async def cancel_refund(request: Request, refund_id: int):
    principal = request.ctx.principal
    await _own_refund(request, refund_id)
    refund = await refund_requests.cancel_refund(
        merchant_id=principal.merchant_id, refund_id=refund_id, staff_id=principal.subject_id
    )
    return ok(RefundOut.model_validate(refund))


class TermOut(Out):
    id: int
    plan_id: int
    order_id: int
    starts_at: datetime
    ends_at: datetime | None


class MyPlanOut(Out):
    plan_id: int | None
    plan_name: str | None
    ends_at: datetime | None = Field(description="When the last stacked term ends (null: none, or lifetime)")
    ends_on: date | None = Field(description="That moment as the merchant-local date")
    lifetime: bool
    terms: list[TermOut]


@bp.get("/api/mp/me/plan")
@endpoint(summary="My paid membership plan", tag="paid plans", roles=(MEMBER,), response=MyPlanOut)
async def my_plan(request: Request):
    principal = request.ctx.principal
    status = await plans.member_plan_status(merchant_id=principal.merchant_id, member_id=principal.subject_id)
    return ok(
        MyPlanOut(
            plan_id=status.plan.id if status.plan else None,
            plan_name=status.plan.name if status.plan else None,
            ends_at=status.ends_at,
            ends_on=status.ends_on,
            lifetime=status.lifetime,
            terms=[TermOut.model_validate(t) for t in status.terms],
        )
    )


class PlanStatsOut(Out):
    days: int
    ended: int = Field(description="Members whose term ended in the window")
    renewed: int = Field(description="Of those, members holding another term that runs past it")
    renewal_rate_permille: int | None


@bp.get("/api/paid-plans/stats")
@endpoint(
    summary="Paid plan renewal rate over the last 30 days", tag="paid plans", roles=MANAGERS, response=PlanStatsOut
)
async def plan_stats(request: Request):
    stats = await plans.renewal_stats(scope=scope_of(request.ctx.principal))
    return ok(
        PlanStatsOut(
            days=plans.STATS_DAYS, ended=stats.ended, renewed=stats.renewed, renewal_rate_permille=stats.rate_permille
        )
    )
