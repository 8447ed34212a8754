"""Typed, frozen settings: code defaults < config.yaml < HUIYUAN_<SECTION>__<KEY> environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wechat.gateway import EMULATOR

ENV_PREFIX = "HUIYUAN_"
DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789"
DEV_DATA_KEY = "ZGV2LW9ubHktZGF0YS1rZXktY2hhbmdlLW1lLTMyYiE="  # base64 of 32 bytes, dev only
EMULATOR_KEYS = Path("wechat/emulator/keys")  # dev-only RSA keys, relative to the project root
PLACEHOLDER_MARKERS = ("change-me", "changeme", "placeholder", "dev-only", "emulator")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    request_max_size: int = Field(1_048_576, ge=1024)
    import_max_size: int = Field(512 * 1024 * 1024, ge=1024)  # streamed CSV uploads (member imports)
    access_log: bool = False
    public_url: str = ""  # how WeChat reaches us; empty = http://host:port


class DatabaseSettings(_Section):
    url: str = "sqlite://data/huiyuan.sqlite3"
    pool_min: int = Field(1, ge=1)
    pool_max: int = Field(20, ge=1)


class RedisSettings(_Section):
    url: str = "memory://"
    key_prefix: str = "hy:"


class SecuritySettings(_Section):
    data_key: str = DEV_DATA_KEY
    jwt_secret: str = DEV_JWT_SECRET
    access_token_ttl: int = Field(900, ge=60)
    refresh_token_ttl: int = Field(30 * 86400, ge=300)
    member_token_ttl: int = Field(7 * 86400, ge=60)
    login_max_failures: int = Field(5, ge=1)
    login_lock_seconds: int = Field(900, ge=1)
    hash_workers: int = Field(2, ge=1)
    hash_queue: int = Field(32, ge=0)


class OfficialAccountSettings(_Section):
    appid: str = "wx0000000000demo0a"
    secret: str = "dev-only-oa-secret"
    token: str = "devtoken"
    encoding_aes_key: str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
    api_base: str = EMULATOR


class MiniProgramSettings(_Section):
    appid: str = "wx0000000000demo0m"
    secret: str = "dev-only-mp-secret"
    api_base: str = EMULATOR


class PaySettings(_Section):
    mch_id: str = "1900000109"
    api_key: str = "dev-only-pay-v2-key-0123456789ab"
    api_v3_key: str = "dev-only-pay-v3-key-0123456789ab"
    api_base: str = EMULATOR
    api_version: Literal["v2", "v3"] = "v3"
    cert_serial_no: str = "207CC076A5969227CD0EBBAE132FCE0B0A134FCD"
    private_key_path: str = str(EMULATOR_KEYS / "merchant_private_key.pem")
    platform_public_key_id: str = "PUB_KEY_ID_0119000001092026010100000000000001"
    platform_public_key_path: str = str(EMULATOR_KEYS / "platform_public_key.pem")


class EmulatorSettings(_Section):
    enabled: bool = True
    mount: str = "/_emulator"


class WeChatSettings(_Section):
    official: OfficialAccountSettings = OfficialAccountSettings()
    miniprogram: MiniProgramSettings = MiniProgramSettings()
    pay: PaySettings = PaySettings()
    emulator: EmulatorSettings = EmulatorSettings()
    http_timeout: float = Field(5.0, gt=0)


class JobsSettings(_Section):
    outbox_worker: bool = True
    outbox_idle_seconds: float = Field(1.0, gt=0)
    coupon_remind_days: int = Field(3, ge=1, le=365)  # coupons.remind: days before a coupon expires
    scheduler: bool = True  # run the scheduled jobs in this process too (safe beside `python -m jobs.scheduler`)


class CacheSettings(_Section):
    poll_seconds: float = Field(5.0, gt=0)  # config versions / revocations re-read while pub/sub is up
    fallback_poll_seconds: float = Field(1.0, gt=0)  # ... and while it is down or reconnecting


class MerchantSeedSettings(_Section):
    code: str = "demo"
    name: str = "Demo Coffee"
    timezone: str = "Asia/Shanghai"
    store_code: str = "S001"
    store_name: str = "Demo Coffee Flagship"
    admin_username: str = "admin"
    admin_password: str = ""  # empty: generated on first seed and printed once


class Settings(_Section):
    environment: Literal["development", "production"] = "development"
    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    security: SecuritySettings = SecuritySettings()
    wechat: WeChatSettings = WeChatSettings()
    jobs: JobsSettings = JobsSettings()
    cache: CacheSettings = CacheSettings()
    merchant: MerchantSeedSettings = MerchantSeedSettings()

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with dotted-path overrides, e.g. replace(**{"server.port": 9000})."""
        data = self.model_dump()
        for dotted, value in changes.items():
            _set_path(data, dotted.split("."), value)
        return Settings.model_validate(data)


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to fix."""


def _set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            continue
        _set_path(overrides, path, value)
    return overrides


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Load settings from defaults, the YAML file (if present) and the environment."""
    environ = dict(os.environ if environ is None else environ)
    config_path = Path(path or environ.get("HUIYUAN_CONFIG", "config.yaml"))
    file_data: dict[str, Any] = {}
    if config_path.exists():
        try:
            file_data = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{config_path}: not valid YAML: {exc}") from exc
        if not isinstance(file_data, dict):
            raise ConfigError(f"{config_path}: top level must be a mapping")
    elif path is not None:
        raise ConfigError(f"config file not found: {config_path}")
    env_data = _env_overrides({k: v for k, v in environ.items() if k != "HUIYUAN_CONFIG"})
    try:
        settings = Settings.model_validate(_merge(file_data, env_data))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from exc
    check_production(settings)
    return settings


def check_production(settings: Settings) -> None:
    """Refuse placeholder secrets, the emulator and SQLite/memory stand-ins in production."""
    if not settings.is_production:
        return
    problems = []
    secrets = {
        "security.jwt_secret": settings.security.jwt_secret,
        "security.data_key": settings.security.data_key,
        "wechat.official.secret": settings.wechat.official.secret,
        "wechat.official.token": settings.wechat.official.token,
        "wechat.miniprogram.secret": settings.wechat.miniprogram.secret,
        "wechat.pay.api_key": settings.wechat.pay.api_key,
        "wechat.pay.api_v3_key": settings.wechat.pay.api_v3_key,
    }
    defaults = Settings()
    default_values = {
        "security.jwt_secret": defaults.security.jwt_secret,
        "security.data_key": defaults.security.data_key,
        "wechat.official.token": defaults.wechat.official.token,
    }
    for key, value in secrets.items():
        lowered = value.lower()
        if not value or any(m in lowered for m in PLACEHOLDER_MARKERS) or value == default_values.get(key):
            problems.append(f"{key} is a placeholder; set HUIYUAN_{key.upper().replace('.', '__')}")
    if settings.wechat.official.encoding_aes_key == defaults.wechat.official.encoding_aes_key:
        problems.append("wechat.official.encoding_aes_key is the sample key")
    for key in ("official", "miniprogram", "pay"):
        base = getattr(settings.wechat, key).api_base
        if base == EMULATOR or "_emulator" in base or base.startswith("http://127.") or "localhost" in base:
            problems.append(f"wechat.{key}.api_base points at the emulator ({base})")
    for key in ("private_key_path", "platform_public_key_path"):
        if "emulator" in getattr(settings.wechat.pay, key):
            problems.append(f"wechat.pay.{key} is the emulator's public test key")
    if settings.wechat.emulator.enabled:
        problems.append("wechat.emulator.enabled must be false in production")
    if settings.redis.url.startswith("memory://"):
        problems.append("redis.url is the in-process stand-in (memory://)")
    if problems:
        raise ConfigError("refusing to start in production: " + "; ".join(problems))
