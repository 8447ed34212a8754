"""Members of a merchant: identity, profile, custom fields, encrypted ID-card number."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Subquery
from tortoise.models import Model
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from models.kernel import clock
from models.kernel.cipher import cipher
from models.kernel.errors import Conflict, NotFound, Unprocessable
from models.kernel.hooks import Hook
from models.ledger.books import BalanceAccount, PointsAccount
from models.members.custom_fields import validate_values
from models.members.member_card import MemberCard
from models.members.timeline import record
from models.tenancy.merchants import Merchant
from models.tenancy.visibility import Scope

GENDERS = ("unknown", "male", "female")
PHONE_PATTERN = re.compile(r"^\+?[0-9]{6,20}$")
ID_CARD_PATTERN = re.compile(r"^[0-9]{17}[0-9Xx]$")
ID_CARD_CONTEXT = "member.id_card"
# (merchant_id=, member_id=) after a profile edit, in its transaction (listeners: server/wiring.py)
PROFILE_CHANGED = Hook("members.profile_changed")


class Member(Model):
    id = fields.IntField(primary_key=True)
    merchant: fields.ForeignKeyRelation = fields.ForeignKeyField("models.Merchant", related_name="members")
    merchant_id: int  # created by Tortoise for the FK
    origin_store: fields.ForeignKeyNullableRelation = fields.ForeignKeyField(
        "models.Store", related_name="members", null=True
    )
    origin_store_id: int | None  # created by Tortoise for the FK
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
    custom_fields: dict[str, Any] = fields.JSONField(default=dict)
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
    if isinstance(birthday, date) and birthday > clock.now().date():
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
    *,
    merchant_id: int,
    origin_store_id: int | None,
    profile: dict[str, Any],
    enforce_required: bool = True,
    source: str = "staff",
    actor: str = "system",
) -> Member:
    """Register a member with its points and balance accounts and a timeline entry, in one transaction."""

    data = dict(profile)
    _check_profile(data)
    data["custom_fields"] = await validate_values(
        merchant_id=merchant_id, values=data.get("custom_fields") or {}, enforce_required=enforce_required
    )
    _seal_id_card(merchant_id, data)
    data.setdefault("referral_code", new_referral_code())
    try:
        async with in_transaction():
            member = await Member.create(
                merchant_id=merchant_id, origin_store_id=origin_store_id, source=source, **data
            )
            await PointsAccount.create(member=member, merchant_id=merchant_id)
            await BalanceAccount.create(member=member, merchant_id=merchant_id)
            await record(
                merchant_id=merchant_id,
                member_id=member.id,
                kind="registered",
                actor=actor,
                detail={
                    "source": source,
                    "store_id": origin_store_id,
                    "staff_id": data.get("origin_staff_id"),
                    "referrer_id": data.get("referrer_id"),
                },
            )
    except IntegrityError as exc:
        await _raise_duplicate(merchant_id, data, exc)
        raise
    return member


REFERRAL_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def new_referral_code() -> str:
    return "".join(secrets.choice(REFERRAL_ALPHABET) for _ in range(8))


async def register_wechat_member(
    *,
    merchant_id: int,
    openid: str | None = None,
    mp_openid: str | None = None,
    unionid: str | None = None,
    origin_store_id: int | None = None,
    origin_staff_id: int | None = None,
    referral_code: str | None = None,
    source: str,
) -> tuple[Member, bool]:
    """Find the member behind a WeChat identity or register it; origin and referrer are set on creation only.

    An OA openid and a mini-program openid of one person meet through the unionid: the existing member
    gains the missing openid instead of a second member being created. Concurrent first contacts end with
    one member (the unique keys decide; the loser reads the winner's row).
    """
    if not (openid or mp_openid):
        raise ValueError("an openid or mp_openid is required")
    for attempt in range(3):
        member = await _find_by_identity(merchant_id=merchant_id, openid=openid, mp_openid=mp_openid, unionid=unionid)
        if member is not None:
            await _link_identity(member, openid=openid, mp_openid=mp_openid, unionid=unionid)
            return member, False
        referrer_id = None
        if referral_code:
            referrer_id = (
                await Member.filter(merchant_id=merchant_id, referral_code=referral_code.upper())
                .first()
                .values_list("id", flat=True)
            )
        profile = {
            "openid": openid,
            "mp_openid": mp_openid,
            "unionid": unionid,
            "origin_staff_id": origin_staff_id,
            "referrer_id": referrer_id,
        }
        try:
            member = await create_member(
                merchant_id=merchant_id,
                origin_store_id=origin_store_id,
                profile=profile,
                enforce_required=False,
                source=source,
                actor="wechat",
            )
            return member, True
        except Conflict:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _find_by_identity(
    *, merchant_id: int, openid: str | None, mp_openid: str | None, unionid: str | None
) -> Member | None:
    for field, value in (("openid", openid), ("mp_openid", mp_openid), ("unionid", unionid)):
        if value:
            member = await Member.filter(merchant_id=merchant_id, **{field: value}).first()
            if member is not None:
                return member
    return None


async def _link_identity(member: Member, *, openid: str | None, mp_openid: str | None, unionid: str | None) -> None:
    changes = {
        field: value
        for field, value in (("openid", openid), ("mp_openid", mp_openid), ("unionid", unionid))
        if value and getattr(member, field) is None
    }
    if not changes:
        return
    try:
        await Member.filter(id=member.id).update(**changes)
    except IntegrityError:
        return  # the identity already belongs to another member: keep both as they are
    for field, value in changes.items():
        setattr(member, field, value)


def _visible(*, scope: Scope, member_id: int):
    return Member.filter(id=member_id, **scope.members())


def store_member_ids(*, merchant_id: int, store_id: int) -> Subquery:
    """The ids of a store's members as a subquery: all that a store-scoped staff role may see of members' data."""
    return Subquery(Member.filter(merchant_id=merchant_id, origin_store_id=store_id).values("id"))


def member_rows(scope: Scope) -> dict[str, Any]:
    """Filter for rows owned by a member (a `member_id` column): the scope's side for members' data.

    Here, not on Scope, because tenancy is below members and cannot name the members table.
    """
    if scope.store_id is None:
        return {"merchant_id": scope.merchant_id}
    members = store_member_ids(merchant_id=scope.merchant_id, store_id=scope.store_id)
    return {"merchant_id": scope.merchant_id, "member_id__in": members}


async def get_member(*, scope: Scope, member_id: int) -> Member:
    """A member visible in the scope: of its merchant and, for a store-scoped role, from that store."""
    member = await _visible(scope=scope, member_id=member_id).first()
    if member is None:
        raise NotFound("member not found", code="member.not_found")
    return member


async def ensure_visible(*, scope: Scope, member_id: int) -> None:
    """Like get_member, without loading the row (hot paths that only need the check)."""
    if not await _visible(scope=scope, member_id=member_id).exists():
        raise NotFound("member not found", code="member.not_found")


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def _profile_diff(member: Member, data: dict[str, Any]) -> dict[str, Any]:
    """Changed fields as {field: {"old", "new"}}; the ID card only as "changed", never its value."""
    diff: dict[str, Any] = {}
    for field, new in data.items():
        if field == "id_card_index":
            continue
        if field == "id_card_enc":
            if data.get("id_card_index") != member.id_card_index:
                diff["id_card_no"] = "changed"
            continue
        old = getattr(member, field)
        if field == "custom_fields":
            before, after = old or {}, new or {}
            for key in sorted(set(before) | set(after)):
                if before.get(key) != after.get(key):
                    diff[f"custom_fields.{key}"] = {"old": before.get(key), "new": after.get(key)}
        elif old != new:
            diff[field] = {"old": _jsonable(old), "new": _jsonable(new)}
    return diff


async def update_member(*, member: Member, changes: dict[str, Any], actor: str = "system") -> Member:
    """Change profile fields (custom fields merge, null removes); the timeline records who changed what."""

    data = dict(changes)
    _check_profile(data)
    if "custom_fields" in data:
        data["custom_fields"] = await validate_values(
            merchant_id=member.merchant_id, values=data["custom_fields"] or {}, current=member.custom_fields
        )
    _seal_id_card(member.merchant_id, data)
    diff = _profile_diff(member, data)
    if not diff:
        return member
    try:
        async with in_transaction():
            await Member.filter(id=member.id).update(**data)
            await record(
                merchant_id=member.merchant_id, member_id=member.id, kind="profile_changed", actor=actor, detail=diff
            )
            await PROFILE_CHANGED.emit(merchant_id=member.merchant_id, member_id=member.id)
    except IntegrityError as exc:
        await _raise_duplicate(member.merchant_id, data, exc)
        raise
    return await Member.get(id=member.id)


def _day_start_utc(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)


async def filter_members(
    *,
    merchant_id: int,
    store_id: int | None = None,
    phone: str | None = None,
    name: str | None = None,
    id_card_no: str | None = None,
    openid: str | None = None,
    card_code: str | None = None,
    source: str | None = None,
    subscribed: bool | None = None,
    activated: bool | None = None,
    created_from: date | None = None,
    created_to: date | None = None,
) -> QuerySet[Member]:
    """Members matching every filter; dates are days in the merchant's time zone, id_card_no exact (blind index)."""
    # a tier filter waits for the loyalty engine, which owns tiers
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
    if card_code:
        cards = MemberCard.filter(merchant_id=merchant_id, code=card_code).values("member_id")
        query = query.filter(id__in=Subquery(cards))
    if source:
        query = query.filter(source=source)
    if subscribed is not None:
        query = query.filter(subscribed=subscribed)
    if activated is not None:
        query = query.filter(activated_at__isnull=not activated)
    if created_from or created_to:
        timezone = await Merchant.filter(id=merchant_id).first().values_list("timezone", flat=True)
        zone = ZoneInfo(str(timezone or "Asia/Shanghai"))
        if created_from:
            query = query.filter(created_at__gte=_day_start_utc(created_from, zone))
        if created_to:
            query = query.filter(created_at__lt=_day_start_utc(created_to + timedelta(days=1), zone))
    return query


async def search_members(*, offset: int = 0, limit: int = 20, **filters: Any) -> tuple[int, list[Member]]:
    """Page through members matching the filters of filter_members, newest first."""
    query = await filter_members(**filters)
    total = await query.count()
    members = await query.order_by("-id").offset(offset).limit(limit)
    return total, members
