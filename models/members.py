"""Members of a merchant: identity, profile, custom fields, encrypted ID-card number."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.custom_fields import validate_values
from server.crypto import cipher
from server.errors import Conflict, NotFound, Unprocessable

GENDERS = ("unknown", "male", "female")
PHONE_PATTERN = re.compile(r"^\+?[0-9]{6,20}$")
ID_CARD_PATTERN = re.compile(r"^[0-9]{17}[0-9Xx]$")
ID_CARD_CONTEXT = "member.id_card"


class Member(Model):
    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation = fields.ForeignKeyField("models.Merchant", related_name="members")
    origin_store: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.Store", related_name="members", null=True
    )
    openid = fields.CharField(max_length=64, null=True)  # official-account openid
    mp_openid = fields.CharField(max_length=64, null=True)  # mini-program openid (another app, another openid)
    unionid = fields.CharField(max_length=64, null=True)
    member_no = fields.CharField(max_length=32, null=True)  # membership number shown on the card
    referral_code = fields.CharField(max_length=16, null=True)
    referrer_id = fields.IntField(null=True)
    origin_staff_id = fields.IntField(null=True)
    source = fields.CharField(max_length=16, default="staff")  # staff | oa_qr | card | mp | import
    subscribed = fields.BooleanField(default=False)
    subscribed_at = fields.DatetimeField(null=True)
    unsubscribed_at = fields.DatetimeField(null=True)
    activated_at = fields.DatetimeField(null=True)
    mp_session_key_enc = fields.CharField(max_length=255, null=True)
    phone = fields.CharField(max_length=24, null=True)
    name = fields.CharField(max_length=64, default="")
    gender = fields.CharField(max_length=8, default="unknown")
    birthday = fields.DateField(null=True)
    custom_fields = fields.JSONField(default=dict)
    id_card_enc = fields.CharField(max_length=255, null=True)
    id_card_index = fields.CharField(max_length=64, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "member"
        unique_together = (
            ("merchant", "openid"),
            ("merchant", "mp_openid"),
            ("merchant", "unionid"),
            ("merchant", "member_no"),
            ("merchant", "referral_code"),
            ("merchant", "phone"),
            ("merchant", "id_card_index"),
        )

    def __repr__(self) -> str:  # keeps sensitive values out of logs
        return f"<Member id={self.id} merchant={self.merchant_id}>"

    def id_card_masked(self) -> str | None:
        if not self.id_card_enc:
            return None
        plain = cipher().decrypt(self.id_card_enc, context=f"{ID_CARD_CONTEXT}:{self.merchant_id}")
        return plain[:3] + "*" * (len(plain) - 7) + plain[-4:]


def _check_profile(data: dict[str, Any]) -> None:
    for key in ("name", "gender"):
        if key in data and data[key] is None:
            raise Unprocessable(f"{key} cannot be null", code="member.value_required", field=key)
    phone = data.get("phone")
    if phone is not None and not PHONE_PATTERN.match(phone):
        raise Unprocessable("phone must be 6-20 digits", code="member.phone_invalid", field="phone")
    gender = data.get("gender")
    if gender is not None and gender not in GENDERS:
        raise Unprocessable(f"gender must be one of {', '.join(GENDERS)}", code="member.gender_invalid", field="gender")
    birthday = data.get("birthday")
    if isinstance(birthday, date) and birthday > date.today():
        raise Unprocessable("birthday is in the future", code="member.birthday_invalid", field="birthday")
    id_card = data.get("id_card_no")
    if id_card is not None and not ID_CARD_PATTERN.match(id_card):
        raise Unprocessable(
            "id_card_no must be an 18-character ID-card number", code="member.id_card_invalid", field="id_card_no"
        )


def id_card_index(*, merchant_id: int, id_card_no: str) -> str:
    return cipher().blind_index(id_card_no, context=f"{ID_CARD_CONTEXT}:{merchant_id}")


def _seal_id_card(merchant_id: int, data: dict[str, Any]) -> None:
    if "id_card_no" not in data:
        return
    value = data.pop("id_card_no")
    if value is None:
        data["id_card_enc"] = data["id_card_index"] = None
        return
    value = value.upper()
    data["id_card_enc"] = cipher().encrypt(value, context=f"{ID_CARD_CONTEXT}:{merchant_id}")
    data["id_card_index"] = id_card_index(merchant_id=merchant_id, id_card_no=value)


async def _raise_duplicate(merchant_id: int, data: dict[str, Any], exc: Exception) -> None:
    for field, code in (
        ("phone", "member.phone_taken"),
        ("openid", "member.openid_taken"),
        ("unionid", "member.unionid_taken"),
        ("id_card_index", "member.id_card_taken"),
    ):
        value = data.get(field)
        if value is None:
            continue
        existing = await Member.filter(merchant_id=merchant_id, **{field: value}).first()
        if existing is not None:
            label = "id_card_no" if field == "id_card_index" else field
            raise Conflict(f"another member already has this {label}", code=code, member_id=existing.id) from exc
    raise Conflict("member conflicts with an existing one", code="member.duplicate") from exc


async def create_member(
    *, merchant_id: int, origin_store_id: int | None, profile: dict[str, Any], enforce_required: bool = True
) -> Member:
    """Register a member with its points and balance accounts, in one transaction."""
    from models.ledger import BalanceAccount, PointsAccount

    data = dict(profile)
    _check_profile(data)
    data["custom_fields"] = await validate_values(
        merchant_id=merchant_id, values=data.get("custom_fields") or {}, enforce_required=enforce_required
    )
    _seal_id_card(merchant_id, data)
    try:
        async with in_transaction():
            member = await Member.create(merchant_id=merchant_id, origin_store_id=origin_store_id, **data)
            await PointsAccount.create(member=member, merchant_id=merchant_id)
            await BalanceAccount.create(member=member, merchant_id=merchant_id)
    except IntegrityError as exc:
        await _raise_duplicate(merchant_id, data, exc)
        raise
    return member


def _visible(*, merchant_id: int, member_id: int, store_id: int | None):
    query = Member.filter(id=member_id, merchant_id=merchant_id)
    return query.filter(origin_store_id=store_id) if store_id is not None else query


async def get_member(*, merchant_id: int, member_id: int, store_id: int | None = None) -> Member:
    """A member of this merchant, visible to a store-scoped role only if it is from that store."""
    member = await _visible(merchant_id=merchant_id, member_id=member_id, store_id=store_id).first()
    if member is None:
        raise NotFound("member not found", code="member.not_found")
    return member


async def ensure_visible(*, merchant_id: int, member_id: int, store_id: int | None = None) -> None:
    """Like get_member, without loading the row (hot paths that only need the check)."""
    if not await _visible(merchant_id=merchant_id, member_id=member_id, store_id=store_id).exists():
        raise NotFound("member not found", code="member.not_found")


async def update_member(*, member: Member, changes: dict[str, Any]) -> Member:
    """Change profile fields; custom fields merge (null removes), required ones stay required."""
    data = dict(changes)
    _check_profile(data)
    if "custom_fields" in data:
        data["custom_fields"] = await validate_values(
            merchant_id=member.merchant_id, values=data["custom_fields"] or {}, current=member.custom_fields
        )
    _seal_id_card(member.merchant_id, data)
    if not data:
        return member
    try:
        await Member.filter(id=member.id).update(**data)
    except IntegrityError as exc:
        await _raise_duplicate(member.merchant_id, data, exc)
        raise
    return await Member.get(id=member.id)


async def search_members(
    *,
    merchant_id: int,
    store_id: int | None = None,
    phone: str | None = None,
    name: str | None = None,
    id_card_no: str | None = None,
    openid: str | None = None,
    offset: int = 0,
    limit: int = 20,
) -> tuple[int, list[Member]]:
    """Page through members, newest first; id_card_no matches exactly through the blind index."""
    query = Member.filter(merchant_id=merchant_id)
    if store_id is not None:
        query = query.filter(origin_store_id=store_id)
    if phone:
        query = query.filter(phone=phone)
    if name:
        query = query.filter(name__icontains=name)
    if openid:
        query = query.filter(openid=openid)
    if id_card_no:
        query = query.filter(id_card_index=id_card_index(merchant_id=merchant_id, id_card_no=id_card_no.upper()))
    total = await query.count()
    members = await query.order_by("-id").offset(offset).limit(limit)
    return total, members
