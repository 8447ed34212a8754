"""Thin HTTP blueprints: parse, authorize, call one domain function, serialize."""

from __future__ import annotations

from sanic import Sanic
from sanic_ext import openapi

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
from server.config import Settings
from wechat.emulator.app import create_blueprint


def register_blueprints(app: Sanic, settings: Settings) -> None:

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
        emulator = create_blueprint(settings)
        app.blueprint(emulator)
        openapi.exclude(bp=emulator)  # dev-only stand-in for WeChat, not part of Huiyuan's API
