"""The member's points page read without the ORM: parameterized SQL on the connection, rows as tuples.

The hot read of `GET /api/mp/me/points` (and the staff view): the balance and the expiring-soon figure in one
statement (the figure from the per-instant running totals of points_expiry, so its cost does not grow with the
member's lots), the ledger page in another; on MySQL both go in one multi-statement round trip. No model object is
built per row; the handler turns the tuples into the JSON body.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from models.kernel import clock, sqlpath
from models.kernel.sqlpath import Stmt
from models.points.lots import EXPIRING_SOON_DAYS
from models.points.rules import last_valid_day
from models.tenancy.merchants import merchant_zone

# The tables of ledger.PointsAccount, PointsExpiry, PointsLot and ledger.PointsEntry (tests/points/test_reads.py
# checks the names). The balance, the expiring-soon sum over the member's points_expiry rows (one per expiry
# instant of their open points: the overdue ones the job has not taken yet and at most a month's midnights, never
# a row per lot) and the earliest due lot's expires_at, one probe of points_lot's (member_id, status, expires_at)
# index, as three subqueries of one statement; the page on points_ledger's (member_id, id), with or without
# before_id. Both go through sqlpath.select: one round trip on MySQL.
_SUMMARY_SQL = (
    "SELECT (SELECT balance FROM points_account WHERE member_id = %s),"
    " (SELECT COALESCE(SUM(points), 0) FROM points_expiry WHERE member_id = %s AND expires_at <= %s),"
    " (SELECT expires_at FROM points_lot WHERE member_id = %s AND status = 'open' AND expires_at <= %s"
    " ORDER BY expires_at LIMIT 1)"
)
_PAGE_SQL = (
    "SELECT id, delta, kind, reason, created_at, balance_after FROM points_ledger"
    " WHERE merchant_id = %s AND member_id = %s ORDER BY id DESC LIMIT %s"
)
_PAGE_BEFORE_SQL = (
    "SELECT id, delta, kind, reason, created_at, balance_after FROM points_ledger"
    " WHERE merchant_id = %s AND member_id = %s AND id < %s ORDER BY id DESC LIMIT %s"
)


# a ledger row of the page: id, delta, kind, reason, created_at (aware UTC), balance_after
EntryRow = tuple[int, int, str, str, datetime, int]


@dataclass(frozen=True)
class PointsPage:
    balance: int
    expiring_points: int  # open points that expire within EXPIRING_SOON_DAYS
    expires_on: date | None  # the last merchant-local day the earliest of them can be used
    entries: list[EntryRow]  # newest first
    next_before_id: int | None


async def points_page(*, merchant_id: int, member_id: int, before_id: int | None = None, limit: int = 50) -> PointsPage:
    """Why a member has their points: the balance, what expires within 30 days, and a page of the ledger."""
    soon = clock.now() + timedelta(days=EXPIRING_SOON_DAYS)
    soon = sqlpath.db_time(soon)
    summary = Stmt(_SUMMARY_SQL, (member_id, member_id, soon, member_id, soon))
    if before_id:
        page = Stmt(_PAGE_BEFORE_SQL, (merchant_id, member_id, before_id, limit))
    else:
        page = Stmt(_PAGE_SQL, (merchant_id, member_id, limit))
    heads, raw = await sqlpath.select([summary, page])  # MySQL: one round trip, both results
    head = heads[0] if heads else None
    entries: list[EntryRow] = [(i, d, k, r, _utc(c), b) for i, d, k, r, c, b in raw]
    held, expiring, first = head if head is not None else (0, 0, None)
    expires_on = None
    first_at = clock.as_utc(first)
    if first_at is not None:
        expires_on = last_valid_day(first_at, await merchant_zone(merchant_id=merchant_id))
    return PointsPage(
        balance=int(held or 0),
        expiring_points=int(expiring or 0),
        expires_on=expires_on,
        entries=entries,
        next_before_id=entries[-1][0] if len(entries) == limit else None,
    )


def _utc(value: Any) -> datetime:
    """A stored timestamp (MySQL: naive UTC, SQLite: ISO text) as aware UTC, as the ORM's DatetimeField reads it."""
    if type(value) is datetime:
        return value.replace(tzinfo=UTC)
    moment = clock.as_utc(value)
    assert moment is not None  # created_at is NOT NULL
    return moment.astimezone(UTC)
