"""Merchants (tenants), their stores and their WeChat accounts."""

from __future__ import annotations

import json
import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.models import Model

from models.kernel.cipher import cipher
from models.kernel.config_cache import CONFIG, config_change
from models.kernel.errors import Conflict, NotFound, Unprocessable
from models.tenancy.visibility import Scope


class Merchant(Model):
    id = fields.IntField(primary_key=True)
    code = fields.CharField(max_length=32, unique=True)
    name = fields.CharField(max_length=100)
    timezone = fields.CharField(max_length=64, default="Asia/Shanghai")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "merchant"


class Store(Model):
    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField("models.Merchant", related_name="stores")
    code = fields.CharField(max_length=32)
    name = fields.CharField(max_length=100)
    address = fields.CharField(max_length=255, default="")
    is_active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "store"
        unique_together = (("merchant", "code"),)


class WechatAccount(Model):
    """One WeChat account of a merchant: official account, mini-program or pay merchant id."""

    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation[Merchant] = fields.ForeignKeyField(
        "models.Merchant", related_name="wechat_accounts"
    )
    merchant_id: int  # created by Tortoise for the FK
    kind = fields.CharField(max_length=16)  # official | miniprogram | pay
    appid = fields.CharField(max_length=32, default="")
    mch_id = fields.CharField(max_length=32, default="")
    lookup = fields.CharField(max_length=48, unique=True)  # "<kind>:<appid or mch_id>"
    secrets_enc = fields.TextField()
    api_base = fields.CharField(max_length=255)
    # official accounts: WeChat's message mode, plaintext (明文) | compatible (兼容) | safe (安全); "" on rows older
    # than the column (never written since): read through message_mode_of, safe when the row has an EncodingAESKey
    message_mode = fields.CharField(max_length=16, default="")
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "wechat_account"

    def secrets(self) -> dict[str, str]:
        """Decrypted secrets (secret, token, encoding_aes_key, api_key, api_v3_key…); a ciphertext is decrypted
        once per process (every pay notify and callback verifies with them)."""
        key = (self.lookup, self.secrets_enc)
        found = _DECRYPTED.get(key)
        if found is None:
            found = json.loads(cipher().decrypt(self.secrets_enc, context=self.lookup))
            if len(_DECRYPTED) >= DECRYPTED_MAX:
                _DECRYPTED.clear()
            _DECRYPTED[key] = found
        return dict(found)

    def message_mode_of(self, account_secrets: dict[str, str] | None = None) -> str:
        """The account's message mode; an unset one is safe with a 43-character EncodingAESKey, else plaintext."""
        if self.message_mode:
            return self.message_mode
        return default_message_mode(self.secrets() if account_secrets is None else account_secrets)


DECRYPTED_MAX = 1024  # accounts' decrypted secrets kept per process, by (lookup, ciphertext)
_DECRYPTED: dict[tuple[str, str], dict[str, str]] = {}
ACCOUNT_KINDS = ("official", "miniprogram", "pay")
ACCOUNT_KEY = re.compile(r"^[A-Za-z0-9_-]{1,32}$")  # appids and mch_ids
MESSAGE_MODES = ("plaintext", "compatible", "safe")  # WeChat's 明文 / 兼容 / 安全 模式


def default_message_mode(account_secrets: dict[str, str]) -> str:
    """Safe mode when the account has an EncodingAESKey (43 characters), else plaintext."""
    return "safe" if len(account_secrets.get("encoding_aes_key") or "") == 43 else "plaintext"


def validate_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise Unprocessable(f"unknown time zone {name!r}", code="merchant.timezone_invalid", field="timezone") from exc
    return name


async def create_merchant(*, code: str, name: str, timezone: str = "Asia/Shanghai") -> Merchant:
    """Create a tenant; codes are unique across the deployment."""
    validate_timezone(timezone)
    try:
        return await Merchant.create(code=code, name=name, timezone=timezone)
    except IntegrityError as exc:
        raise Conflict(f"merchant code {code!r} is taken", code="merchant.code_taken") from exc


async def get_merchant_by_code(*, code: str) -> Merchant | None:
    """The merchant with this code, or None."""
    return await Merchant.get_or_none(code=code)


async def get_merchant(*, merchant_id: int) -> Merchant:
    """The caller's merchant (it exists: tokens are only issued for existing merchants); cached: read-only."""
    return await CONFIG.get("merchant", merchant_id, lambda: Merchant.get(id=merchant_id))


async def create_store(*, merchant_id: int, code: str, name: str, address: str = "") -> Store:
    """Add a store; the code is unique within the merchant."""
    try:
        return await Store.create(merchant_id=merchant_id, code=code, name=name, address=address)
    except IntegrityError as exc:
        raise Conflict(f"store code {code!r} already exists", code="store.code_taken") from exc


async def list_stores(*, scope: Scope) -> list[Store]:
    """Stores of a merchant, or only the one a store-scoped role belongs to."""
    return await Store.filter(**scope.stores()).order_by("id")


async def get_store(*, merchant_id: int, store_id: int) -> Store:
    store = await Store.get_or_none(id=store_id, merchant_id=merchant_id)
    if store is None:
        raise NotFound("store not found", code="store.not_found")
    return store


async def upsert_wechat_account(
    *,
    merchant: Merchant,
    kind: str,
    appid: str = "",
    mch_id: str = "",
    secrets: dict[str, str],
    api_base: str,
    message_mode: str | None = None,
) -> WechatAccount:
    """Create or update a merchant's WeChat account; secrets are stored encrypted.

    message_mode (official accounts): None keeps the stored mode, or sets the default of the secrets
    (default_message_mode) when there is none yet. Compatible and safe mode need a 43-character EncodingAESKey.
    """
    if kind not in ACCOUNT_KINDS:
        raise Unprocessable(f"unknown account kind {kind!r}", code="wechat.account_kind", field="kind")
    if message_mode is not None and message_mode not in MESSAGE_MODES:
        raise Unprocessable(
            f"message_mode must be one of {', '.join(MESSAGE_MODES)}", code="wechat.message_mode", field="message_mode"
        )
    lookup = f"{kind}:{mch_id if kind == 'pay' else appid}"
    sealed = cipher().encrypt(json.dumps(secrets, sort_keys=True), context=lookup)
    async with config_change(merchant_id=merchant.id):
        # select_for_update works on the single-result queryset at runtime; Tortoise's stubs lack it
        account = await WechatAccount.get_or_none(lookup=lookup).select_for_update()  # type: ignore[attr-defined]
        if account is None:
            return await WechatAccount.create(
                merchant=merchant,
                kind=kind,
                appid=appid,
                mch_id=mch_id,
                lookup=lookup,
                secrets_enc=sealed,
                api_base=api_base,
                message_mode=_mode_to_store(kind, message_mode, "", secrets),
            )
        if account.merchant_id != merchant.id:
            raise Conflict(f"{lookup} belongs to another merchant", code="wechat.account_taken")
        account.secrets_enc, account.api_base = sealed, api_base
        account.message_mode = _mode_to_store(kind, message_mode, account.message_mode, secrets)
        await account.save(update_fields=["secrets_enc", "api_base", "message_mode", "updated_at"])
        return account


def _mode_to_store(kind: str, given: str | None, stored: str, account_secrets: dict[str, str]) -> str:
    """The message mode an upsert writes: the given one, else the stored one, else the secrets' default.

    Compatible and safe mode need the EncodingAESKey: secrets without one are refused rather than quietly
    downgrading the account to plaintext. Only official accounts have a mode.
    """
    if kind != "official":
        return ""
    mode = given or stored or default_message_mode(account_secrets)
    if mode != "plaintext" and default_message_mode(account_secrets) == "plaintext":
        raise Unprocessable(
            f"{mode} mode needs a 43-character EncodingAESKey", code="wechat.message_mode", field="message_mode"
        )
    return mode


async def find_wechat_account(*, kind: str, key: str | None = None) -> WechatAccount | None:
    """The account for an appid/mch_id, or the default merchant's (lowest id) when key is None."""
    if key is not None:
        if not ACCOUNT_KEY.match(key):
            return None
        lookup = f"{kind}:{key}"
        return await CONFIG.get_keyed(
            "wechat_account",
            lookup,
            lambda: WechatAccount.get_or_none(lookup=lookup),
            merchant_of=lambda account: account.merchant_id,
        )
    return await WechatAccount.filter(kind=kind).order_by("merchant_id", "id").first()


async def merchant_appids(*, merchant_id: int) -> set[str]:
    """Appids of the merchant's official account and mini-programs (the only ones its payments may name)."""
    return set(await CONFIG.get("appids", merchant_id, lambda: _load_appids(merchant_id)))


async def _load_appids(merchant_id: int) -> frozenset[str]:
    appids = await WechatAccount.filter(merchant_id=merchant_id, kind__in=("official", "miniprogram")).values_list(
        "appid", flat=True
    )
    return frozenset(str(appid) for appid in appids if appid)


async def merchant_client(gateway: Any, *, merchant_id: int, kind: str = "official") -> Any:
    """An API client for the merchant's official account or mini-program (its first one of that kind)."""
    account = await WechatAccount.filter(merchant_id=merchant_id, kind=kind).order_by("id").first()
    if account is None:
        raise Unprocessable(f"the merchant has no {kind} account configured", code="wechat.account_missing")
    return gateway.account_client(account)


async def merchant_zone(*, merchant_id: int) -> ZoneInfo:
    """The merchant's time zone: business days (expiry, sign-in, plan terms) are local to it."""
    return await CONFIG.get("zone", merchant_id, lambda: _load_zone(merchant_id))


async def _load_zone(merchant_id: int) -> ZoneInfo:
    return ZoneInfo((await get_merchant(merchant_id=merchant_id)).timezone or "Asia/Shanghai")
