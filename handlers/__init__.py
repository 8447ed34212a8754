"""Thin HTTP blueprints: parse, authorize, call one domain function, serialize."""

from __future__ import annotations

from sanic import Sanic

from server.config import Settings


def register_blueprints(app: Sanic, settings: Settings) -> None:
    from handlers import auth, health, ledger, members, merchants, pay_notify, wechat_official

    for module in (health, auth, merchants, members, ledger, wechat_official, pay_notify):
        app.blueprint(module.bp)
    if settings.wechat.emulator.enabled:
        from sanic_ext import openapi

        from wechat.emulator.app import create_blueprint

        emulator = create_blueprint(settings)
        app.blueprint(emulator)
        openapi.exclude(bp=emulator)  # dev-only stand-in for WeChat, not part of Huiyuan's API
