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


Batched = Callable[..., Awaitable["list[Any] | None"]]


class StatementHook:
    """The same hook point for a batched write (models.kernel.sqlpath): each listener returns its statements.

    A listener returns [] when the change is none of its business and None when it cannot be expressed as
    statements (the caller then writes through the ORM path, where the plain Hook runs).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._listeners: tuple[Batched, ...] | None = None

    def install(self, listeners: Iterable[Batched]) -> None:
        self._listeners = tuple(listeners)

    async def collect(self, *args: Any, **kwargs: Any) -> list[Any] | None:
        """Every listener's statements in order, or None as soon as one cannot batch this change."""
        if self._listeners is None:
            raise RuntimeError(f"hook {self.name} has no listeners installed: call server.wiring.install() first")
        statements: list[Any] = []
        for listener in self._listeners:
            found = await listener(*args, **kwargs)
            if found is None:
                return None
            statements.extend(found)
        return statements
