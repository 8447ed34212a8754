"""Consumption analytics for staff: sales, top items, visit frequency, liabilities, member activity, the funnel."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime
from typing import Literal

from pydantic import Field
from sanic import Blueprint
from sanic.request import Request

from models.analytics import reports
from server.api import IsoDate, Out, Schema, endpoint, ok
from server.auth import ADMINS, MANAGERS, scope_of

bp = Blueprint("analytics", url_prefix="/api/analytics")

LAG = (
    " Dates are merchant-local. Figures read from the daily roll-ups (job analytics.rollup, every 60 s) may lag "
    "the latest purchases by up to a minute; only settled purchases count (a POS order's partial returns are not "
    "netted out yet). A range over 2 years or with from > to answers 422; a store of another merchant 404, "
    "another store for a store-scoped role 403 (which always sees its own store)."
)


class RangeQuery(Schema):
    first: IsoDate = Field(alias="from", description="First merchant-local day (YYYY-MM-DD)")
    last: IsoDate = Field(alias="to", description="Last merchant-local day, inclusive")
    store_id: int | None = Field(None, ge=1, le=2**31 - 1, description="One store (default: the whole merchant)")


class SalesQuery(RangeQuery):
    group: Literal["day", "week", "month"] = Field("day", description="Periods: days, ISO weeks or months")


class TopItemsQuery(RangeQuery):
    by: Literal["sku", "category"] = "sku"
    limit: int = Field(20, ge=1, le=200)


class SalesPeriod(Out):
    start: date = Field(description="First day of the period within the range")
    end: date = Field(description="Last day of the period within the range")
    orders: int
    revenue: int = Field(description="Fen paid")
    member_revenue: int = Field(description="Fen paid by members")
    quantity: int = Field(description="Item units")
    members: int = Field(description="Distinct members who bought in the period")
    average_order_value: int = Field(description="Fen per order, rounded down (0 without orders)")


class SalesOut(Out):
    group: str
    store_id: int | None
    periods: list[SalesPeriod]


class ItemOut(Out):
    key: str = Field(description="The SKU or category ('' for lines without one)")
    quantity: int
    revenue: int = Field(description="Fen of the lines")
    orders: int = Field(description="Orders with such a line")


class TopItemsOut(Out):
    by: str
    store_id: int | None
    items: list[ItemOut]


class BucketOut(Out):
    low: int
    high: int | None = Field(description="Visits: inclusive; fen: exclusive; None: no upper bound")
    count: int


class FrequencyOut(Out):
    store_id: int | None
    members: int = Field(description="Members with a settled purchase in the range")
    orders: int
    visits: list[BucketOut] = Field(description="Members by purchases in the range: 1, 2, 3, 4-5, 6-10, 11+")
    amounts: list[BucketOut] = Field(description="Orders by amount in fen: 0-20 元, 20-50, 50-100, ... 1000+")


class ExpiringOut(Out):
    month: date = Field(description="First day of the merchant-local month")
    points: int = Field(description="Open points whose lots expire in that month (from now on)")


class LiabilitiesOut(Out):
    as_of: datetime
    stored_value_principal: int = Field(description="Fen members paid in and still hold")
    stored_value_bonus: int = Field(description="Fen given as bonus, still held")
    points: int = Field(description="Open points not yet expired")
    expiring: list[ExpiringOut] = Field(description="This month and the next 11")


class MembersOut(Out):
    as_of: datetime
    active: int = Field(description="Last settled purchase on one of the last 30 merchant-local days, today included")
    dormant: int = Field(description="Last purchase on one of the 60 days before those")
    lost: int = Field(description="Last purchase earlier")
    never: int = Field(description="Members without a settled purchase")
    plan_terms_ended: int = Field(description="Members whose paid-plan term ended in the range (up to now)")
    plan_renewed: int = Field(description="... of them who bought another term (as GET /api/paid-plans/stats)")
    renewal_rate_permille: int | None = Field(description="plan_renewed per mille of plan_terms_ended")


@bp.get("/sales")
@endpoint(
    summary="Sales per day, week or month",
    tag="analytics",
    roles=MANAGERS,
    query=SalesQuery,
    response=SalesOut,
    errors=(404,),
    description="Orders, revenue, item units, distinct members and average order value per period." + LAG,
)
async def sales(request: Request, query: SalesQuery):
    scope = scope_of(request.ctx.principal)
    rows = await reports.sales(
        scope=scope, first=query.first, last=query.last, group=query.group, store_id=query.store_id
    )
    periods = [
        SalesPeriod(
            start=r.start,
            end=r.end,
            orders=r.orders,
            revenue=r.amount,
            member_revenue=r.member_amount,
            quantity=r.quantity,
            members=r.members,
            average_order_value=r.average,
        )
        for r in rows
    ]
    return ok(SalesOut(group=query.group, store_id=query.store_id or scope.store_id, periods=periods))


@bp.get("/top-items")
@endpoint(
    summary="Top SKUs or categories",
    tag="analytics",
    roles=MANAGERS,
    query=TopItemsQuery,
    response=TopItemsOut,
    errors=(404,),
    description="By units sold, then revenue." + LAG,
)
async def top_items(request: Request, query: TopItemsQuery):
    scope = scope_of(request.ctx.principal)
    rows = await reports.top_items(
        scope=scope, first=query.first, last=query.last, by=query.by, limit=query.limit, store_id=query.store_id
    )
    items = [ItemOut(key=r.key, quantity=r.quantity, revenue=r.amount, orders=r.orders) for r in rows]
    return ok(TopItemsOut(by=query.by, store_id=query.store_id or scope.store_id, items=items))


@bp.get("/frequency")
@endpoint(
    summary="Visit frequency and order amounts",
    tag="analytics",
    roles=MANAGERS,
    query=RangeQuery,
    response=FrequencyOut,
    errors=(404,),
    description="Members by visits and orders by amount, from the daily roll-ups." + LAG,
)
async def frequency(request: Request, query: RangeQuery):
    scope = scope_of(request.ctx.principal)
    found = await reports.frequency(scope=scope, first=query.first, last=query.last, store_id=query.store_id)
    return ok(
        FrequencyOut(
            store_id=query.store_id or scope.store_id,
            members=found.members,
            orders=found.orders,
            visits=[BucketOut(low=b.low, high=b.high, count=b.count) for b in found.visits],
            amounts=[BucketOut(low=b.low, high=b.high, count=b.count) for b in found.amounts],
        )
    )


@bp.get("/liabilities")
@endpoint(
    summary="Stored value and points outstanding",
    tag="analytics",
    roles=ADMINS,
    response=LiabilitiesOut,
    description="As of now, merchant-wide (members hold them, not stores: HQ roles only): stored value by "
    "principal and bonus from the open balance lots, open points and those expiring in each of the next 12 "
    "merchant-local months from the points lots.",
)
async def liabilities(request: Request):
    found = await reports.liabilities(merchant_id=request.ctx.principal.merchant_id)
    return ok(
        LiabilitiesOut(
            as_of=found.as_of,
            stored_value_principal=found.principal,
            stored_value_bonus=found.bonus,
            points=found.points,
            expiring=[ExpiringOut(month=e.month, points=e.points) for e in found.expiring],
        )
    )


class FunnelOut(Out):
    store_id: int | None
    scanned: int = Field(
        description="Members whose first QR scan (any code, official account or mini-program) fell in the range"
    )
    followed: int = Field(description="... of them who followed the official account (even if they left since)")
    card_claimed: int = Field(description="... who followed and claimed the member card")
    card_activated: int = Field(description="... who also activated it")
    first_purchase: int = Field(description="... who also made a settled purchase")
    second_purchase: int = Field(description="... and a second one")


@bp.get("/funnel")
@endpoint(
    summary="Conversion funnel: QR scan to second purchase",
    tag="analytics",
    roles=MANAGERS,
    query=RangeQuery,
    response=FunnelOut,
    errors=(404,),
    description="The members whose first QR scan fell in the range (merchant-local days), and how many of them "
    "have reached each step by now: followed, card claimed, card activated, first and second settled purchase; "
    "each step counts only the members who reached every step before it. A store: its members by origin store. "
    "Read from the raw rows (no lag). A range over 2 years or with from > to answers 422; a store of another "
    "merchant 404, another store for a store-scoped role 403 (which always sees its own store).",
)
async def funnel(request: Request, query: RangeQuery):
    scope = scope_of(request.ctx.principal)
    found = await reports.funnel(scope=scope, first=query.first, last=query.last, store_id=query.store_id)
    return ok(FunnelOut(store_id=query.store_id or scope.store_id, **asdict(found)))


class MembersQuery(Schema):
    first: IsoDate = Field(alias="from", description="Paid-plan terms ending from this merchant-local day")
    last: IsoDate = Field(alias="to", description="... to this one, inclusive")


@bp.get("/members")
@endpoint(
    summary="Active, dormant and lost members; paid-plan renewal",
    tag="analytics",
    roles=MANAGERS,
    query=MembersQuery,
    response=MembersOut,
    description="Members by the day of their last settled purchase, from the daily roll-ups (today's may lag by "
    "up to the job's minute; a store-scoped role: its store's members, "
    "by origin store); renewal: of the members whose paid-plan term ended in the range (up to now), those who "
    "bought another term, counted as GET /api/paid-plans/stats does. A range over 2 years or with from > to "
    "answers 422.",
)
async def members(request: Request, query: MembersQuery):
    found = await reports.activity(scope=scope_of(request.ctx.principal), first=query.first, last=query.last)
    rate = found.plan_renewed * 1000 // found.plan_terms_ended if found.plan_terms_ended else None
    return ok(
        MembersOut(
            as_of=found.as_of,
            active=found.active,
            dormant=found.dormant,
            lost=found.lost,
            never=found.never,
            plan_terms_ended=found.plan_terms_ended,
            plan_renewed=found.plan_renewed,
            renewal_rate_permille=rate,
        )
    )
