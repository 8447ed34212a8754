"""Thin HTTP blueprints: parse, authorize, call one domain function, serialize."""

from __future__ import annotations

from sanic import Sanic
from sanic_ext import openapi

from handlers import (
    analytics,
    audiences,
    cards,
    checkout,
    coupons,
    health,
    ledger,
    members,
    onboarding,
    operations,
    packages,
    payments,
    points,
    portrait,
    pos,
    segments,
    tenancy,
    tiers,
    wechat_accounts,
    wechat_official,
)
from server.config import Settings
from wechat.emulator.app import create_blueprint


def register_blueprints(app: Sanic, settings: Settings) -> None:

    modules = (
        health,
        tenancy,
        members,
        ledger,
        onboarding,
        cards,
        wechat_official,
        wechat_accounts,
        points,
        coupons,
        tiers,
        payments,
        checkout,
        packages,
        operations,
        pos,
        portrait,
        segments,
        analytics,
        audiences,
    )
    for module in modules:
        app.blueprint(module.bp)
    if settings.wechat.emulator.enabled:
        emulator = create_blueprint(settings)
        app.blueprint(emulator)
        openapi.exclude(bp=emulator)  # dev-only stand-in for WeChat, not part of Huiyuan's API
