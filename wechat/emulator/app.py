"""The emulator blueprint: WeChat API paths under settings.wechat.emulator.mount, plus /control."""

from __future__ import annotations

from typing import Protocol

from sanic import Blueprint

from wechat.emulator import card, oa, pay, payv3, wxa
from wechat.emulator.control import Control
from wechat.emulator.state import AppAccount, EmulatorState, MerchantAccount
from wechat.emulator.wire import Api


class _App(Protocol):
    @property
    def appid(self) -> str: ...

    @property
    def secret(self) -> str: ...


class _OfficialAccount(_App, Protocol):
    @property
    def token(self) -> str: ...

    @property
    def encoding_aes_key(self) -> str: ...


class _Merchant(Protocol):
    @property
    def mch_id(self) -> str: ...

    @property
    def api_key(self) -> str: ...

    @property
    def api_v3_key(self) -> str: ...


class _Mount(Protocol):
    @property
    def mount(self) -> str: ...


class _WeChat(Protocol):
    @property
    def official(self) -> _OfficialAccount: ...

    @property
    def miniprogram(self) -> _App: ...

    @property
    def pay(self) -> _Merchant: ...

    @property
    def emulator(self) -> _Mount: ...


class EmulatorSettings(Protocol):
    """What the emulator reads of the server's settings (server.config.Settings has it): the accounts, the mount."""

    @property
    def wechat(self) -> _WeChat: ...


def state_from_settings(settings: EmulatorSettings) -> EmulatorState:
    """Return a fresh state that knows the accounts configured in settings."""
    wechat = settings.wechat
    official = AppAccount(
        appid=wechat.official.appid,
        secret=wechat.official.secret,
        token=wechat.official.token,
        encoding_aes_key=wechat.official.encoding_aes_key,
    )
    miniprogram = AppAccount(appid=wechat.miniprogram.appid, secret=wechat.miniprogram.secret)
    merchant = MerchantAccount(mch_id=wechat.pay.mch_id, api_key=wechat.pay.api_key, api_v3_key=wechat.pay.api_v3_key)
    return EmulatorState(apps=(official, miniprogram), merchants=(merchant,))


def create_blueprint(settings: EmulatorSettings, *, state: EmulatorState | None = None) -> Blueprint:
    """Build the emulator blueprint; its state lives on bp.ctx.state (one per process)."""
    mount = "/" + settings.wechat.emulator.mount.strip("/")
    bp = Blueprint("wechat_emulator", url_prefix=mount)
    bp.ctx.state = state or state_from_settings(settings)
    api = Api(bp, bp.ctx.state)
    for module in (oa, card, pay, payv3, wxa):
        module.register(api)
    Control(
        bp.ctx.state,
        official_appid=settings.wechat.official.appid,
        miniprogram_appid=settings.wechat.miniprogram.appid,
        mount=mount,
    ).register(bp)
    return bp
