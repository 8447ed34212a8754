"""The merchant's WeChat member card template and each member's card in the WeChat card wallet."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class CardTemplate(Model):
    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField()
    card_id = fields.CharField(max_length=64, null=True, unique=True)  # WeChat's id, after card/create
    status = fields.CharField(max_length=16, default="draft")  # draft | checking | approved | rejected
    config = fields.JSONField(default=dict)  # logo, brand, colour, title, notice, description, custom fields
    activate_form = fields.JSONField(default=dict)  # fields the one-tap activation asks for
    reject_reason = fields.CharField(max_length=255, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "card_template"


class MemberCard(Model):
    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    card_id = fields.CharField(max_length=64)
    code = fields.CharField(max_length=32)
    store_id = fields.IntField(null=True)  # from OuterStr = store code
    status = fields.CharField(max_length=16, default="claimed")  # claimed | activated | removed
    claimed_at = fields.DatetimeField(auto_now_add=True)
    activated_at = fields.DatetimeField(null=True)
    removed_at = fields.DatetimeField(null=True)

    class Meta:
        table = "member_card"
        unique_together = (("card_id", "code"),)
        indexes = (("member_id", "card_id"),)


class OnboardingSettings(Model):
    """Per merchant: what a new member gets, once, at activation, and the welcome message."""

    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField(unique=True)
    welcome_points = fields.IntField(default=0)
    welcome_balance = fields.IntField(default=0)  # fen
    referrer_points = fields.IntField(default=50)
    referee_points = fields.IntField(default=50)
    welcome_text = fields.CharField(max_length=600, default="欢迎加入！点击领取会员卡。")
    tier_name = fields.CharField(max_length=32, default="普通会员")  # until the loyalty engine assigns tiers
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "onboarding_settings"
