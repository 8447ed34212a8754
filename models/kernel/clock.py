"""The one clock domain rules read; tests pin it with set_clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

_now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def now() -> datetime:
    """Current time, timezone-aware UTC."""
    return _now()


def set_clock(func: Callable[[], datetime] | None) -> None:
    """Pin the clock (tests); None restores the wall clock."""
    global _now
    _now = func or (lambda: datetime.now(UTC))


def as_utc(value: Any) -> datetime | None:
    """A datetime as the driver returns it from an aggregate (SQLite: text; MySQL: naive UTC), made aware UTC."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
