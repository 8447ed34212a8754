"""A member's card in the WeChat card wallet: its code (the membership number) and its state."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


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
