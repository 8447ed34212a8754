"""The WeChat member card: template, claim QR codes, activation, code decryption."""

from __future__ import annotations

from sanic import Blueprint

bp = Blueprint("cards")
