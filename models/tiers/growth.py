"""Growth value (成长值): an append-only ledger that is never spent, summed over rolling windows for tiers."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from tortoise.functions import Sum
from tortoise.queryset import QuerySet

from models.kernel.calendar import add_months
from models.ledger import books as ledger
from models.tiers.policy import LocalCalendar, TierPolicy, get_policy
from models.tiers.tables import GrowthEntry, MemberTier

GROWTH_KINDS = ("spend", "activity", "profile", "adjust", "reverse")
WINDOW_MONTHS = 12


async def growth_for_amount(*, merchant_id: int, amount: int) -> int:
    """Growth earned by spending `amount` fen: one point per the policy's fen_per_growth, rounded down."""
    if amount <= 0:
        return 0
    policy = await get_policy(merchant_id=merchant_id)
    return amount // policy.fen_per_growth


async def _sum_delta(query: QuerySet[Any]) -> int:
    rows = await query.annotate(total=Sum("delta")).values("total")
    return int(rows[0]["total"] or 0) if rows else 0


async def growth_since(*, member_id: int, since: datetime) -> int:
    """Growth earned at or after `since` (UTC)."""
    return await _sum_delta(GrowthEntry.filter(member_id=member_id, occurred_at__gte=since))


def window_start(calendar: LocalCalendar, as_of: date) -> datetime:
    """Start of the rolling window that ends on `as_of`: merchant-local midnight twelve months earlier."""
    return calendar.start_of(add_months(as_of, -WINDOW_MONTHS))


async def lifetime_growth(*, member_id: int) -> int:
    """All growth a member has earned (the cached total on their tier row)."""
    row = await MemberTier.get_or_none(member_id=member_id)
    return row.growth_total if row is not None else 0


async def total_recharge(*, member_id: int) -> int:
    """Fen recharged minus recharges refunded (balance debits of kind refund)."""
    recharged = await _sum_delta(ledger.BalanceEntry.filter(member_id=member_id, kind="recharge"))
    refunded = await _sum_delta(ledger.BalanceEntry.filter(member_id=member_id, kind="refund", delta__lt=0))
    return recharged + refunded


async def basis_value(*, policy: TierPolicy, calendar: LocalCalendar, member_id: int, as_of: date) -> int | None:
    """The member's figure in the policy's basis on `as_of` (None for paid_plan: the plan decides the tier)."""
    if policy.basis == "rolling_12m_growth":
        return await growth_since(member_id=member_id, since=window_start(calendar, as_of))
    if policy.basis == "lifetime_growth":
        return await lifetime_growth(member_id=member_id)
    if policy.basis == "total_recharge":
        return await total_recharge(member_id=member_id)
    return None
