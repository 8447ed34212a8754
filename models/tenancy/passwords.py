"""Password hashing off the event loop: argon2 runs in one bounded thread pool per process.

argon2 takes ~100-200 ms of CPU per hash or check; on the loop that stalls every other request. The pool has
`workers` threads and lets at most `max_waiting` more calls queue; past that a call is refused at once with
503 auth.busy (and Retry-After) instead of waiting without bound. The server configures it from
security.hash_workers / security.hash_queue at start; scripts and tests that never configure it get the defaults.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from models.kernel.errors import Unavailable

T = TypeVar("T")

DEFAULT_WORKERS = 2
DEFAULT_MAX_WAITING = 32
BUSY_RETRY_AFTER = 1  # seconds a refused caller is told to wait

_hasher = PasswordHasher()  # argon2id with library defaults


class HashPool:
    """A ThreadPoolExecutor with a bound on calls running plus waiting."""

    def __init__(self, *, workers: int, max_waiting: int) -> None:
        self.workers = workers
        self.max_waiting = max_waiting
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._lock = threading.Lock()
        self._in_flight = 0  # submitted and not finished (running or queued), counted until the thread is done

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            if self._in_flight >= self.workers + self.max_waiting:
                raise Unavailable(
                    "too many logins at once; try again shortly", code="auth.busy", retry_after=BUSY_RETRY_AFTER
                )
            self._in_flight += 1
        try:
            future: Future[T] = self._executor.submit(fn, *args)
        except BaseException:
            self._done(None)
            raise
        # counted down when the thread finishes, not when the caller stops waiting (a cancelled request's
        # hash still occupies its thread)
        future.add_done_callback(self._done)
        return await asyncio.wrap_future(future)

    def _done(self, _future: object) -> None:
        with self._lock:
            self._in_flight -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


_pool: HashPool | None = None


def configure(*, workers: int, max_waiting: int) -> HashPool:
    """(Re)create this process's pool; the server calls it before serving."""
    global _pool
    if _pool is not None:
        _pool.shutdown()
    _pool = HashPool(workers=workers, max_waiting=max_waiting)
    return _pool


def pool() -> HashPool:
    global _pool
    if _pool is None:
        _pool = HashPool(workers=DEFAULT_WORKERS, max_waiting=DEFAULT_MAX_WAITING)
    return _pool


def shutdown() -> None:
    global _pool
    if _pool is not None:
        _pool.shutdown()
        _pool = None


@functools.cache
def _dummy_hash() -> str:
    """A hash to check unknown usernames against (equal timing); made once, on first use, in the pool."""
    return _hasher.hash("timing-equaliser")


def _verify_sync(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash if password_hash is not None else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False


def _hash_sync(password: str) -> str:
    return _hasher.hash(password)


async def hash_password(password: str) -> str:
    return await pool().run(_hash_sync, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Check password against password_hash; None checks against a dummy hash and answers False."""
    matched = await pool().run(_verify_sync, password_hash, password)
    return bool(matched) and password_hash is not None


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)  # parses the parameters only: cheap, stays on the loop
