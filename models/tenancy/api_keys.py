"""Per-store API keys for tills: shown once, stored as a SHA-256 hash, revoked at once in every process.

A key reads `hy_pos_<prefix>_<secret>`: the prefix (8 characters, unique) finds the row, the secret (32 random
bytes, URL-safe) is checked against `key_hash` with a constant-time compare. The secret has 256 bits of entropy,
so a fast hash is right (a slow password hash guards low-entropy secrets; it would only cost every request).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.models import Model

from models.kernel import clock
from models.kernel.errors import Conflict, NotFound, Unauthorized
from models.tenancy.merchants import Store
from models.tenancy.visibility import Scope

KEY_MARK = "hy_pos_"
PREFIX_LEN = 8
PREFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"  # no "_" or "-": the prefix ends at the next "_"
SECRET_BYTES = 32
CACHE_SECONDS = 5.0  # how long a process trusts what it read of a key (revocation elsewhere: at most this late)
LAST_USED_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often, not per request


class PosApiKey(Model):
    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField()
    store_id = fields.IntField()
    name = fields.CharField(max_length=64)
    prefix = fields.CharField(max_length=PREFIX_LEN, unique=True)
    key_hash = fields.CharField(max_length=64)  # sha256 hex of the secret part
    created_by_staff_id = fields.IntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    revoked_at = fields.DatetimeField(null=True)
    last_used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "pos_api_key"
        indexes = (("merchant_id", "store_id"),)


@dataclass(frozen=True)
class KeyIdentity:
    """What an authenticated key stands for."""

    key_id: int
    merchant_id: int
    store_id: int
    prefix: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(text: str) -> tuple[str, str] | None:
    """(prefix, secret) of a `hy_pos_<prefix>_<secret>` key, or None when it is not shaped like one."""
    if not text.startswith(KEY_MARK):
        return None
    prefix, sep, secret = text[len(KEY_MARK) :].partition("_")
    if not sep or len(prefix) != PREFIX_LEN or not secret or len(secret) > 128:
        return None
    if any(c not in PREFIX_ALPHABET for c in prefix):
        return None
    return prefix, secret


async def _store_in_scope(*, scope: Scope, store_id: int) -> Store:
    store = await Store.filter(**scope.stores()).filter(id=store_id).first()
    if store is None:
        raise NotFound("store not found", code="store.not_found")
    return store


async def create_key(*, scope: Scope, store_id: int, name: str, staff_id: int | None) -> tuple[PosApiKey, str]:
    """A new key for a store the caller sees; returns the row and the full key, which is never shown again."""
    store = await _store_in_scope(scope=scope, store_id=store_id)
    for _ in range(5):
        prefix = "".join(secrets.choice(PREFIX_ALPHABET) for _ in range(PREFIX_LEN))
        secret = secrets.token_urlsafe(SECRET_BYTES)
        try:
            row = await PosApiKey.create(
                merchant_id=store.merchant_id,  # type: ignore[attr-defined]
                store_id=store.id,
                name=name,
                prefix=prefix,
                key_hash=_hash(secret),
                created_by_staff_id=staff_id,
            )
        except IntegrityError:  # the prefix is taken (unique key): draw another
            continue
        return row, f"{KEY_MARK}{prefix}_{secret}"
    raise Conflict("could not draw a free key prefix", code="api_key.prefix_unavailable")


async def list_keys(*, scope: Scope, store_id: int) -> list[PosApiKey]:
    """A store's keys, oldest first (revoked ones included, marked)."""
    await _store_in_scope(scope=scope, store_id=store_id)
    return await PosApiKey.filter(merchant_id=scope.merchant_id, store_id=store_id).order_by("id")


async def revoke_key(*, scope: Scope, store_id: int, key_id: int) -> PosApiKey:
    """Revoke a key (once; a repeat answers the same revoked row)."""
    await _store_in_scope(scope=scope, store_id=store_id)
    await PosApiKey.filter(id=key_id, merchant_id=scope.merchant_id, store_id=store_id, revoked_at=None).update(
        revoked_at=clock.now()
    )
    row = await PosApiKey.get_or_none(id=key_id, merchant_id=scope.merchant_id, store_id=store_id)
    if row is None:
        raise NotFound("API key not found", code="api_key.not_found")
    return row


async def _touch(key_id: int, now: datetime) -> None:
    """last_used_at, at most once a minute: a conditional UPDATE so concurrent processes write it once."""
    await PosApiKey.filter(Q(last_used_at=None) | Q(last_used_at__lt=now - LAST_USED_EVERY), id=key_id).update(
        last_used_at=now
    )


@dataclass
class _Cached:
    row: tuple[int, int, int, str, bool] | None  # id, merchant, store, hash, revoked; None: no such prefix
    read_at: float


class ApiKeyCache:
    """This process's view of the keys by prefix, trusted for CACHE_SECONDS; a revoke drops the entry here and,
    through pub/sub (`apply_message`), in every other process, so revocation is effective at once."""

    def __init__(self, *, ttl: float = CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._by_prefix: dict[str, _Cached] = {}
        self._touched: dict[int, float] = {}  # key id -> when this process last wrote its last_used_at

    def forget(self, prefix: str) -> None:
        self._by_prefix.pop(prefix, None)

    def apply_message(self, data: str) -> None:
        """A revoked key's prefix from another process."""
        self.forget(data.strip())

    async def poll(self) -> None:
        """Drop entries older than the TTL (the database is read again on their next use)."""
        now = time.monotonic()
        for prefix in [p for p, c in self._by_prefix.items() if now - c.read_at > self.ttl]:
            del self._by_prefix[prefix]

    def clear(self) -> None:
        self._by_prefix.clear()
        self._touched.clear()

    async def _entry(self, prefix: str) -> _Cached:
        now = time.monotonic()
        entry = self._by_prefix.get(prefix)
        if entry is not None and now - entry.read_at <= self.ttl:
            return entry
        rows = await PosApiKey.filter(prefix=prefix).values_list(
            "id", "merchant_id", "store_id", "key_hash", "revoked_at"
        )
        row = None
        if rows:
            key_id, merchant_id, store_id, key_hash, revoked_at = rows[0]
            row = (key_id, merchant_id, store_id, key_hash, revoked_at is not None)
        entry = _Cached(row=row, read_at=now)
        if len(self._by_prefix) >= 4096:
            del self._by_prefix[next(iter(self._by_prefix))]
        self._by_prefix[prefix] = entry
        return entry

    async def authenticate(self, key: str) -> KeyIdentity:
        """The store a presented key belongs to; a malformed, unknown, wrong or revoked key is 401."""
        invalid = Unauthorized("API key is invalid or revoked", code="auth.api_key_invalid")
        parsed = parse_key(key)
        if parsed is None:
            raise invalid
        prefix, secret = parsed
        entry = await self._entry(prefix)
        if entry.row is None:
            raise invalid
        key_id, merchant_id, store_id, key_hash, revoked = entry.row
        if not hmac.compare_digest(key_hash, _hash(secret)) or revoked:
            raise invalid
        now = time.monotonic()
        touched = self._touched.get(key_id)
        if touched is None or now - touched >= LAST_USED_EVERY.total_seconds():
            if len(self._touched) >= 4096:
                del self._touched[next(iter(self._touched))]
            self._touched[key_id] = now
            await _touch(key_id, clock.now())
        return KeyIdentity(key_id=key_id, merchant_id=merchant_id, store_id=store_id, prefix=prefix)
