"""What a scheduled job is given (JobContext) and how the wiring table describes one (JobSpec)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JobContext:
    settings: Any  # server.config.Settings
    redis: Any  # redis.asyncio.Redis
    keys: Any  # server.redis.Keys
    gateway: Any  # wechat.gateway.WeChatGateway


JobFunc = Callable[[JobContext], Awaitable[str]]


@dataclass(frozen=True)
class JobSpec:
    """An idempotent job under a stable dotted id, run every `every_seconds`; it returns a one-line summary."""

    id: str
    func: JobFunc
    every_seconds: int
    lock_seconds: int = 600

    @property
    def description(self) -> str:
        doc = (self.func.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""
