"""Configuration read once per process: values cached per merchant, valid while the merchant's version stamp is.

Every change of a merchant's configuration (merchant row, loyalty program, tiers, onboarding settings, WeChat
accounts) runs in `config_change`, which bumps `config_version` in the same transaction and, after the commit,
advances this process's known version at once and publishes `merchant_id:version` for the other processes
(models/kernel/pushed.py listens, and polls the table as the safety net). A cached value is served only while
its merchant's known version is the one it was loaded under, so a lost message costs at most one poll interval.

The cache is enabled only in processes that run the listener (the server); elsewhere every read goes to the
database. Cached values are shared by every request: callers treat them as read-only.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from redis.exceptions import RedisError
from tortoise import connections, fields
from tortoise.backends.base.client import TransactionalDBClient
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.models import Model
from tortoise.transactions import in_transaction

log = logging.getLogger("huiyuan.config")
T = TypeVar("T")


class ConfigVersion(Model):
    """One row per merchant that ever changed its configuration, whose version only goes up."""

    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField(unique=True)
    version = fields.BigIntField(default=0)

    class Meta:
        table = "config_version"


async def read_version(merchant_id: int) -> int:
    """The merchant's committed version (0 while it never changed its configuration)."""
    found = await ConfigVersion.filter(merchant_id=merchant_id).values_list("version", flat=True)
    return int(found[0]) if found else 0  # type: ignore[call-overload]  # flat values_list: a list of ints


async def read_all_versions() -> dict[int, int]:
    """Every merchant's version, in one statement (merchants are few)."""
    return {int(m): int(v) for m, v in await ConfigVersion.all().values_list("merchant_id", "version")}


async def _bump(merchant_id: int) -> int:
    """Advance the merchant's version inside the caller's transaction; concurrent first bumps end in one row."""
    for _ in range(3):
        if await ConfigVersion.filter(merchant_id=merchant_id).update(version=F("version") + 1):
            return await read_version(merchant_id)
        try:
            async with in_transaction():  # a savepoint: a lost insert race leaves the outer transaction usable
                await ConfigVersion.create(merchant_id=merchant_id, version=1)
            return 1
        except IntegrityError:
            continue  # another change inserted it first: bump that row
    raise RuntimeError(f"could not bump the configuration version of merchant {merchant_id}")


class ConfigCache:
    """Per-process values keyed by (kind, merchant, key), each tagged with the merchant version it was read under."""

    def __init__(self) -> None:
        self.enabled = False
        self.publisher: Callable[[str], Awaitable[Any]] | None = None  # publish(message) on the config channel
        self._known: dict[int, int] = {}  # merchant -> newest committed version this process has learned
        self._entries: dict[int, dict[tuple[str, Hashable], tuple[int, Any]]] = {}
        self._keyed: dict[tuple[str, str], tuple[int, int, Any]] = {}  # (kind, key) -> (merchant, version, value)

    def clear(self) -> None:
        """Forget everything (tests reset the database under a running process)."""
        self._known.clear()
        self._entries.clear()
        self._keyed.clear()

    def learn(self, merchant_id: int, version: int) -> None:
        """A committed version seen (message, poll, own change): values read under older ones stop being served."""
        if version > self._known.get(merchant_id, -1):
            self._known[merchant_id] = version
            self._entries.pop(merchant_id, None)
            for slot in [s for s, (m, _, _) in self._keyed.items() if m == merchant_id]:
                del self._keyed[slot]

    def apply_message(self, data: str) -> None:
        """A `merchant_id:version` message from another process (malformed ones are ignored)."""
        merchant, _, version = data.partition(":")
        if merchant.isdigit() and version.isdigit():
            self.learn(int(merchant), int(version))

    async def poll(self) -> None:
        """The safety net for lost messages: learn every merchant's version from the table."""
        for merchant_id, version in (await read_all_versions()).items():
            self.learn(merchant_id, version)

    async def _version(self, merchant_id: int) -> int:
        version = self._known.get(merchant_id)
        if version is None:
            self.learn(merchant_id, await read_version(merchant_id))
            version = self._known[merchant_id]
        return version

    async def get(self, kind: str, merchant_id: int, loader: Callable[[], Awaitable[T]], key: Hashable = None) -> T:
        """The cached value while the merchant's version is current, else loader() (read after the version)."""
        if not self.enabled:
            return await loader()
        version = await self._version(merchant_id)  # learned after its commit: the data read next is no older
        slot = (kind, key)
        entry = self._entries.get(merchant_id, {}).get(slot)
        if entry is not None and entry[0] == version:
            return entry[1]
        value = await loader()
        if self._known.get(merchant_id) == version:
            self._entries.setdefault(merchant_id, {})[slot] = (version, value)
        return value

    async def get_keyed(
        self, kind: str, key: str, loader: Callable[[], Awaitable[T | None]], merchant_of: Callable[[T], int]
    ) -> T | None:
        """A value found by a global key (an appid, a mch_id) whose merchant is known only once it is loaded."""
        if not self.enabled:
            return await loader()
        entry = self._keyed.get((kind, key))
        if entry is not None and self._known.get(entry[0]) == entry[1]:
            return entry[2]
        known_before = dict(self._known)
        value = await loader()
        if value is None:
            return None  # not cached: an account added later must be found at once
        merchant_id = merchant_of(value)
        version = known_before.get(merchant_id)
        if version is None:  # the version is read after the value: read the value again under it
            version = await self._version(merchant_id)
            value = await loader()
            if value is None or merchant_of(value) != merchant_id:
                return value
        if self._known.get(merchant_id) == version:
            self._keyed[(kind, key)] = (merchant_id, version, value)
        return value

    async def committed(self, merchant_id: int, version: int) -> None:
        """After a change's commit: this process serves the new version at once, the others on the message."""
        self.learn(merchant_id, version)
        if self.publisher is None:
            return
        try:
            await self.publisher(f"{merchant_id}:{version}")
        except (RedisError, OSError) as exc:
            log.warning("config change not broadcast (%s); other processes see it on their next poll", exc)


CONFIG = ConfigCache()


def _in_transaction() -> bool:
    return isinstance(connections.get("default"), TransactionalDBClient)


@asynccontextmanager
async def config_change(*, merchant_id: int) -> AsyncIterator[None]:
    """The transaction of a configuration change: the version is bumped in it, broadcast after its commit.

    It must be the outermost transaction: a change announced before the real commit could be re-read as the old
    data under the new version.
    """
    if _in_transaction():
        raise RuntimeError("config_change must own its transaction (it is announced after the commit)")
    async with in_transaction():
        version = await _bump(merchant_id)  # first: its row lock serializes a merchant's changes
        yield
    await CONFIG.committed(merchant_id, version)
