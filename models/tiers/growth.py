"""Growth value (成长值): an append-only ledger that is never spent, summed over rolling windows for tiers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

from tortoise import connections
from tortoise.expressions import Q, Subquery
from tortoise.functions import Sum

from models.kernel import clock, sqlpath
from models.kernel.calendar import add_months
from models.kernel.sqlpath import Ref, Stmt
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


def basis_sql(*, policy: TierPolicy, calendar: LocalCalendar, member_id: int) -> tuple[str, tuple[object, ...]]:
    """basis_value today as one SQL expression (with its params) for a batched write's pre-read; NULL for paid_plan.

    The same figures as basis_value: the window's growth as the rows of its first UTC day plus the later days'
    buckets, the lifetime total on the tier row, the running recharge total.
    """
    if policy.basis == "rolling_12m_growth":
        since = window_start(calendar, calendar.today)
        return (
            "((SELECT COALESCE(SUM(delta), 0) FROM growth_ledger WHERE member_id = %s AND occurred_at >= %s"
            " AND occurred_at < %s) + (SELECT COALESCE(SUM(total), 0) FROM growth_bucket WHERE member_id = %s"
            " AND day > %s))",
            (member_id, sqlpath.db_time(since), sqlpath.db_time(_next_utc_midnight(since)), member_id, utc_day(since)),
        )
    if policy.basis == "lifetime_growth":
        return "(SELECT growth_total FROM member_tier WHERE member_id = %s)", (member_id,)
    if policy.basis == "total_recharge":
        return "(SELECT total FROM recharge_total WHERE member_id = %s)", (member_id,)
    return "NULL", ()


def counts_in_basis(*, policy: TierPolicy, calendar: LocalCalendar, occurred_at: datetime) -> bool:
    """Whether growth dated `occurred_at` adds to the basis figure today."""
    if policy.basis == "rolling_12m_growth":
        return occurred_at >= window_start(calendar, calendar.today)
    return policy.basis == "lifetime_growth"


def growth_statements(
    *,
    merchant_id: int,
    member_id: int,
    delta: int,
    kind: str,
    reason: str,
    idempotency_key: str | Ref,
    ref_type: str,
    ref_id: str | Ref,
    occurred_at: datetime,
) -> list[Stmt]:
    """A growth row's writes for a batched write that holds the member's tier row locked (or found none yet).

    The same as add_growth's: the growth row (its key is the unique guard: a used key fails the batch), the day's
    bucket and the lifetime total, the tier row created at first use. The upgrade is the caller's to decide
    (models.tiers.standing.upgrade_due).
    """
    mysql = sqlpath.dialect() == "mysql"
    add_total = (
        " ON DUPLICATE KEY UPDATE growth_total = growth_total + VALUES(growth_total)"
        if mysql
        else " ON CONFLICT (member_id) DO UPDATE SET growth_total = growth_total + excluded.growth_total"
    )
    now = sqlpath.db_time(clock.now())
    return [
        Stmt(
            "INSERT INTO growth_ledger (merchant_id, member_id, delta, kind, reason, idempotency_key, ref_type, ref_id,"
            " occurred_at, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                merchant_id,
                member_id,
                delta,
                kind,
                reason.strip()[:255],
                idempotency_key,
                ref_type,
                ref_id,
                sqlpath.db_time(occurred_at),
                now,
            ),
        ),
        Stmt(
            _ADD_TO_TOTAL[("growth_bucket", "mysql" if mysql else "sqlite")].replace("?", "%s"),
            (member_id, utc_day(occurred_at), merchant_id, delta),
        ),
        Stmt(
            "INSERT INTO member_tier (merchant_id, member_id, tier_id, since, keep_until, manual_until, manual_reason,"  # noqa: S608
            " growth_total, updated_at) VALUES (%s, %s, NULL, %s, NULL, NULL, '', %s, %s)" + add_total,
            (merchant_id, member_id, now, delta, now),
        ),
    ]


def window_start(calendar: LocalCalendar, as_of: date) -> datetime:
    """Start of the rolling window that ends on `as_of`: merchant-local midnight twelve months earlier."""
    return calendar.start_of(add_months(as_of, -WINDOW_MONTHS))


async def lifetime_growth(*, member_id: int) -> int:
    """All growth a member has earned (the cached total on their tier row)."""
    row = await MemberTier.get_or_none(member_id=member_id)
    return row.growth_total if row is not None else 0


def counts_as_recharge(entry: ledger._Entry | ledger.NewEntry) -> bool:
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


async def entry_statements(book: str, entry: ledger.NewEntry) -> list[Stmt] | None:
    """on_ledger_entry for a batched write: the recharge total's upsert."""
    if book == "balance" and counts_as_recharge(entry):
        return [
            Stmt(
                _ADD_TO_TOTAL[("recharge_total", sqlpath.dialect())].replace("?", "%s"),
                (entry.member_id, entry.merchant_id, entry.delta),
            )
        ]
    return []


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


_DAY_OF = {  # occurred_at's UTC day as YYYYMMDD text (rows are stored in UTC)
    "mysql": "DATE_FORMAT(occurred_at, '%%Y%%m%%d')",
    "sqlite": "strftime('%Y%m%d', substr(occurred_at, 1, 19))",
}


async def find_total_mismatches(*, batch: int = 1000) -> AsyncIterator[ledger.Mismatch | int]:
    """Recompute the running totals from their ledgers, every member's: the lifetime growth, growth per UTC day
    (the buckets) and the recharge total. Yields mismatches (book "growth_total", "growth_bucket:<day>" or
    "recharge_total") and, per batch, the count of members checked."""
    client = connections.get("default")
    day_of = _DAY_OF[client.capabilities.dialect]
    last_id = 0
    while True:
        rows = await (
            ledger.PointsAccount.filter(id__gt=last_id).order_by("id").limit(batch).values_list("id", "member_id")
        )  # every member has a points account; a tier row or a recharge total only once used
        if not rows:
            break
        last_id = rows[-1][0]
        members = [int(member_id) for _, member_id in rows]
        marks = ", ".join(["%s" if client.capabilities.dialect == "mysql" else "?"] * len(members))
        kept = dict(await MemberTier.filter(member_id__in=members).values_list("member_id", "growth_total"))
        sums = dict(
            await GrowthEntry.filter(member_id__in=members)
            .group_by("member_id")
            .annotate(total=Sum("delta"))
            .values_list("member_id", "total")
        )
        for member_id in members:
            if int(kept.get(member_id) or 0) != int(sums.get(member_id) or 0):
                yield ledger.Mismatch(
                    "growth_total", member_id, int(kept.get(member_id) or 0), int(sums.get(member_id) or 0)
                )
        _, by_day = await client.execute_query(
            f"SELECT member_id AS m, {day_of} AS d, SUM(delta) AS t FROM growth_ledger"  # noqa: S608
            f" WHERE member_id IN ({marks}) GROUP BY member_id, d",
            members,
        )
        days = {(int(r["m"]), int(r["d"])): int(r["t"]) for r in by_day}
        buckets = {
            (int(m), int(d)): int(t)
            for m, d, t in await GrowthBucket.filter(member_id__in=members).values_list("member_id", "day", "total")
        }
        for member_id, day in sorted(set(days) | set(buckets)):
            if days.get((member_id, day), 0) != buckets.get((member_id, day), 0):
                yield ledger.Mismatch(
                    f"growth_bucket:{day}", member_id, buckets.get((member_id, day), 0), days.get((member_id, day), 0)
                )
        recharged = dict(
            await ledger.BalanceEntry.filter(Q(kind="recharge") | Q(kind="refund", delta__lt=0), member_id__in=members)
            .group_by("member_id")
            .annotate(total=Sum("delta"))
            .values_list("member_id", "total")
        )
        totals = dict(await RechargeTotal.filter(member_id__in=members).values_list("member_id", "total"))
        for member_id in members:
            if int(totals.get(member_id) or 0) != int(recharged.get(member_id) or 0):
                yield ledger.Mismatch(
                    "recharge_total", member_id, int(totals.get(member_id) or 0), int(recharged.get(member_id) or 0)
                )
        yield len(members)
