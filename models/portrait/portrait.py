"""The member portrait (画像): attributes, assets, RFM standing, preferences and the timeline in one read.

After the visibility check (the member row, scoped), every other read is independent and runs concurrently with
asyncio.gather outside any transaction (each on its own pooled connection): the existing answers are reused
(points_page for the expiring-soon figure, member_split, usable_for_member, member_tier_view, member_plan_status,
list_packages, list_activity) and the portrait's own reads (the live R/F/M, the usable coupon count, the last
200 settled purchases with their stores) go as one sqlpath.select batch, one round trip on MySQL. Configuration
(tiers, policy, zone) comes from the per-process cache. Every read is bounded per member: constant cost.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from models.coupons.redemption import CouponTerms, usable_for_member
from models.kernel import clock, sqlpath
from models.kernel.sqlpath import Stmt
from models.ledger import books as ledger
from models.ledger.balance_lots import Split, member_split
from models.members.member_card import MemberCard
from models.members.members import Member, get_member
from models.members.timeline import MemberActivity, list_activity
from models.packages.sales import list_packages
from models.packages.tables import MemberPackage
from models.plans.terms import PlanStatus, member_plan_status
from models.points.reads import PointsPage, points_page
from models.portrait.rfm import Rfm, RfmCuts, member_rfm_sql, score_member
from models.segments.tags import MemberTagView, member_tags
from models.tenancy.merchants import merchant_zone
from models.tenancy.visibility import Scope
from models.tiers.admin import MemberTierView, member_tier_view

RECENT_PURCHASES = 200  # preferences read the member's last 200 settled purchases: constant cost per member
TIMELINE_EVENTS = 20
SOONEST_COUPONS = 5
ACTIVE_PACKAGES = 20
TOP = 10  # preferred stores, categories and SKUs shown


@dataclass(frozen=True)
class Ranked:
    key: str | int | None  # store id, category or SKU (None: purchases without a store / category)
    name: str | None  # the store's name; None for categories and SKUs
    count: int  # visits (stores) or quantity (categories, SKUs)
    amount: int  # fen: the purchases' amount (stores) or the lines' amount (categories, SKUs)


@dataclass(frozen=True)
class Preferences:
    purchases_read: int  # how many of the last RECENT_PURCHASES settled purchases there were
    stores: list[Ranked]
    categories: list[Ranked]
    skus: list[Ranked]
    weekdays: list[int]  # 7 counts, Monday first, merchant-local
    hours: list[int]  # 24 counts, merchant-local


@dataclass(frozen=True)
class Portrait:
    member: Member
    origin_store_name: str | None
    card: MemberCard | None  # the member's newest WeChat member card (claimed, activated or removed)
    points: PointsPage  # balance and expiring within 30 days (the ledger page part is one row, unused)
    balance: int  # fen
    balance_split: Split
    coupons_usable: int
    coupons_soonest: list[CouponTerms]
    tier: MemberTierView
    plan: PlanStatus
    packages: list[MemberPackage]
    rfm: Rfm
    preferences: Preferences
    timeline: list[MemberActivity]
    as_of: datetime
    tags: list[MemberTagView]


def _coupon_count_sql(*, merchant_id: int, member_id: int, now: datetime) -> Stmt:
    # usable_for_member's rule (status usable, valid now), counted exactly on coupon's (member_id, status, ...) index
    return Stmt(
        "SELECT COUNT(*) FROM coupon WHERE member_id = %s AND status = 'usable' AND valid_until > %s"
        " AND valid_from <= %s AND merchant_id = %s",
        (member_id, sqlpath.db_time(now), sqlpath.db_time(now), merchant_id),
    )


def _recent_purchases_sql(*, merchant_id: int, member_id: int) -> Stmt:
    return Stmt(
        "SELECT p.store_id, s.name, p.amount, p.items, p.occurred_at FROM purchase p"
        " LEFT JOIN store s ON s.id = p.store_id"
        " WHERE p.member_id = %s AND p.merchant_id = %s AND p.status = 'settled'"
        " ORDER BY p.occurred_at DESC LIMIT %s",
        (member_id, merchant_id, RECENT_PURCHASES),
    )


def _items(raw: Any) -> list[dict[str, Any]]:
    value = json.loads(raw) if isinstance(raw, str | bytes) else raw
    return [item for item in value or [] if isinstance(item, dict)]


def _top(counts: Counter[Any], amounts: Counter[Any], names: dict[Any, str | None] | None = None) -> list[Ranked]:
    # most first; ties by amount, then by key as text so the order is stable
    keys = sorted(counts, key=lambda k: (-counts[k], -amounts[k], str(k)))[:TOP]
    return [Ranked(k, (names or {}).get(k), counts[k], amounts[k]) for k in keys]


def preferences_of(rows: list[tuple[Any, ...]], *, zone: ZoneInfo) -> Preferences:
    """Stores by visits, categories and SKUs by quantity, and the local weekday/hour pattern of the rows."""
    visits: Counter[Any] = Counter()
    spent: Counter[Any] = Counter()
    names: dict[Any, str | None] = {}
    category_qty: Counter[Any] = Counter()
    category_amount: Counter[Any] = Counter()
    sku_qty: Counter[Any] = Counter()
    sku_amount: Counter[Any] = Counter()
    weekdays, hours = [0] * 7, [0] * 24
    for store_id, store_name, amount, raw_items, occurred_at in rows:
        visits[store_id] += 1
        spent[store_id] += int(amount)
        names[store_id] = store_name
        moment = clock.as_utc(occurred_at)
        assert moment is not None  # NOT NULL
        local = moment.astimezone(zone)
        weekdays[local.weekday()] += 1
        hours[local.hour] += 1
        for item in _items(raw_items):
            quantity, line_amount = int(item.get("quantity", 1)), int(item.get("amount", 0))
            category, sku = item.get("category"), item.get("sku")
            category_qty[category] += quantity
            category_amount[category] += line_amount
            if sku is not None:
                sku_qty[sku] += quantity
                sku_amount[sku] += line_amount
    return Preferences(
        purchases_read=len(rows),
        stores=_top(visits, spent, names),
        categories=_top(category_qty, category_amount),
        skus=_top(sku_qty, sku_amount),
        weekdays=weekdays,
        hours=hours,
    )


async def get_portrait(*, scope: Scope, member_id: int) -> Portrait:
    """A visible member's portrait (404 member.not_found otherwise), every figure as of one instant."""
    member = await get_member(scope=scope, member_id=member_id)
    merchant_id, now = member.merchant_id, clock.now()
    batch = sqlpath.select(
        [
            member_rfm_sql(merchant_id=merchant_id, member_id=member_id, now=now),
            _coupon_count_sql(merchant_id=merchant_id, member_id=member_id, now=now),
            _recent_purchases_sql(merchant_id=merchant_id, member_id=member_id),
            Stmt("SELECT name FROM store WHERE id = %s AND merchant_id = %s", (member.origin_store_id, merchant_id)),
        ]
    )
    # typed one by one below: gather's overloads stop at six awaitables
    results: list[Any] = list(
        await asyncio.gather(
            batch,
            points_page(merchant_id=merchant_id, member_id=member_id, limit=1),
            ledger.get_balance(book="balance", member_id=member_id),
            member_split(member_id=member_id),
            usable_for_member(merchant_id=merchant_id, member_id=member_id, now=now),
            member_tier_view(merchant_id=merchant_id, member_id=member_id),
            member_plan_status(merchant_id=merchant_id, member_id=member_id),
            list_packages(merchant_id=merchant_id, member_id=member_id, status="active", limit=ACTIVE_PACKAGES),
            list_activity(merchant_id=merchant_id, member_id=member_id, before_id=None, limit=TIMELINE_EVENTS),
            RfmCuts.get_or_none(merchant_id=merchant_id),
            merchant_zone(merchant_id=merchant_id),
            MemberCard.filter(member_id=member_id, merchant_id=merchant_id).order_by("-claimed_at", "-id").first(),
            member_tags(scope=scope, member_id=member_id),
        )
    )
    (
        (rfm_rows, coupon_rows, purchase_rows, store_rows),
        points,
        balance,
        split,
        coupons,
        tier,
        plan,
        packages,
        timeline,
        cuts,
        zone,
        card,
        tags,
    ) = results
    return Portrait(
        member=member,
        origin_store_name=store_rows[0][0] if store_rows else None,
        card=card,
        points=points,
        balance=int(balance),
        balance_split=split,
        coupons_usable=int(coupon_rows[0][0]),
        coupons_soonest=coupons[:SOONEST_COUPONS],
        tier=tier,
        plan=plan,
        packages=list(packages),
        rfm=score_member(rfm_rows[0], cuts, now=now),
        preferences=preferences_of(purchase_rows, zone=zone),
        timeline=list(timeline),
        as_of=now,
        tags=list(tags),
    )
