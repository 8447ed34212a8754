"""Store and staff QR codes for the official account and the mini-program."""

from __future__ import annotations

from sanic import Blueprint

bp = Blueprint("qrcodes")
