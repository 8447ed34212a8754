"""A merchant's onboarding settings: welcome and referral rewards, the welcome text, the default tier name."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.kernel import clock
from models.kernel.config_cache import CONFIG, config_change


class OnboardingSettings(Model):
    """Per merchant: what a new member gets, once, at activation, and the welcome message."""

    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField(unique=True)
    welcome_points = fields.IntField(default=0)
    welcome_balance = fields.IntField(default=0)  # fen
    referrer_points = fields.IntField(default=50)
    referee_points = fields.IntField(default=50)
    welcome_text = fields.CharField(max_length=600, default="欢迎加入！点击领取会员卡。")
    welcome_coupon_template_ids: list[int] = fields.JSONField(default=list)  # granted once at card activation
    tier_name = fields.CharField(max_length=32, default="普通会员")  # shown while the merchant has no tiers
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "onboarding_settings"


SETTINGS_FIELDS = (
    "welcome_points",
    "welcome_balance",
    "referrer_points",
    "referee_points",
    "welcome_text",
    "tier_name",
    "welcome_coupon_template_ids",
)


async def get_onboarding_settings(*, merchant_id: int) -> OnboardingSettings:
    """The merchant's settings, or the defaults (unsaved) when it never changed them; cached: read-only."""
    return await CONFIG.get("onboarding_settings", merchant_id, lambda: _load_settings(merchant_id))


async def _load_settings(merchant_id: int) -> OnboardingSettings:
    found = await OnboardingSettings.get_or_none(merchant_id=merchant_id)
    return found if found is not None else OnboardingSettings(merchant_id=merchant_id)


async def update_onboarding_settings(*, merchant_id: int, changes: dict[str, Any]) -> OnboardingSettings:
    """Change the given settings; the merchant's row is created on first change (concurrent firsts end in one)."""
    unknown = set(changes) - set(SETTINGS_FIELDS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    async with config_change(merchant_id=merchant_id):
        for _ in range(2):
            if changes and await OnboardingSettings.filter(merchant_id=merchant_id).update(
                **changes, updated_at=clock.now()
            ):
                break
            if await OnboardingSettings.exists(merchant_id=merchant_id):
                break
            try:
                async with in_transaction():  # a savepoint: a lost insert race leaves the change's transaction usable
                    await OnboardingSettings.create(merchant_id=merchant_id, **changes)
                break
            except IntegrityError:
                continue  # another request created it first: apply ours as an update
        return await OnboardingSettings.get(merchant_id=merchant_id)
