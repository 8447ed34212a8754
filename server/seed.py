"""Idempotent set-up of a merchant with its first store, owner login and WeChat accounts."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from tortoise.transactions import in_transaction

from models.tenancy import staff as staff_domain
from models.tenancy.merchants import Merchant, Store, default_message_mode, upsert_wechat_account, validate_timezone
from server.config import ConfigError, Settings

DEV_ADMIN_PASSWORD = "huiyuan-demo"


@dataclass(frozen=True)
class SeedResult:
    merchant: Merchant
    store: Store
    admin_username: str
    admin_password: str | None  # None when the login already existed (password unchanged)
    created: bool


async def ensure_merchant(
    *,
    code: str,
    name: str,
    timezone: str,
    store_code: str,
    store_name: str,
    admin_username: str,
    admin_password: str | None,
) -> SeedResult:
    """Create the merchant, store and owner if missing; an existing one is left as it is."""
    validate_timezone(timezone)
    async with in_transaction():
        merchant, created = await Merchant.get_or_create(code=code, defaults={"name": name, "timezone": timezone})
        store, _ = await Store.get_or_create(merchant=merchant, code=store_code, defaults={"name": store_name})
    password = None
    if not await staff_domain.Staff.exists(username=admin_username):
        password = admin_password or secrets.token_urlsafe(12)
        await staff_domain.create_staff(
            merchant_id=merchant.id, username=admin_username, password=password, role="owner", display_name="Owner"
        )
    return SeedResult(merchant, store, admin_username, password, created)


def _read_key(path: str) -> str:
    """A PEM file's text; relative paths are from the project root."""
    file = Path(path)
    if not file.is_absolute():
        file = Path(__file__).resolve().parents[1] / file
    try:
        return file.read_text(encoding="ascii")
    except OSError as exc:
        raise ConfigError(f"cannot read key file {file}: {exc.strerror}") from exc


async def seed_default_merchant(settings: Settings) -> SeedResult:
    """The merchant described by the config's merchant and wechat sections (re-applied on every start)."""
    seed = settings.merchant
    password = seed.admin_password or (None if settings.is_production else DEV_ADMIN_PASSWORD)
    result = await ensure_merchant(
        code=seed.code,
        name=seed.name,
        timezone=seed.timezone,
        store_code=seed.store_code,
        store_name=seed.store_name,
        admin_username=seed.admin_username,
        admin_password=password,
    )
    wechat = settings.wechat
    official_secrets = {
        "secret": wechat.official.secret,
        "token": wechat.official.token,
        "encoding_aes_key": wechat.official.encoding_aes_key,
    }
    await upsert_wechat_account(
        merchant=result.merchant,
        kind="official",
        appid=wechat.official.appid,
        api_base=wechat.official.api_base,
        secrets=official_secrets,
        # safe mode (安全模式) when the config has an EncodingAESKey, as the demo's has: the only mode in which
        # WeChat signs the body; a newcomer gets it without asking, the emulator pushes in it, and a plaintext
        # push is refused (tests switch the mode with tests.helpers.set_message_mode)
        message_mode=default_message_mode(official_secrets),
    )
    await upsert_wechat_account(
        merchant=result.merchant,
        kind="miniprogram",
        appid=wechat.miniprogram.appid,
        api_base=wechat.miniprogram.api_base,
        secrets={"secret": wechat.miniprogram.secret},
    )
    pay = wechat.pay
    await upsert_wechat_account(
        merchant=result.merchant,
        kind="pay",
        mch_id=pay.mch_id,
        api_base=pay.api_base,
        secrets={
            "api_key": pay.api_key,
            "api_v3_key": pay.api_v3_key,
            "api_version": pay.api_version,
            "cert_serial_no": pay.cert_serial_no,
            "private_key": _read_key(pay.private_key_path),
            "platform_public_key_id": pay.platform_public_key_id,
            "platform_public_key": _read_key(pay.platform_public_key_path),
        },
    )
    return result
