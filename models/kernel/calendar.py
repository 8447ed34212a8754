"""Calendar arithmetic for business days: whole months on dates, and on local wall-clock times."""

from __future__ import annotations

import calendar
from datetime import date, datetime
from zoneinfo import ZoneInfo

UTC = ZoneInfo("UTC")


def add_months(day: date, months: int) -> date:
    """The same day `months` later (or earlier), clamped to the month's last day."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def add_local_months(moment: datetime, months: int, zone: ZoneInfo) -> datetime:
    """The same local wall time `months` calendar months later (the day clamped to the month's end), in UTC."""
    local = moment.astimezone(zone)
    day = add_months(local.date(), months)
    later = local.replace(tzinfo=None, year=day.year, month=day.month, day=day.day)
    return later.replace(tzinfo=zone).astimezone(UTC)
