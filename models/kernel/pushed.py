"""State pushed into every process: Redis pub/sub messages applied to local state, with a database poll behind them.

Each feed is a channel, a function applying one message, and a poll reading the database (the source of truth).
The poll runs every `fallback_seconds` while the subscription is down or reconnecting and every `poll_seconds`
otherwise, so a change is seen at once normally and within one poll interval when a message was lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from models.kernel import clock

log = logging.getLogger("huiyuan.pushed")


@dataclass(frozen=True)
class Feed:
    channel: str
    apply: Callable[[str], None]
    poll: Callable[[], Awaitable[None]]


async def _poll_all(feeds: list[Feed]) -> None:
    for feed in feeds:
        try:
            await feed.poll()
        except Exception:  # noqa: BLE001  # a failed poll is retried on the next tick; the listener must live on
            log.exception("poll of %s failed", feed.channel)


async def run_listener(
    *, redis: Any, feeds: list[Feed], poll_seconds: float = 5.0, fallback_seconds: float = 1.0
) -> None:
    """Subscribe to every feed's channel and apply its messages; poll the database as the safety net (forever)."""
    by_channel = {feed.channel: feed for feed in feeds}
    while True:
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(*by_channel)
            await _poll_all(feeds)  # whatever changed before the subscription took hold
            last_poll = time.monotonic()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=fallback_seconds)
                if message is not None and message.get("type") == "message":
                    feed = by_channel.get(message["channel"])
                    if feed is not None:
                        feed.apply(str(message["data"]))
                if time.monotonic() - last_poll >= poll_seconds:
                    await _poll_all(feeds)
                    last_poll = time.monotonic()
        except (RedisError, OSError) as exc:
            log.warning("pub/sub unavailable (%s); polling every %ss", type(exc).__name__, fallback_seconds)
            await _poll_all(feeds)
            await asyncio.sleep(fallback_seconds)
        finally:
            try:
                await pubsub.aclose()
            except (RedisError, OSError):
                pass


class RevokedSet:
    """Revoked access tokens (jti -> expiry, epoch seconds) not yet expired, held in this process.

    Loaded from the database (`load_all`) before the first request it answers; until then `ready` is False and
    the caller asks the database.
    """

    MARGIN = 60.0  # seconds a poll looks back before the previous one: commit delays and clock skew between hosts

    def __init__(
        self,
        *,
        load_all: Callable[[], Awaitable[list[tuple[str, int]]]],
        load_since: Callable[[float], Awaitable[list[tuple[str, int]]]],
    ) -> None:
        self.ready = False
        self._jtis: dict[str, int] = {}
        self._load_all = load_all
        self._load_since = load_since
        self._last_poll = 0.0

    def __contains__(self, jti: str) -> bool:
        return jti in self._jtis

    def add(self, jti: str, expires_at: int) -> None:
        if expires_at > clock.now().timestamp():
            self._jtis[jti] = expires_at

    def apply_message(self, data: str) -> None:
        """A `jti:expires_at` message from another process."""
        jti, _, expires = data.partition(":")
        if jti and expires.isdigit():
            self.add(jti, int(expires))

    async def load(self) -> None:
        """Every unexpired revocation from the database (at start, and after clear())."""
        started = time.time()
        rows = await self._load_all()
        self._jtis = {}
        for jti, expires_at in rows:
            self.add(jti, expires_at)
        self._last_poll, self.ready = started, True

    async def poll(self) -> None:
        """Revocations created since the last poll (minus the margin), then forget the expired ones."""
        if not self.ready:
            await self.load()
            return
        started = time.time()
        for jti, expires_at in await self._load_since(self._last_poll - self.MARGIN):
            self.add(jti, expires_at)
        self._last_poll = started
        now = clock.now().timestamp()
        for jti in [j for j, exp in self._jtis.items() if exp <= now]:
            del self._jtis[jti]

    def clear(self) -> None:
        """Forget everything and ask the database until the next load (tests reset the database)."""
        self._jtis.clear()
        self.ready = False
