"""Daily sign-in: once per member per merchant-local day, with streak rewards."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class SignIn(Model):
    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    local_date = fields.DateField()  # the merchant-local calendar day
    streak = fields.IntField()  # 1 on the first day of a run
    points = fields.IntField(default=0)
    makeup = fields.BooleanField(default=False)  # bought afterwards with points
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "sign_in"
        unique_together = (("member_id", "local_date"),)
