"""Keep sales_day, sku_day, category_day and member_day equal to the settled purchases of each merchant-local day.

The purchase and settle transactions never write the roll-ups (they are the measured hot paths). The job
`analytics.rollup` reads, by time, the purchases created since its last run, the purchases reversed since
(purchase.reversed_at) and the POS returns made since, and recomputes each merchant-local day they touch, whole,
in one transaction: the day's rows are deleted and inserted again from the raw rows, so a rerun is harmless.

Never by id: on a distributed engine (TiDB, Galera) ids are not handed out in commit order. Each run reads from
the previous run's instant less OVERLAP, so a transaction that stamped its row earlier but committed later is
still read (the stamps come from the hosts' clocks: OVERLAP also covers their skew). `python -m server
analytics-rebuild` recomputes any range. Only purchases with status "settled" count; a POS order's partial
returns are not netted out yet.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tortoise.functions import Max, Min
from tortoise.transactions import in_transaction

from models.analytics.tables import AMOUNT_BUCKETS, RollupMark
from models.checkout.purchases import Purchase
from models.checkout.returns import PurchaseReturn
from models.kernel import clock, sqlpath
from models.kernel.sqlpath import Stmt
from models.points.rules import local_day, local_midnight
from models.tenancy.merchants import Merchant, merchant_zone

OVERLAP = timedelta(minutes=5)  # longer than any purchase transaction stays open
SCAN_LIMIT = 50_000  # rows read per table per run; the rest waits for the next run

SkuKey = tuple[int, str, str]  # store_id, sku, category
BUCKET_COLUMNS = ", ".join(f"amount_b{i}" for i in range(len(AMOUNT_BUCKETS)))
BUCKET_SUMS = ", ".join(
    f"SUM(CASE WHEN amount >= {low}{f' AND amount < {AMOUNT_BUCKETS[i + 1]}' if i + 1 < len(AMOUNT_BUCKETS) else ''}"
    " THEN 1 ELSE 0 END)"
    for i, low in enumerate(AMOUNT_BUCKETS)
)


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants a merchant-local day starts and ends (exclusive)."""
    return local_midnight(day, zone), local_midnight(day + timedelta(days=1), zone)


def _sales_statements(*, merchant_id: int, day: date, start: datetime, end: datetime) -> list[Stmt]:
    key = (merchant_id, day.isoformat())
    window = (merchant_id, sqlpath.db_time(start), sqlpath.db_time(end))
    return [
        Stmt("DELETE FROM sales_day WHERE merchant_id = %s AND day = %s", key),
        Stmt("DELETE FROM sku_day WHERE merchant_id = %s AND day = %s", key),
        Stmt("DELETE FROM category_day WHERE merchant_id = %s AND day = %s", key),
        Stmt("DELETE FROM member_day WHERE merchant_id = %s AND day = %s", key),
        Stmt(
            "INSERT INTO member_day (merchant_id, store_id, day, member_id, orders)"
            " SELECT %s, COALESCE(store_id, 0), %s, member_id, COUNT(*) FROM purchase"
            " WHERE merchant_id = %s AND status = 'settled' AND occurred_at >= %s AND occurred_at < %s"
            " GROUP BY COALESCE(store_id, 0), member_id",
            (merchant_id, day.isoformat(), *window),
        ),
        Stmt(
            "INSERT INTO sales_day (merchant_id, store_id, day, orders, members, amount, member_amount, quantity,"  # noqa: S608 - buckets are code
            f" {BUCKET_COLUMNS}) SELECT %s, COALESCE(store_id, 0), %s, COUNT(*), COUNT(DISTINCT member_id),"
            f" SUM(amount), SUM(CASE WHEN member_id IS NULL THEN 0 ELSE amount END), 0, {BUCKET_SUMS} FROM purchase"
            " WHERE merchant_id = %s AND status = 'settled' AND occurred_at >= %s AND occurred_at < %s"
            " GROUP BY COALESCE(store_id, 0)",
            (merchant_id, day.isoformat(), *window),
        ),
    ]


def _lines_sql(*, merchant_id: int, start: datetime, end: datetime) -> Stmt:
    return Stmt(
        "SELECT COALESCE(store_id, 0), items FROM purchase"
        " WHERE merchant_id = %s AND status = 'settled' AND occurred_at >= %s AND occurred_at < %s",
        (merchant_id, sqlpath.db_time(start), sqlpath.db_time(end)),
    )


def _add(totals: dict[Any, list[int]], seen: set[Any], key: Any, quantity: int, amount: int) -> None:
    figures = totals.setdefault(key, [0, 0, 0])
    figures[0] += quantity
    figures[1] += amount
    if key not in seen:  # an order counts once per key however many of its lines carry it
        seen.add(key)
        figures[2] += 1


def aggregate_items(
    rows: Iterable[tuple[Any, ...]],
) -> tuple[dict[SkuKey, list[int]], dict[tuple[int, str], list[int]]]:
    """(store_id, items JSON) rows -> per (store, sku, category) and per (store, category): [units, fen, orders]."""
    skus: dict[SkuKey, list[int]] = {}
    categories: dict[tuple[int, str], list[int]] = {}
    for store_id, raw in rows:
        items = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
        seen: set[Any] = set()
        for item in items or ():
            sku, category = str(item.get("sku") or "")[:64], str(item.get("category") or "")[:64]
            quantity, amount = int(item.get("quantity", 1)), int(item.get("amount", 0))
            _add(skus, seen, (int(store_id), sku, category), quantity, amount)
            _add(categories, seen, (int(store_id), category), quantity, amount)
    return skus, categories


async def rollup_day(*, merchant_id: int, day: date, zone: ZoneInfo) -> None:
    """Replace the day's sales_day and sku_day rows with those computed from its settled purchases."""
    start, end = day_bounds(day, zone)
    async with in_transaction():
        await sqlpath.run(_sales_statements(merchant_id=merchant_id, day=day, start=start, end=end))
        (rows,) = await sqlpath.select([_lines_sql(merchant_id=merchant_id, start=start, end=end)])
        totals, categories = await asyncio.to_thread(aggregate_items, rows)
        inserts = [
            Stmt(
                "INSERT INTO sku_day (merchant_id, store_id, day, sku, category, quantity, amount, orders)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (merchant_id, store_id, day.isoformat(), sku, category, *figures),
            )
            for (store_id, sku, category), figures in sorted(totals.items())
        ] + [
            Stmt(
                "INSERT INTO category_day (merchant_id, store_id, day, category, quantity, amount, orders)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (merchant_id, store_id, day.isoformat(), category, *figures),
            )
            for (store_id, category), figures in sorted(categories.items())
        ]
        quantities: dict[int, int] = {}
        for (store_id, _, _), figures in totals.items():
            quantities[store_id] = quantities.get(store_id, 0) + figures[0]
        updates = [
            Stmt(
                "UPDATE sales_day SET quantity = %s WHERE merchant_id = %s AND day = %s AND store_id = %s",
                (quantity, merchant_id, day.isoformat(), store_id),
            )
            for store_id, quantity in quantities.items()
        ]
        for chunk in range(0, len(inserts) + len(updates), 500):
            await sqlpath.run((inserts + updates)[chunk : chunk + 500])


async def rebuild(
    *, merchant_id: int, first: date, last: date, progress: Callable[[date], Awaitable[None] | None] | None = None
) -> int:
    """Recompute every merchant-local day from first to last (inclusive); returns how many days."""
    zone = await merchant_zone(merchant_id=merchant_id)
    day, count = first, 0
    while day <= last:
        await rollup_day(merchant_id=merchant_id, day=day, zone=zone)
        count += 1
        if progress is not None:
            shown = progress(day)
            if shown is not None:
                await shown
        day += timedelta(days=1)
    return count


def _scanned_until(scans: list[list[datetime]], *, until: datetime, since: datetime) -> datetime:
    """Where the next run reads from (plus the overlap): `until`, or the last instant read of a scan that hit
    SCAN_LIMIT (the rest of its rows wait for the next run, which reads again from that instant less the overlap)."""
    full = [times[-1] for times in scans if len(times) >= SCAN_LIMIT]
    if not full:
        return until
    last = min(full)
    return last if last - OVERLAP > since else last + OVERLAP  # always forward, even in a burst inside the overlap


async def rollup_merchant(*, merchant_id: int, now: datetime) -> int:
    """Recompute the days touched by purchases, reversals and returns since the last run; returns how many days.

    Rows are found by time (purchase.created_at, purchase.reversed_at, purchase_return.created_at, each indexed by
    merchant), from the last run's instant less OVERLAP: a transaction that stamped its row before that run but
    committed after it is read by the next one, and a day read twice is recomputed twice, harmlessly."""
    mark, _ = await RollupMark.get_or_create(merchant_id=merchant_id)
    zone = await merchant_zone(merchant_id=merchant_id)
    if mark.scanned_until is None:
        return await _first_run(mark, zone=zone, now=now)
    since = mark.scanned_until - OVERLAP
    bought = await (
        Purchase.filter(merchant_id=merchant_id, created_at__gte=since, created_at__lte=now)
        .order_by("created_at")
        .limit(SCAN_LIMIT)
        .values_list("created_at", "occurred_at")
    )
    reversed_ = await (
        Purchase.filter(merchant_id=merchant_id, reversed_at__gte=since, reversed_at__lte=now)
        .order_by("reversed_at")
        .limit(SCAN_LIMIT)
        .values_list("reversed_at", "occurred_at")
    )
    returns = await (
        PurchaseReturn.filter(merchant_id=merchant_id, created_at__gte=since, created_at__lte=now)
        .order_by("created_at")
        .limit(SCAN_LIMIT)
        .values_list("created_at", "purchase_id")
    )
    touched = {int(row[1]) for row in returns}
    moments = [row[1] for row in bought] + [row[1] for row in reversed_]
    if touched:
        moments += await Purchase.filter(id__in=touched, merchant_id=merchant_id).values_list("occurred_at", flat=True)
    days = sorted({local_day(moment, zone) for moment in moments})
    for day in days:
        await rollup_day(merchant_id=merchant_id, day=day, zone=zone)
    scans = [[row[0] for row in rows] for rows in (bought, reversed_, returns)]
    mark.scanned_until = _scanned_until(scans, until=now, since=since)
    mark.rolled_at = now
    await mark.save()
    return len(days)


async def _first_run(mark: RollupMark, *, zone: ZoneInfo, now: datetime) -> int:
    """A merchant's first run: rebuild every day from its first purchase to its last at once (not the backlog
    SCAN_LIMIT rows at a time, each batch touching most days again), then watch from now (less the overlap)."""
    merchant_id = mark.merchant_id
    span = (
        await Purchase.filter(merchant_id=merchant_id)
        .annotate(first=Min("occurred_at"), last=Max("occurred_at"))
        .values_list("first", "last")
    )
    days = 0
    first, last = (clock.as_utc(at) for at in (span[0] if span else (None, None)))
    if first is not None and last is not None:
        days = await rebuild(merchant_id=merchant_id, first=local_day(first, zone), last=local_day(last, zone))
    mark.scanned_until = now
    mark.rolled_at = now
    await mark.save()
    return days


async def rollup_all(*, now: datetime | None = None) -> tuple[int, int]:
    """Roll up every merchant; returns (merchants, days recomputed)."""
    moment = now or clock.now()
    merchant_ids = await Merchant.all().order_by("id").values_list("id", flat=True)
    days = 0
    for merchant_id in merchant_ids:
        days += await rollup_merchant(merchant_id=int(merchant_id), now=moment)  # type: ignore[call-overload]
    return len(merchant_ids), days
