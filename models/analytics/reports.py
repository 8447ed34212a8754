"""The consumption reports: sales, top items, distinct members, visits and order amounts from the daily roll-ups
(distinct members and visits per member from member_day's covering indexes), liabilities from the lots, member
activity from each member's last purchase, the conversion funnel from the raw rows of its cohort.

Dates are merchant-local; sales_day / sku_day lag the raw purchases by up to the roll-up job's interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from models.analytics.periods import check_range, period_index, periods
from models.analytics.tables import AMOUNT_BUCKETS
from models.kernel import clock, sqlpath
from models.kernel.errors import Forbidden, NotFound
from models.kernel.sqlpath import Stmt
from models.plans.terms import renewal_stats_between
from models.points.rules import local_midnight
from models.tenancy.merchants import Store, merchant_zone
from models.tenancy.visibility import Scope

VISIT_BUCKETS = ((1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, None))  # visits in the range, inclusive
ACTIVE_DAYS, DORMANT_DAYS = 30, 90


@dataclass(frozen=True)
class SalesRow:
    start: date
    end: date
    orders: int
    amount: int
    member_amount: int
    quantity: int
    members: int
    average: int  # fen per order, rounded down


@dataclass(frozen=True)
class ItemRow:
    key: str
    quantity: int
    amount: int
    orders: int


@dataclass(frozen=True)
class Bucket:
    low: int
    high: int | None  # inclusive for visits, exclusive for fen; None: no upper bound
    count: int


@dataclass(frozen=True)
class Frequency:
    members: int
    orders: int
    visits: list[Bucket]
    amounts: list[Bucket]


@dataclass(frozen=True)
class Expiring:
    month: date  # first day of the merchant-local month
    points: int


@dataclass(frozen=True)
class Liabilities:
    as_of: datetime
    principal: int
    bonus: int
    points: int
    expiring: list[Expiring]


@dataclass(frozen=True)
class Activity:
    as_of: datetime
    active: int
    dormant: int
    lost: int
    never: int
    plan_terms_ended: int  # members whose paid-plan term ended in the range (models.plans.terms.renewal_stats)
    plan_renewed: int  # ... of whom bought another term since


async def report_store(*, scope: Scope, store_id: int | None) -> int | None:
    """The store a report covers (None: the whole merchant): 404 for a store of another merchant, 403 for a
    store-scoped role asking another store; a store-scoped role always gets its own."""
    if store_id is not None:
        if not await Store.filter(id=store_id, merchant_id=scope.merchant_id).exists():
            raise NotFound("no such store", code="store.not_found", field="store_id")
        if not scope.sees_store(store_id):
            raise Forbidden("this role sees only its own store", code="auth.store_scope")
        return store_id
    return scope.store_id


def _store_filter(store_id: int | None, column: str = "store_id") -> tuple[str, tuple[Any, ...]]:
    return (f" AND {column} = %s", (store_id,)) if store_id is not None else ("", ())


async def sales(*, scope: Scope, first: date, last: date, group: str, store_id: int | None) -> list[SalesRow]:
    """Orders, revenue, items and distinct members per period (members from member_day: not additive)."""
    check_range(first, last)
    store = await report_store(scope=scope, store_id=store_id)
    cuts = periods(first, last, group)
    where, extra = _store_filter(store)
    daily = Stmt(
        "SELECT day, SUM(orders), SUM(amount), SUM(member_amount), SUM(quantity) FROM sales_day"  # noqa: S608 - where is code
        f" WHERE merchant_id = %s AND day >= %s AND day <= %s{where} GROUP BY day",
        (scope.merchant_id, first.isoformat(), last.isoformat(), *extra),
    )
    distinct = [
        Stmt(
            "SELECT COUNT(DISTINCT member_id) FROM member_day"  # noqa: S608 - where is code
            f" WHERE merchant_id = %s AND day >= %s AND day <= %s{where}",
            (scope.merchant_id, p.start.isoformat(), p.end.isoformat(), *extra),
        )
        for p in cuts
    ]
    days, *counts = await sqlpath.select([daily, *distinct])
    sums = [[0, 0, 0, 0] for _ in cuts]
    for day, *figures in days:
        at = period_index(cuts, day if isinstance(day, date) else date.fromisoformat(str(day)))
        for i, value in enumerate(figures):
            sums[at][i] += int(value or 0)
    return [
        SalesRow(p.start, p.end, s[0], s[1], s[2], s[3], int(c[0][0] or 0), s[1] // s[0] if s[0] else 0)
        for p, s, c in zip(cuts, sums, counts, strict=True)
    ]


async def top_items(
    *, scope: Scope, first: date, last: date, by: str, limit: int, store_id: int | None
) -> list[ItemRow]:
    """The SKUs (or categories) with the most units in the range: units, fen and orders containing them."""
    check_range(first, last)
    store = await report_store(scope=scope, store_id=store_id)
    table, key = ("sku_day", "sku") if by == "sku" else ("category_day", "category")
    where, extra = _store_filter(store)
    (rows,) = await sqlpath.select(
        [
            Stmt(
                f"SELECT {key}, SUM(quantity), SUM(amount), SUM(orders) FROM {table}"  # noqa: S608 - names are code
                f" WHERE merchant_id = %s AND day >= %s AND day <= %s{where} GROUP BY {key}"
                f" ORDER BY SUM(quantity) DESC, SUM(amount) DESC, {key} LIMIT %s",
                (scope.merchant_id, first.isoformat(), last.isoformat(), *extra, limit),
            )
        ]
    )
    return [ItemRow(str(k), int(q), int(a), int(o)) for k, q, a, o in rows]


def _case(column: str, edges: list[tuple[int, int | None]], *, inclusive: bool) -> str:
    parts = []
    for index, (_, high) in enumerate(edges):
        if high is not None:
            parts.append(f"WHEN {column} {'<=' if inclusive else '<'} {int(high)} THEN {index}")
    return f"CASE {' '.join(parts)} ELSE {len(edges) - 1} END"


def _amount_edges() -> list[tuple[int, int | None]]:
    return [
        (low, AMOUNT_BUCKETS[i + 1] if i + 1 < len(AMOUNT_BUCKETS) else None) for i, low in enumerate(AMOUNT_BUCKETS)
    ]


async def frequency(*, scope: Scope, first: date, last: date, store_id: int | None) -> Frequency:
    """Members by number of settled purchases in the range, and orders by amount (fixed fen buckets)."""
    check_range(first, last)
    store = await report_store(scope=scope, store_id=store_id)
    where, extra = _store_filter(store)
    window = (scope.merchant_id, first.isoformat(), last.isoformat(), *extra)
    visits_case = _case("n", list(VISIT_BUCKETS), inclusive=True)
    amount_edges = _amount_edges()
    sums = ", ".join(f"COALESCE(SUM(amount_b{i}), 0)" for i in range(len(AMOUNT_BUCKETS)))
    visit_rows, amount_rows = await sqlpath.select(
        [
            Stmt(
                f"SELECT {visits_case} AS b, COUNT(*) FROM"  # noqa: S608 - the cases are code
                " (SELECT member_id, SUM(orders) AS n FROM member_day"
                f" WHERE merchant_id = %s AND day >= %s AND day <= %s{where} GROUP BY member_id) v GROUP BY b",
                window,
            ),
            Stmt(
                f"SELECT {sums} FROM sales_day WHERE merchant_id = %s AND day >= %s AND day <= %s{where}",  # noqa: S608
                window,
            ),
        ]
    )
    by_visits = {int(b): int(n) for b, n in visit_rows}
    by_amount = dict(enumerate(int(n) for n in amount_rows[0]))
    return Frequency(
        members=sum(by_visits.values()),
        orders=sum(by_amount.values()),
        visits=[Bucket(low, high, by_visits.get(i, 0)) for i, (low, high) in enumerate(VISIT_BUCKETS)],
        amounts=[Bucket(low, high, by_amount.get(i, 0)) for i, (low, high) in enumerate(amount_edges)],
    )


def month_starts(now: datetime, zone: Any, count: int) -> list[date]:
    """The first days of the merchant-local month of now and the count - 1 months after it, plus one more."""
    first = now.astimezone(zone).date().replace(day=1)
    found = [first]
    for _ in range(count):
        found.append((found[-1] + timedelta(days=32)).replace(day=1))
    return found


async def liabilities(*, merchant_id: int, months: int = 12) -> Liabilities:
    """Stored value held (principal, bonus) and open points now, with the points expiring in each coming month."""
    now = clock.now()
    zone = await merchant_zone(merchant_id=merchant_id)
    starts = month_starts(now, zone, months)
    edges = [now] + [local_midnight(day, zone) for day in starts[1:]]
    open_points = "FROM points_lot WHERE merchant_id = %s AND status = 'open' AND remaining > 0"
    statements = [
        Stmt(
            "SELECT COALESCE(SUM(principal_remaining), 0), COALESCE(SUM(bonus_remaining), 0) FROM balance_lot"
            " WHERE merchant_id = %s AND status = 'open'",
            (merchant_id,),
        ),
        Stmt(
            f"SELECT COALESCE(SUM(remaining), 0) {open_points} AND (expires_at IS NULL OR expires_at > %s)",  # noqa: S608
            (merchant_id, sqlpath.db_time(now)),
        ),
        *(
            Stmt(
                f"SELECT COALESCE(SUM(remaining), 0) {open_points} AND expires_at > %s AND expires_at <= %s",  # noqa: S608
                (merchant_id, sqlpath.db_time(edges[i]), sqlpath.db_time(edges[i + 1])),
            )
            for i in range(months)
        ),
    ]
    (held,), (points,), *expiring = await sqlpath.select(statements)
    return Liabilities(
        as_of=now,
        principal=int(held[0]),
        bonus=int(held[1]),
        points=int(points[0]),
        expiring=[Expiring(starts[i], int(rows[0][0])) for i, rows in enumerate(expiring)],
    )


async def activity(*, scope: Scope, first: date, last: date) -> Activity:
    """Members by the merchant-local day of their last settled purchase (active: within the last 30 days, today
    included; dormant: the 60 before; lost: earlier; never) from the roll-ups, and the paid-plan renewal of the
    terms that ended in the range; a store-scoped role counts its store's members (by origin store)."""
    check_range(first, last)
    now = clock.now()
    zone = await merchant_zone(merchant_id=scope.merchant_id)
    members = "SELECT id FROM member WHERE merchant_id = %s" + (" AND origin_store_id = %s" if scope.limited else "")  # noqa: S608 - code
    member_args: tuple[Any, ...] = (scope.merchant_id, *((scope.store_id,) if scope.limited else ()))
    limited = f" AND member_id IN ({members})" if scope.limited else ""
    today = now.astimezone(zone).date()

    def bought_since(day: date | None) -> Stmt:
        since = " AND day >= %s" if day is not None else ""
        return Stmt(
            f"SELECT COUNT(DISTINCT member_id) FROM member_day WHERE merchant_id = %s{since}{limited}",  # noqa: S608 - code
            (scope.merchant_id, *((day.isoformat(),) if day is not None else ()), *(member_args if limited else ())),
        )

    (recent,), (within_dormant,), (ever,), (total,) = await sqlpath.select(
        [
            bought_since(today - timedelta(days=ACTIVE_DAYS - 1)),
            bought_since(today - timedelta(days=DORMANT_DAYS - 1)),
            bought_since(None),
            Stmt(f"SELECT COUNT(*) FROM ({members}) m", member_args),  # noqa: S608 - members is code
        ]
    )
    renewal = await renewal_stats_between(
        scope=scope, since=local_midnight(first, zone), until=local_midnight(last + timedelta(days=1), zone)
    )
    active, dormant_or_active, bought = int(recent[0]), int(within_dormant[0]), int(ever[0])
    return Activity(
        as_of=now,
        active=active,
        dormant=dormant_or_active - active,
        lost=bought - dormant_or_active,
        never=int(total[0]) - bought,
        plan_terms_ended=renewal.ended,
        plan_renewed=renewal.renewed,
    )


@dataclass(frozen=True)
class Funnel:
    scanned: int  # members whose first QR scan fell in the range (the cohort)
    followed: int  # ... who follow or followed the official account
    card_claimed: int  # ... and claimed the member card
    card_activated: int  # ... and activated it
    first_purchase: int  # ... and made a settled purchase
    second_purchase: int  # ... and a second one


async def funnel(*, scope: Scope, first: date, last: date, store_id: int | None) -> Funnel:
    """The conversion funnel of the members whose first QR scan fell in the range (merchant-local days): how many
    of them reached each step by now, every step counting only those who also reached the steps before it.

    A store: its members by origin store. Read from the raw rows by index (qr_scan by merchant and member, member
    by primary key, member_card and purchase by member): the cohort, not the orders, bounds the work."""
    check_range(first, last)
    store = await report_store(scope=scope, store_id=store_id)
    where, extra = _store_filter(store, "m.origin_store_id")
    zone = await merchant_zone(merchant_id=scope.merchant_id)
    start, end = local_midnight(first, zone), local_midnight(last + timedelta(days=1), zone)
    # each cohort member's steps once (the purchase count read once per member), then summed step within step
    steps = ["f = 1", "f = 1 AND c = 1", "f = 1 AND c = 1 AND a = 1"]
    steps += [f"{steps[-1]} AND n >= 1", f"{steps[-1]} AND n >= 2"]
    sums = ", ".join(f"COALESCE(SUM(CASE WHEN {step} THEN 1 ELSE 0 END), 0)" for step in steps)
    (rows,) = await sqlpath.select(
        [
            Stmt(
                f"SELECT COUNT(*), {sums} FROM"  # noqa: S608 - the steps are code
                " (SELECT CASE WHEN m.subscribed_at IS NULL THEN 0 ELSE 1 END AS f,"
                " CASE WHEN EXISTS (SELECT 1 FROM member_card mc WHERE mc.member_id = m.id) THEN 1 ELSE 0 END AS c,"
                " CASE WHEN m.activated_at IS NULL THEN 0 ELSE 1 END AS a,"
                " (SELECT COUNT(*) FROM purchase p WHERE p.member_id = m.id AND p.status = 'settled') AS n"
                " FROM member m JOIN (SELECT member_id FROM qr_scan WHERE merchant_id = %s GROUP BY member_id"
                " HAVING MIN(created_at) >= %s AND MIN(created_at) < %s) s ON s.member_id = m.id"
                f" WHERE m.merchant_id = %s{where}) steps",
                (scope.merchant_id, sqlpath.db_time(start), sqlpath.db_time(end), scope.merchant_id, *extra),
            )
        ]
    )
    return Funnel(*(int(n) for n in rows[0]))
