"""WeChat Pay for members and staff: the catalogue, orders and anomalies, stored value and refunds, the notifies."""

from __future__ import annotations

from sanic import Blueprint

from handlers.payments import catalogue, notify, orders, wallet

bp = Blueprint.group(catalogue.bp, orders.bp, wallet.bp, notify.bp)
