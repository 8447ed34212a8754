"""Redis client factory: redis.asyncio for real servers, fakeredis for memory://."""

from __future__ import annotations

from typing import Any

import fakeredis
import redis.asyncio as aioredis

_FAKE_SERVER: Any = None


def create_redis(url: str) -> aioredis.Redis:
    """A client for url; memory:// shares one in-process fake server (embedded default)."""
    global _FAKE_SERVER
    if url.startswith("memory://"):
        if _FAKE_SERVER is None:
            _FAKE_SERVER = fakeredis.FakeServer()
        return fakeredis.FakeAsyncRedis(server=_FAKE_SERVER, decode_responses=True)
    return aioredis.Redis.from_url(url, decode_responses=True, health_check_interval=30)


class Keys:
    """Key builder: one prefix; braces keep related keys on one Redis Cluster slot."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)
