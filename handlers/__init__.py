"""Thin HTTP blueprints: parse, authorize, call one domain function, serialize."""

from __future__ import annotations

from sanic import Sanic

from server.config import Settings


def register_blueprints(app: Sanic, settings: Settings) -> None:
    import jobs.cards  # noqa: F401 - registers outbox topics
    import models.onboarding  # noqa: F401 - registers OA event handlers
    from handlers import (
        auth,
        cards,
        health,
        ledger,
        member_admin,
        members,
        merchants,
        miniprogram,
        pay_notify,
        payments,
        points,
        qrcodes,
        signin,
        tiers,
        wallet,
        wechat_official,
    )

    modules = (
        health,
        auth,
        merchants,
        members,
        member_admin,
        ledger,
        qrcodes,
        cards,
        miniprogram,
        wechat_official,
        pay_notify,
        points,
        signin,
        tiers,
        payments,
        wallet,
    )
    for module in modules:
        app.blueprint(module.bp)
    if settings.wechat.emulator.enabled:
        from sanic_ext import openapi

        from wechat.emulator.app import create_blueprint

        emulator = create_blueprint(settings)
        app.blueprint(emulator)
        openapi.exclude(bp=emulator)  # dev-only stand-in for WeChat, not part of Huiyuan's API
