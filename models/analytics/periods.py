"""Report periods: a merchant-local date range cut into days, ISO weeks (Monday first) or calendar months."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from models.kernel.calendar import add_months
from models.kernel.errors import Unprocessable

GROUPS = ("day", "week", "month")
MAX_MONTHS = 24  # a range may span at most two years


@dataclass(frozen=True)
class Period:
    start: date  # first day in the range
    end: date  # last day in the range (inclusive)


def check_range(first: date, last: date) -> None:
    """422 for a range that ends before it starts or spans more than two years."""
    if last < first:
        raise Unprocessable("from must not be after to", code="analytics.range_invalid", field="to")
    if last >= add_months(first, MAX_MONTHS):
        raise Unprocessable("the range may span at most 2 years", code="analytics.range_too_long", field="to")


def _next_start(day: date, group: str) -> date:
    if group == "day":
        return day + timedelta(days=1)
    if group == "week":
        return day + timedelta(days=7 - day.weekday())
    return add_months(day.replace(day=1), 1)


def periods(first: date, last: date, group: str) -> list[Period]:
    """The range cut by group; the first and last periods are clipped to the range."""
    found, day = [], first
    while day <= last:
        following = _next_start(day, group)
        found.append(Period(day, min(last, following - timedelta(days=1))))
        day = following
    return found


def period_index(cuts: list[Period], day: date) -> int:
    """Which period a day of the range falls in."""
    low, high = 0, len(cuts) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if cuts[middle].start <= day:
            low = middle
        else:
            high = middle - 1
    return low
