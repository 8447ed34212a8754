"""The tag definitions of a merchant and which members carry each tag."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model

KINDS = ("manual", "rule")
STATUSES = ("active", "archived")


class Tag(Model):
    """A manual tag (staff add and remove it) or a rule tag (its members are exactly those its rule matches)."""

    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField()
    code = fields.CharField(max_length=32)
    name = fields.CharField(max_length=64)
    kind = fields.CharField(max_length=8)  # manual | rule
    rule: dict[str, Any] | None = fields.JSONField(null=True)  # models/segments/rules.py; null for a manual tag
    status = fields.CharField(max_length=8, default="active")  # active | archived
    created_by = fields.IntField(null=True)  # staff id
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    evaluated_at = fields.DatetimeField(null=True)  # the last whole-merchant evaluation of a rule tag

    class Meta:
        table = "tag"
        unique_together = (("merchant_id", "code"),)
        indexes = (("merchant_id", "kind", "status"),)


class MemberTag(Model):
    """One member carrying one tag: the (tag_id, member_id) key makes adding it twice a no-op."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    tag_id = fields.IntField()
    source = fields.CharField(max_length=8)  # manual | rule
    added_by = fields.IntField(null=True)  # staff id; null for a rule
    added_at = fields.DatetimeField()

    class Meta:
        table = "member_tag"
        unique_together = (("tag_id", "member_id"),)
        indexes = (("member_id",),)


class Segment(Model):
    """A saved audience: a boolean combination of tags and rule conditions (segments/rules.py), evaluated live."""

    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField()
    code = fields.CharField(max_length=32)
    name = fields.CharField(max_length=64)
    definition: dict[str, Any] = fields.JSONField()  # checked; tiers and tags kept by id
    status = fields.CharField(max_length=8, default="active")  # active | archived
    created_by = fields.IntField(null=True)  # staff id
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "segment"
        unique_together = (("merchant_id", "code"),)
        indexes = (("merchant_id", "status"),)


class SegmentSnapshot(Model):
    """A segment's audience frozen at one moment (a campaign's audience): its members never change afterwards."""

    id = fields.IntField(primary_key=True)
    segment_id = fields.IntField()
    merchant_id = fields.IntField()
    store_id = fields.IntField(null=True)  # the store a store-scoped role took it for; null: the whole merchant
    definition: dict[str, Any] = fields.JSONField()  # the segment's definition when it was taken
    member_count = fields.IntField(default=0)
    created_by = fields.IntField(null=True)  # staff id
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "segment_snapshot"
        indexes = (("segment_id", "id"),)


class SegmentSnapshotMember(Model):
    """One member of a snapshot: the (snapshot_id, member_id) key is also the keyset of its paged listing."""

    id = fields.BigIntField(primary_key=True)
    snapshot_id = fields.IntField()
    member_id = fields.IntField()

    class Meta:
        table = "segment_snapshot_member"
        unique_together = (("snapshot_id", "member_id"),)
