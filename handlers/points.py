"""points endpoints (being built)."""

from __future__ import annotations

from sanic import Blueprint

bp = Blueprint("points")
