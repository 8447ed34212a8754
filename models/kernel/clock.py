"""The one clock domain rules read; tests pin it with set_clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

_now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def now() -> datetime:
    """Current time, timezone-aware UTC."""
    return _now()


def set_clock(func: Callable[[], datetime] | None) -> None:
    """Pin the clock (tests); None restores the wall clock."""
    global _now
    _now = func or (lambda: datetime.now(UTC))
