"""Merchant-local days for packages: validity ends at a local midnight."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def local_day(moment: datetime, zone: ZoneInfo) -> date:
    """The merchant-local calendar day of a moment."""
    return moment.astimezone(zone).date()


def end_after(moment: datetime, days: int, zone: ZoneInfo) -> datetime:
    """The exclusive end of `days` local days starting with the day of `moment` (a local midnight, as UTC)."""
    last = local_day(moment, zone) + timedelta(days=days)
    return datetime.combine(last, time(0), tzinfo=zone).astimezone(ZoneInfo("UTC"))


def days_left(*, now: datetime, valid_until: datetime, zone: ZoneInfo) -> int:
    """Local days from today (inclusive) to the end of validity."""
    return max(0, (local_day(valid_until, zone) - local_day(now, zone)).days)
