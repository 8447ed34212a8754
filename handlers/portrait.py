"""The member portrait (画像) for staff: one call, every figure of models/portrait as of one instant."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import Field
from sanic import Blueprint
from sanic.request import Request

from handlers.schemas import (
    ActivePackage,
    ActivityOut,
    MemberOut,
    MemberTierOut,
    member_tier_out,
    serialize,
)
from models.portrait import portrait as member_portrait
from models.portrait.rfm import WINDOW_DAYS
from server.api import Out, endpoint, ok
from server.auth import ALL_STAFF, scope_of

bp = Blueprint("portrait")


class StoreRef(Out):
    id: int
    name: str | None


class CardState(Out):
    status: str = Field(description="claimed | activated | removed")
    code: str
    claimed_at: datetime
    activated_at: datetime | None
    removed_at: datetime | None


class Attributes(MemberOut):
    member_no: str | None
    source: str = Field(description="staff | oa_qr | card | mp | import")
    registered_at: datetime
    origin_store: StoreRef | None
    subscribed: bool = Field(description="Follows the official account now")
    subscribed_at: datetime | None
    unsubscribed_at: datetime | None
    card: CardState | None = Field(description="The newest WeChat member card; None when none was claimed")


class PointsAsset(Out):
    balance: int
    expiring_30d: int = Field(description="Open points that expire within 30 days")
    expires_on: date | None = Field(description="Last merchant-local day the earliest of them can be used")


class StoredValue(Out):
    balance: int = Field(description="Fen")
    principal: int = Field(description="Fen the member paid in, still held")
    bonus: int = Field(description="Fen given as bonus, still held")


class CouponBrief(Out):
    coupon_id: int
    name: str
    kind: str
    threshold: int
    reduction: int
    discount_permille: int
    valid_until: datetime


class Coupons(Out):
    usable: int = Field(description="Usable now (status usable, within validity)")
    soonest: list[CouponBrief] = Field(description="The 5 soonest expiring")


class PlanHeld(Out):
    plan_id: int
    code: str
    name: str
    ends_at: datetime | None
    ends_on: date | None = Field(description="Merchant-local day the last stacked term ends")
    lifetime: bool


class Assets(Out):
    points: PointsAsset
    stored_value: StoredValue
    coupons: Coupons
    tier: MemberTierOut
    plan: PlanHeld | None = Field(description="The paid plan held now; None without one")
    packages: list[ActivePackage] = Field(description="Active packages (套餐/次卡) with uses left, newest first")


class Segment(Out):
    code: str = Field(description="important_value | important_develop | important_keep | important_retain | general_*")
    name: str = Field(description="重要价值客户, 重要发展客户, ... (models/portrait/rfm.py)")


class RfmOut(Out):
    window_days: int
    recency_days: int | None = Field(description="Days since the last settled purchase in the window")
    frequency: int = Field(description="Settled purchases in the window")
    monetary: int = Field(description="Fen of settled purchases in the window")
    recency_score: int | None = Field(description="1-5 by the merchant's quintiles; None before the first run")
    frequency_score: int | None
    monetary_score: int | None
    segment: Segment | None
    computed_at: datetime | None = Field(description="When the quintile cuts were computed (nightly job)")
    member_count: int | None = Field(description="Members the cuts were computed over")


class StorePreference(Out):
    store_id: int | None
    name: str | None
    visits: int
    amount: int = Field(description="Fen")


class ItemPreference(Out):
    key: str | None = Field(description="Category or SKU (None: lines without a category)")
    quantity: int
    amount: int = Field(description="Fen of the lines")


class Preferences(Out):
    purchases_read: int = Field(description="Of the member's last 200 settled purchases")
    stores: list[StorePreference] = Field(description="Top 10 by visits")
    categories: list[ItemPreference] = Field(description="Top 10 by quantity")
    skus: list[ItemPreference] = Field(description="Top 10 by quantity")
    weekdays: list[int] = Field(description="7 visit counts, Monday first, merchant-local")
    hours: list[int] = Field(description="24 visit counts by merchant-local hour")


class PortraitTag(Out):
    tag_id: int
    code: str
    name: str
    source: str = Field(description="manual (added_by: the staff id) | rule (the tag's rule gave it)")
    rule: dict[str, Any] | None = Field(description="The rule that gave it, for a rule tag")
    added_by: int | None
    added_at: datetime


class PortraitOut(Out):
    as_of: datetime
    attributes: Attributes
    assets: Assets
    tags: list[PortraitTag] = Field(description="The member's active tags, each with where it came from")
    rfm: RfmOut
    preferences: Preferences
    timeline: list[ActivityOut] = Field(description="The last 20 timeline events, newest first")


def _items(ranked: list[member_portrait.Ranked]) -> list[ItemPreference]:
    return [
        ItemPreference(key=None if r.key is None else str(r.key), quantity=r.count, amount=r.amount) for r in ranked
    ]


async def portrait_out(found: member_portrait.Portrait) -> PortraitOut:
    member, card, plan, rfm, prefs = found.member, found.card, found.plan, found.rfm, found.preferences
    profile = await serialize(member, balances=(found.points.balance, found.balance))
    attributes = Attributes(
        **profile.model_dump(),
        member_no=member.member_no,
        source=member.source,
        registered_at=member.created_at,
        origin_store=StoreRef(id=member.origin_store_id, name=found.origin_store_name)
        if member.origin_store_id is not None
        else None,
        subscribed=member.subscribed,
        subscribed_at=member.subscribed_at,
        unsubscribed_at=member.unsubscribed_at,
        card=CardState.model_validate(card) if card is not None else None,
    )
    assets = Assets(
        points=PointsAsset(
            balance=found.points.balance,
            expiring_30d=found.points.expiring_points,
            expires_on=found.points.expires_on,
        ),
        stored_value=StoredValue(
            balance=found.balance, principal=found.balance_split.principal, bonus=found.balance_split.bonus
        ),
        coupons=Coupons(
            usable=found.coupons_usable, soonest=[CouponBrief.model_validate(c) for c in found.coupons_soonest]
        ),
        tier=member_tier_out(found.tier),
        plan=PlanHeld(
            plan_id=plan.plan.id,
            code=plan.plan.code,
            name=plan.plan.name,
            ends_at=plan.ends_at,
            ends_on=plan.ends_on,
            lifetime=plan.lifetime,
        )
        if plan.plan is not None
        else None,
        packages=[ActivePackage.model_validate(p) for p in found.packages],
    )
    return PortraitOut(
        as_of=found.as_of,
        attributes=attributes,
        assets=assets,
        tags=[
            PortraitTag(
                tag_id=t.tag.id,
                code=t.tag.code,
                name=t.tag.name,
                source=t.source,
                rule=t.tag.rule if t.source == "rule" else None,
                added_by=t.added_by,
                added_at=t.added_at,
            )
            for t in found.tags
        ],
        rfm=RfmOut(
            window_days=WINDOW_DAYS,
            recency_days=rfm.recency_days,
            frequency=rfm.frequency,
            monetary=rfm.monetary,
            recency_score=rfm.recency_score,
            frequency_score=rfm.frequency_score,
            monetary_score=rfm.monetary_score,
            segment=Segment(code=rfm.segment, name=rfm.segment_name or "") if rfm.segment is not None else None,
            computed_at=rfm.computed_at,
            member_count=rfm.member_count,
        ),
        preferences=Preferences(
            purchases_read=prefs.purchases_read,
            stores=[
                StorePreference(
                    store_id=r.key if isinstance(r.key, int) else None, name=r.name, visits=r.count, amount=r.amount
                )
                for r in prefs.stores
            ],
            categories=_items(prefs.categories),
            skus=_items(prefs.skus),
            weekdays=prefs.weekdays,
            hours=prefs.hours,
        ),
        timeline=[ActivityOut.model_validate(a) for a in found.timeline],
    )


@bp.get("/api/members/<member_id:int>/portrait")
@endpoint(
    summary="A member's portrait (画像)",
    tag="members",
    roles=ALL_STAFF,
    response=PortraitOut,
    errors=(404,),
    description="Attributes, assets (points expiring in 30 days, stored value principal/bonus, usable coupons, "
    "tier progress, paid plan, packages), RFM over 12 months scored by the merchant's quintiles (nightly job "
    "portrait.rfm_cuts; null scores before its first run), preferences from the last 200 settled purchases and "
    "the last 20 timeline events. Store-scoped roles see only their store's members (404 otherwise).",
)
async def read_portrait(request: Request, member_id: int):
    found = await member_portrait.get_portrait(scope=scope_of(request.ctx.principal), member_id=member_id)
    return ok(await portrait_out(found))
