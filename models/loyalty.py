"""A merchant's loyalty program settings: points, sign-in, growth and tier rules as validated JSON."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class LoyaltyProgram(Model):
    """One row per merchant. Each JSON column is validated by its domain's pydantic schema before it is saved."""

    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField(unique=True)
    points_rules: dict[str, Any] = fields.JSONField(default=dict)  # earn, activity rules, expiry, cash rate
    signin_rules: dict[str, Any] = fields.JSONField(default=dict)  # streak table, cycle or hold, make-up
    tier_policy: dict[str, Any] = fields.JSONField(default=dict)  # growth earning, basis, settlement, grace
    version = fields.IntField(default=1)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "loyalty_program"
