"""Points: balances and ledgers, activity rewards, purchase points, the rules; daily sign-in and its rules."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from pydantic import AwareDatetime, Field, StrictInt
from sanic import Blueprint
from sanic.request import Request

from handlers.schemas import ChangeOut, EntryOut, LedgerQuery
from models.checkout.purchases import MAX_AMOUNT, Purchase, record_purchase_once, reverse_purchase
from models.kernel.errors import Forbidden, Unprocessable
from models.ledger.books import LedgerResult
from models.members import members
from models.points import signin
from models.points.activities import award_activity
from models.points.expiry import reverse_spend
from models.points.lots import quote_points_cash, spend_points
from models.points.reads import points_page
from models.points.rules import PointsRules, get_points_rules, save_points_rules
from server.api import Out, Schema, endpoint, json_datetime, ok, parse_body
from server.auth import ADMINS, ALL_STAFF, MANAGERS, MEMBER, scope_of

points_bp = Blueprint("points")


class PointsItem(Out):
    id: int
    delta: int
    kind: str
    reason: str
    created_at: datetime
    balance_after: int


class ExpiringOut(Out):
    points: int = Field(description="Points that expire within 30 days")
    expires_on: date | None = Field(description="Last merchant-local day the earliest of them can be used")


class PointsOut(Out):
    balance: int
    expiring_soon: ExpiringOut
    items: list[PointsItem]
    next_before_id: int | None


class ItemIn(Schema):
    sku: str = Field(min_length=1, max_length=64)
    category: str = Field("", max_length=64)
    amount: StrictInt = Field(ge=0, le=MAX_AMOUNT, description="Line total in fen")
    quantity: StrictInt = Field(1, ge=1, le=100_000)


class PurchaseIn(Schema):
    order_no: str = Field(min_length=1, max_length=64, description="Unique per merchant; a repeat returns the first")
    amount: StrictInt = Field(gt=0, le=MAX_AMOUNT, description="Fen actually paid")
    store_id: int | None = Field(None, ge=1, le=2**31 - 1)
    items: list[ItemIn] = Field(default_factory=list, max_length=500)
    occurred_at: AwareDatetime | None = None


class PurchaseOut(Out):
    id: int
    member_id: int
    store_id: int | None
    order_no: str
    amount: int
    items: list[dict[str, Any]]
    points: int = Field(description="Points earned")
    growth: int = Field(description="Growth value earned")
    status: str
    occurred_at: datetime
    created_at: datetime


class SpendIn(Schema):
    points: StrictInt = Field(gt=0, le=1_000_000_000)
    reason: str = Field(min_length=1, max_length=255)
    idempotency_key: str = Field(min_length=1, max_length=128)


class ReverseIn(Schema):
    debit_entry_id: StrictInt = Field(ge=1, le=2**63 - 1)
    reason: str = Field(min_length=1, max_length=255)
    idempotency_key: str = Field(min_length=1, max_length=128)


class ActivityIn(Schema):
    rule_code: str = Field(min_length=1, max_length=32)
    idempotency_key: str | None = Field(None, min_length=1, max_length=64, description="Required for unlimited rules")


class ActivityOut(Out):
    rule_code: str
    points: int
    growth: int
    entry_id: int | None
    replayed: bool = Field(description="The rule's limit was reached before: nothing changed")


class QuoteQuery(Schema):
    order_amount: int = Field(gt=0, le=MAX_AMOUNT, description="Order total in fen")


class QuoteOut(Out):
    order_amount: int
    points: int = Field(description="Most points the member may pay this order with")
    fen: int = Field(description="What those points are worth")


async def _summary(merchant_id: int, member_id: int, query: LedgerQuery) -> dict[str, Any]:
    """PointsOut's JSON, built straight from the rows (the same fields and values pydantic would write)."""
    page = await points_page(merchant_id=merchant_id, member_id=member_id, before_id=query.before_id, limit=query.limit)
    return {
        "balance": page.balance,
        "expiring_soon": {
            "points": page.expiring_points,
            "expires_on": page.expires_on.isoformat() if page.expires_on is not None else None,
        },
        "items": [
            {
                "id": id_,
                "delta": delta,
                "kind": kind,
                "reason": reason,
                "created_at": json_datetime(created_at),
                "balance_after": balance_after,
            }
            for id_, delta, kind, reason, created_at, balance_after in page.entries
        ],
        "next_before_id": page.next_before_id,
    }


def _change_out(result: LedgerResult) -> ChangeOut:
    entry = EntryOut.model_validate(result.entry)
    return ChangeOut(entry=entry, replayed=result.replayed, balance=result.entry.balance_after)


async def _visible(request: Request, member_id: int) -> int:
    principal = request.ctx.principal
    await members.ensure_visible(scope=scope_of(principal), member_id=member_id)
    return int(principal.merchant_id)


@points_bp.get("/api/mp/me/points")
@endpoint(summary="My points, explained", tag="points", roles=(MEMBER,), query=LedgerQuery, response=PointsOut)
async def my_points(request: Request, query: LedgerQuery):
    principal = request.ctx.principal
    return ok(await _summary(principal.merchant_id, principal.subject_id, query))


@points_bp.get("/api/members/<member_id:int>/points")
@endpoint(
    summary="A member's points, explained",
    tag="points",
    roles=ALL_STAFF,
    query=LedgerQuery,
    response=PointsOut,
    errors=(404,),
)
async def member_points(request: Request, member_id: int, query: LedgerQuery):
    return ok(await _summary(await _visible(request, member_id), member_id, query))


@points_bp.get("/api/loyalty/points-rules")
@endpoint(summary="The points rules", tag="points", roles=ALL_STAFF, response=PointsRules)
async def get_rules(request: Request):
    return ok(await get_points_rules(merchant_id=request.ctx.principal.merchant_id))


@points_bp.put("/api/loyalty/points-rules")
@endpoint(
    summary="Replace the points rules",
    tag="points",
    roles=ADMINS,
    body=PointsRules,
    response=PointsRules,
    description="Earning, exclusions, bonus items, store overrides, daily cap, activities, expiry, reminders, cash.",
)
async def put_rules(request: Request, body: PointsRules):
    rules = await save_points_rules(merchant_id=request.ctx.principal.merchant_id, value=body.model_dump(mode="json"))
    return ok(rules)


@points_bp.post("/api/members/<member_id:int>/purchases")
@endpoint(
    summary="Record a purchase and earn its points and growth",
    tag="points",
    roles=ALL_STAFF,
    body=PurchaseIn,
    response=PurchaseOut,
    status=201,
    also=(200,),
    errors=(403, 404, 409),
    description="201 the first time, 200 for a repeat of the order number (nothing earned twice).",
)
async def add_purchase(request: Request, member_id: int, body: PurchaseIn):
    principal = request.ctx.principal
    merchant_id = int(principal.merchant_id)
    scope = principal.store_scope
    if scope is not None and body.store_id not in (None, scope):
        raise Forbidden("staff of one store record purchases of that store", code="auth.store_scope", field="store_id")
    purchase, created = await record_purchase_once(
        merchant_id=merchant_id,
        member_id=member_id,
        order_no=body.order_no,
        amount=body.amount,
        items=[item.model_dump() for item in body.items],
        store_id=body.store_id or scope,
        occurred_at=body.occurred_at,
        scope=scope_of(principal),  # the member must be visible: checked in the purchase's own reads (404)
    )
    return ok(PurchaseOut.model_validate(purchase), status=201 if created else 200)


@points_bp.post("/api/members/<member_id:int>/purchases/<order_no:str>/reverse")
@endpoint(
    summary="Reverse a purchase: take back its points and growth",
    tag="points",
    roles=MANAGERS,
    response=PurchaseOut,
    errors=(404, 409),
    description="Never below zero and never what already expired; a repeat changes nothing. A POS order is 409"
    " purchase.pos_order: it is returned through POST /api/pos/orders/<id>/returns.",
)
async def reverse_order(request: Request, member_id: int, order_no: str):
    merchant_id = await _visible(request, member_id)
    purchase: Purchase = await reverse_purchase(
        merchant_id=merchant_id,
        member_id=member_id,
        order_no=order_no,
        operator_staff_id=request.ctx.principal.subject_id,
    )
    return ok(PurchaseOut.model_validate(purchase))


@points_bp.post("/api/members/<member_id:int>/points/spend")
@endpoint(
    summary="Spend a member's points",
    tag="points",
    roles=ALL_STAFF,
    body=SpendIn,
    response=ChangeOut,
    errors=(404, 409),
    description="Takes the points expiring first; 409 points.insufficient when the balance is short.",
)
async def spend(request: Request, member_id: int, body: SpendIn):
    merchant_id = await _visible(request, member_id)
    staff_id = request.ctx.principal.subject_id
    result = await spend_points(
        merchant_id=merchant_id,
        member_id=member_id,
        points=body.points,
        reason=body.reason,
        idempotency_key=body.idempotency_key,
        ref_type="staff",
        ref_id=str(staff_id),
        operator_staff_id=staff_id,
    )
    return ok(_change_out(result))


@points_bp.post("/api/members/<member_id:int>/points/reverse")
@endpoint(
    summary="Give back the points of a spend",
    tag="points",
    roles=MANAGERS,
    body=ReverseIn,
    response=ChangeOut,
    errors=(404, 409),
    description="Back to the same lots, keeping their expiry; expired lots get nothing (409 points.nothing_to_reverse)",
)
async def reverse(request: Request, member_id: int, body: ReverseIn):
    merchant_id = await _visible(request, member_id)
    result = await reverse_spend(
        merchant_id=merchant_id,
        member_id=member_id,
        debit_entry_id=body.debit_entry_id,
        idempotency_key=body.idempotency_key,
        reason=body.reason,
        operator_staff_id=request.ctx.principal.subject_id,
    )
    return ok(_change_out(result))


@points_bp.post("/api/members/<member_id:int>/activities")
@endpoint(
    summary="Reward an activity",
    tag="points",
    roles=MANAGERS,
    body=ActivityIn,
    response=ActivityOut,
    status=201,
    also=(200,),
    errors=(404, 409),
    description="201 when rewarded, 200 when the rule's once/daily limit was already reached (nothing changed).",
)
async def activity(request: Request, member_id: int, body: ActivityIn):
    merchant_id = await _visible(request, member_id)
    award = await award_activity(
        merchant_id=merchant_id,
        member_id=member_id,
        rule_code=body.rule_code,
        idempotency_key=body.idempotency_key,
        operator_staff_id=request.ctx.principal.subject_id,
    )
    out = ActivityOut(
        rule_code=award.rule_code,
        points=award.points,
        growth=award.growth,
        entry_id=award.entry_id,
        replayed=award.replayed,
    )
    return ok(out, status=200 if award.replayed else 201)


@points_bp.get("/api/members/<member_id:int>/points/quote")
@endpoint(
    summary="How many points may pay an order",
    tag="points",
    roles=ALL_STAFF,
    query=QuoteQuery,
    response=QuoteOut,
    errors=(404,),
)
async def quote(request: Request, member_id: int, query: QuoteQuery):
    merchant_id = await _visible(request, member_id)
    points, fen = await quote_points_cash(merchant_id=merchant_id, member_id=member_id, order_amount=query.order_amount)
    return ok(QuoteOut(order_amount=query.order_amount, points=points, fen=fen))


signin_bp = Blueprint("signin")
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class SignInRulesOut(Out, signin.SignInRules):
    pass


class NoBody(Schema):
    """A sign-in takes nothing: the member is the token's subject (a member_id here is refused)."""


class MakeUpIn(Schema):
    date: date


class SignInOut(Out):
    local_date: date
    streak: int
    points: int
    makeup: bool
    balance: int = Field(description="Points balance right after this sign-in")


class DayOut(Out):
    local_date: date
    streak: int
    points: int
    makeup: bool


class CalendarQuery(Schema):
    month: str | None = Field(None, description="YYYY-MM (merchant-local); the current month when omitted")


class CalendarOut(Out):
    month: str
    today: date
    days: list[DayOut]
    streak: int = Field(description="Consecutive days up to today (or yesterday when not signed yet today)")
    signed_today: bool
    next_reward: int = Field(description="Points of the next sign-in: today's, or tomorrow's once signed today")
    makeups_left: int = Field(description="Make-ups still allowed this month")


@signin_bp.get("/api/loyalty/signin-rules")
@endpoint(summary="Sign-in rules", tag="loyalty", roles=ALL_STAFF, response=SignInRulesOut)
async def get_signin_rules(request: Request):
    rules = await signin.get_rules(merchant_id=request.ctx.principal.merchant_id)
    return ok(SignInRulesOut.model_validate(rules.model_dump()))


@signin_bp.put("/api/loyalty/signin-rules")
@endpoint(
    summary="Replace the sign-in rules",
    tag="loyalty",
    roles=ADMINS,
    body=signin.SignInRules,
    response=SignInRulesOut,
    description="Streak reward table (points for day 1, 2, …), cycle or hold after it, make-up sign-ins.",
)
async def put_signin_rules(request: Request, body: signin.SignInRules):
    rules = await signin.save_rules(merchant_id=request.ctx.principal.merchant_id, rules=body)
    return ok(SignInRulesOut.model_validate(rules.model_dump()))


def _out(result: signin.SignInResult) -> SignInOut:
    record = result.sign_in
    return SignInOut(
        local_date=record.local_date,
        streak=record.streak,
        points=record.points,
        makeup=record.makeup,
        balance=result.balance,
    )


@signin_bp.post("/api/mp/sign-in")
@endpoint(
    summary="Sign in today",
    tag="mini-program",
    roles=(MEMBER,),
    response=SignInOut,
    status=201,
    errors=(409, 422),
    description="Once per merchant-local day (409 signin.already with that day's record). No body is needed; "
    "the member is the token's subject.",
)
async def sign_in(request: Request):
    if request.body:
        parse_body(request, NoBody)
    principal = request.ctx.principal
    result = await signin.sign_in(merchant_id=principal.merchant_id, member_id=principal.subject_id)
    return ok(_out(result), status=201)


@signin_bp.post("/api/mp/sign-in/makeup")
@endpoint(
    summary="Make up a missed day with points",
    tag="mini-program",
    roles=(MEMBER,),
    body=MakeUpIn,
    response=SignInOut,
    status=201,
    errors=(409,),
    description="Costs the merchant's make-up price in points; rejects today, future, too old, signed days and "
    "the monthly limit (signin.makeup_*), or 409 points.insufficient. Nothing is written on failure.",
)
async def make_up(request: Request, body: MakeUpIn):
    principal = request.ctx.principal
    result = await signin.make_up(merchant_id=principal.merchant_id, member_id=principal.subject_id, day=body.date)
    return ok(_out(result), status=201)


@signin_bp.get("/api/mp/sign-in/calendar")
@endpoint(
    summary="A month of sign-ins",
    tag="mini-program",
    roles=(MEMBER,),
    query=CalendarQuery,
    response=CalendarOut,
)
async def calendar(request: Request, query: CalendarQuery):
    principal = request.ctx.principal
    month = None
    if query.month is not None:
        if not MONTH.match(query.month):
            raise Unprocessable("month must be YYYY-MM", code="validation.failed", field="month")
        month = date(int(query.month[:4]), int(query.month[5:]), 1)
    view = await signin.month_calendar(merchant_id=principal.merchant_id, member_id=principal.subject_id, month=month)
    return ok(
        CalendarOut(
            month=view.month,
            today=view.today,
            days=[DayOut.model_validate(d) for d in view.days],
            streak=view.streak,
            signed_today=view.signed_today,
            next_reward=view.next_reward,
            makeups_left=view.makeups_left,
        )
    )


bp = Blueprint.group(points_bp, signin_bp)
