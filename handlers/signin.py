"""Daily sign-in for members (mini-program) and the merchant's sign-in rules."""

from __future__ import annotations

import re
from datetime import date

from pydantic import Field
from sanic import Blueprint
from sanic.request import Request

from models.kernel.errors import Unprocessable
from models.points import signin
from server.api import Out, Schema, endpoint, ok, parse_body
from server.auth import ADMINS, ALL_STAFF, MEMBER

bp = Blueprint("signin")
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


@bp.get("/api/loyalty/signin-rules")
@endpoint(summary="Sign-in rules", tag="loyalty", roles=ALL_STAFF, response=SignInRulesOut)
async def get_rules(request: Request):
    rules = await signin.get_rules(merchant_id=request.ctx.principal.merchant_id)
    return ok(SignInRulesOut.model_validate(rules.model_dump()))


@bp.put("/api/loyalty/signin-rules")
@endpoint(
    summary="Replace the sign-in rules",
    tag="loyalty",
    roles=ADMINS,
    body=signin.SignInRules,
    response=SignInRulesOut,
    description="Streak reward table (points for day 1, 2, …), cycle or hold after it, make-up sign-ins.",
)
async def put_rules(request: Request, body: signin.SignInRules):
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


@bp.post("/api/mp/sign-in")
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


@bp.post("/api/mp/sign-in/makeup")
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


@bp.get("/api/mp/sign-in/calendar")
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
