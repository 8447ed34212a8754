"""Merchant member management: search, CSV export and import, timeline."""

from __future__ import annotations

from sanic import Blueprint

bp = Blueprint("member_admin")
