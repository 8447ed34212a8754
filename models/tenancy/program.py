"""A merchant's loyalty program settings: points, sign-in, growth and tier rules as validated JSON."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.kernel.config_cache import CONFIG, config_change


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


SECTIONS = ("points_rules", "signin_rules", "tier_policy")


async def get_program(*, merchant_id: int) -> LoyaltyProgram:
    """The merchant's program row (unsaved, all defaults, until a section is first changed); cached: read-only."""
    return await CONFIG.get("program", merchant_id, lambda: _load_program(merchant_id))


async def _load_program(merchant_id: int) -> LoyaltyProgram:
    program = await LoyaltyProgram.get_or_none(merchant_id=merchant_id)
    return program if program is not None else LoyaltyProgram(merchant_id=merchant_id)


async def save_section(*, merchant_id: int, section: str, value: dict[str, Any]) -> LoyaltyProgram:
    """Replace one validated section, as a configuration change of its own."""
    async with config_change(merchant_id=merchant_id):
        return await write_section(merchant_id=merchant_id, section=section, value=value)


async def write_section(*, merchant_id: int, section: str, value: dict[str, Any]) -> LoyaltyProgram:
    """Replace one section inside the caller's config_change; concurrent first saves end in one row."""
    if section not in SECTIONS:
        raise ValueError(f"unknown loyalty section {section!r}")
    for _ in range(2):
        updated = await LoyaltyProgram.filter(merchant_id=merchant_id).update(
            **{section: value}, version=F("version") + 1
        )
        if updated:
            return await LoyaltyProgram.get(merchant_id=merchant_id)
        try:
            fresh: dict[str, Any] = {section: value}
            async with in_transaction():  # a savepoint: a lost insert race leaves the change's transaction usable
                return await LoyaltyProgram.create(merchant_id=merchant_id, **fresh)
        except IntegrityError:
            continue  # another request created it first: update that row
    raise AssertionError("unreachable")
