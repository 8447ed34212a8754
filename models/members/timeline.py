"""A member's timeline: registration source, scans, card events and who changed what, when."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class MemberActivity(Model):
    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    kind = fields.CharField(max_length=32)  # registered, scanned, card_claimed, activated, profile_changed, ...
    detail: dict[str, Any] = fields.JSONField(default=dict)
    actor = fields.CharField(max_length=32, default="system")  # staff:<id> | member | wechat | system | import
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "member_activity"
        indexes = (("member_id", "id"),)


async def record(
    *, merchant_id: int, member_id: int, kind: str, actor: str = "system", detail: dict[str, Any] | None = None
) -> MemberActivity:
    """Append to the member's timeline; call inside the transaction of the change it describes."""
    return await MemberActivity.create(
        merchant_id=merchant_id, member_id=member_id, kind=kind, actor=actor, detail=detail or {}
    )


async def list_activity(*, merchant_id: int, member_id: int, before_id: int | None, limit: int) -> list[MemberActivity]:
    """Newest first, paged by id."""
    query = MemberActivity.filter(merchant_id=merchant_id, member_id=member_id)
    if before_id:
        query = query.filter(id__lt=before_id)
    return await query.order_by("-id").limit(limit)
