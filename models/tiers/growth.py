"""Growth value (成长值): an append-only ledger that is never spent, summed over rolling windows for tiers."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from tortoise import connections
from tortoise.expressions import Subquery
from tortoise.functions import Sum

from models.kernel.calendar import add_months
from models.ledger import books as ledger
from models.tiers.policy import LocalCalendar, TierPolicy, get_policy
from models.tiers.tables import GrowthBucket, GrowthEntry, MemberTier, RechargeTotal

GROWTH_KINDS = ("spend", "activity", "profile", "adjust", "reverse")
WINDOW_MONTHS = 12


async def growth_for_amount(*, merchant_id: int, amount: int) -> int:
    """Growth earned by spending `amount` fen: one point per the policy's fen_per_growth, rounded down."""
    if amount <= 0:
        return 0
    policy = await get_policy(merchant_id=merchant_id)
    return amount // policy.fen_per_growth


def utc_day(moment: datetime) -> int:
    """The UTC calendar day of a moment as YYYYMMDD, the key of a growth bucket."""
    at = moment.astimezone(UTC)
    return at.year * 10000 + at.month * 100 + at.day


def _next_utc_midnight(moment: datetime) -> datetime:
    at = moment.astimezone(UTC)
    return datetime(at.year, at.month, at.day, tzinfo=UTC) + timedelta(days=1)


async def growth_since(*, member_id: int, since: datetime) -> int:
    """Growth earned at or after `since` (UTC).

    Exactly the sum of the growth rows since then, read as the rows of since's own UTC day and the daily buckets
    after it: one day of rows and at most a window's days of buckets, however long the member's history.
    """
    later = GrowthBucket.filter(member_id=member_id, day__gt=utc_day(since)).annotate(t=Sum("total")).values("t")
    found = await (
        GrowthEntry.filter(member_id=member_id, occurred_at__gte=since, occurred_at__lt=_next_utc_midnight(since))
        .annotate(rows=Sum("delta"), buckets=Subquery(later))
        .values("rows", "buckets")
    )  # one statement: the day's rows, the later days' buckets as a subquery
    return int(found[0]["rows"] or 0) + int(found[0]["buckets"] or 0) if found else 0


# total += delta on a member's row, created at delta: one upsert statement per dialect, in the caller's transaction
_ADD_TO_TOTAL = {
    (
        "growth_bucket",
        "mysql",
    ): "INSERT INTO growth_bucket (member_id, day, merchant_id, total) VALUES (%s, %s, %s, %s)"
    " ON DUPLICATE KEY UPDATE total = total + VALUES(total)",
    ("growth_bucket", "sqlite"): "INSERT INTO growth_bucket (member_id, day, merchant_id, total) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (member_id, day) DO UPDATE SET total = total + excluded.total",
    ("recharge_total", "mysql"): "INSERT INTO recharge_total (member_id, merchant_id, total) VALUES (%s, %s, %s)"
    " ON DUPLICATE KEY UPDATE total = total + VALUES(total)",
    ("recharge_total", "sqlite"): "INSERT INTO recharge_total (member_id, merchant_id, total) VALUES (?, ?, ?)"
    " ON CONFLICT (member_id) DO UPDATE SET total = total + excluded.total",
}


async def _add_to_total(*, table: str, values: tuple[int, ...], delta: int) -> None:
    client = connections.get("default")
    await client.execute_query(_ADD_TO_TOTAL[(table, client.capabilities.dialect)], [*values, delta])


async def add_to_bucket(*, merchant_id: int, member_id: int, occurred_at: datetime, delta: int) -> None:
    """Add a growth row's delta to its member's bucket for the row's UTC day (in the row's transaction)."""
    await _add_to_total(
        table="growth_bucket",
        values=(member_id, utc_day(occurred_at), merchant_id),
        delta=delta,
    )


def window_start(calendar: LocalCalendar, as_of: date) -> datetime:
    """Start of the rolling window that ends on `as_of`: merchant-local midnight twelve months earlier."""
    return calendar.start_of(add_months(as_of, -WINDOW_MONTHS))


async def lifetime_growth(*, member_id: int) -> int:
    """All growth a member has earned (the cached total on their tier row)."""
    row = await MemberTier.get_or_none(member_id=member_id)
    return row.growth_total if row is not None else 0


def counts_as_recharge(entry: ledger._Entry) -> bool:
    """A stored-value row the total_recharge basis counts: a recharge, or a refund that takes value back."""
    return entry.kind == "recharge" or (entry.kind == "refund" and entry.delta < 0)


async def on_ledger_entry(book: str, entry: ledger._Entry) -> None:
    """Keep the member's recharge total with every recharge and refund row, in the row's own transaction."""
    if book == "balance" and counts_as_recharge(entry):
        await _add_to_total(
            table="recharge_total",
            values=(entry.member_id, entry.merchant_id),
            delta=entry.delta,
        )


async def total_recharge(*, member_id: int) -> int:
    """Fen recharged minus recharges refunded (balance debits of kind refund), from the running total."""
    rows = await RechargeTotal.filter(member_id=member_id).values_list("total", flat=True)
    return int(rows[0]) if rows else 0  # type: ignore[call-overload]


async def basis_value(*, policy: TierPolicy, calendar: LocalCalendar, member_id: int, as_of: date) -> int | None:
    """The member's figure in the policy's basis on `as_of` (None for paid_plan: the plan decides the tier)."""
    if policy.basis == "rolling_12m_growth":
        return await growth_since(member_id=member_id, since=window_start(calendar, as_of))
    if policy.basis == "lifetime_growth":
        return await lifetime_growth(member_id=member_id)
    if policy.basis == "total_recharge":
        return await total_recharge(member_id=member_id)
    return None
