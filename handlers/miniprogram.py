"""Mini-program login, phone binding and member self-service."""

from __future__ import annotations

from sanic import Blueprint

bp = Blueprint("miniprogram")
