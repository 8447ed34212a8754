"""Domain hooks: named points where one domain's change runs another domain's work in the same transaction.

Who listens is written in one table, server/wiring.py, which every process installs at start; a hook that was
never installed raises instead of silently doing nothing, so no process can forget the card sync or the lots.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

Listener = Callable[..., Awaitable[None]]


class Hook:
    """One hook point; its listeners run in order, inside the caller's transaction (raising rolls it back)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._listeners: tuple[Listener, ...] | None = None

    def install(self, listeners: Iterable[Listener]) -> None:
        """Set the listeners (server.wiring.install does this for every hook, in every process)."""
        self._listeners = tuple(listeners)

    @property
    def listeners(self) -> tuple[Listener, ...]:
        if self._listeners is None:
            raise RuntimeError(f"hook {self.name} has no listeners installed: call server.wiring.install() first")
        return self._listeners

    async def emit(self, *args: Any, **kwargs: Any) -> None:
        """Run every listener with the same arguments, in order."""
        for listener in self.listeners:
            await listener(*args, **kwargs)
