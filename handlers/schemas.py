"""Schemas and serializers that several handler modules share (members, ledger entries); no routes here."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import Field, StrictInt

from models.ledger import books as ledger
from models.members import members
from models.tiers import admin as tier_admin
from models.tiers.tables import Tier
from server.api import IsoDate, Out, Schema
from server.auth import Principal, scope_of


class CouponGiftIn(Schema):
    """One entry of a promised coupon pack (recharge package, plan benefits, tier upgrade gift)."""

    template_id: StrictInt = Field(ge=1, le=2**31 - 1, description="An active coupon template with the gift channel")
    quantity: StrictInt = Field(1, ge=1, le=20)


class MemberOut(Out):
    id: int
    store_id: int | None
    openid: str | None
    unionid: str | None
    phone: str | None
    name: str
    gender: str
    birthday: date | None
    custom_fields: dict[str, Any]
    id_card_no_masked: str | None
    points: int
    balance: int = Field(description="Stored value in fen")
    created_at: datetime
    updated_at: datetime


class MemberFilters(Schema):
    phone: str | None = Field(None, max_length=24)
    name: str | None = Field(None, max_length=64)
    id_card_no: str | None = Field(None, max_length=18)
    openid: str | None = Field(None, max_length=64)
    card_code: str | None = Field(None, max_length=32, description="Code of the member's WeChat member card")
    store_id: int | None = Field(None, ge=1, le=2**31 - 1, description="HQ roles only; store roles see their store")
    source: Literal["staff", "oa_qr", "card", "mp", "import"] | None = None
    subscribed: bool | None = Field(None, description="Follows the official account")
    activated: bool | None = Field(None, description="Activated the member card")
    created_from: IsoDate | None = Field(None, description="Registered on or after this day (merchant's time zone)")
    created_to: IsoDate | None = Field(None, description="Registered on or before this day (merchant's time zone)")

    def for_principal(self, principal: Principal) -> dict[str, Any]:
        """The filters as domain arguments; store-scoped roles stay fixed to their store."""
        filters = self.model_dump(exclude={"offset", "limit"})
        scope = scope_of(principal)
        if scope.limited:
            filters["store_id"] = scope.store_id
        return {"merchant_id": scope.merchant_id, **filters}


async def serialize(member: members.Member, *, balances: tuple[int, int] | None = None) -> MemberOut:
    """The member as staff see it; balances: (points, fen) when the caller has read them already."""
    points, balance = balances if balances is not None else await ledger.get_balances(member_id=member.id)
    return MemberOut(
        id=member.id,
        store_id=member.origin_store_id,
        openid=member.openid,
        unionid=member.unionid,
        phone=member.phone,
        name=member.name,
        gender=member.gender,
        birthday=member.birthday,
        custom_fields=member.custom_fields,
        id_card_no_masked=member.id_card_masked(),
        points=points,
        balance=balance,
        created_at=member.created_at,
        updated_at=member.updated_at,
    )


class EntryOut(Out):
    id: int
    member_id: int
    delta: int
    balance_after: int
    kind: str
    reason: str
    ref_type: str
    ref_id: str
    idempotency_key: str
    operator_staff_id: int | None
    created_at: datetime


class ChangeOut(Out):
    entry: EntryOut
    replayed: bool = Field(description="True when the idempotency key was seen before and nothing changed")
    balance: int = Field(description="Balance right after this entry (for a replay, right after the first one)")


class LedgerQuery(Schema):
    before_id: int | None = Field(None, ge=1, le=2**63 - 1)
    limit: int = Field(50, ge=1, le=200)


class ActivityOut(Out):
    id: int
    kind: str = Field(description="registered, scanned, card_claimed, activated, profile_changed, ...")
    actor: str = Field(description="staff:<id> | member | wechat | system | import")
    detail: dict[str, Any]
    created_at: datetime


class ActivePackage(Out):
    id: int
    name: str
    kind: str
    uses_total: int
    uses_left: int
    valid_until: datetime | None


class TierOut(Out):
    id: int
    code: str
    name: str
    rank: int
    threshold: int
    points_multiplier_permille: int
    discount_permille: int
    benefits: dict[str, Any]
    upgrade_gift: dict[str, Any]
    is_active: bool


class MemberTierOut(Out):
    tier: TierOut | None = Field(description="None when the merchant has no tiers")
    basis: str
    basis_value: int | None = Field(description="The member's figure in the basis (None for paid_plan)")
    growth_12m: int
    growth_lifetime: int
    next_tier: TierOut | None
    needed: int | None = Field(description="Basis still needed to reach the next tier")
    since: datetime | None
    keep_until: datetime | None = Field(description="The tier cannot fall before this settlement")
    manual_until: datetime | None
    manual_reason: str
    next_settlement: date = Field(description="Merchant-local day of the next monthly settlement")


def tier_out(tier: Tier | None) -> TierOut | None:
    return TierOut.model_validate(tier) if tier is not None else None


def member_tier_out(view: tier_admin.MemberTierView) -> MemberTierOut:
    """Where a member stands in the tiers (GET /api/members/<id>/tier, the portrait) as its schema."""
    return MemberTierOut(
        tier=tier_out(view.tier),
        basis=view.basis,
        basis_value=view.basis_value,
        growth_12m=view.growth_12m,
        growth_lifetime=view.growth_lifetime,
        next_tier=tier_out(view.next_tier),
        needed=view.needed,
        since=view.since,
        keep_until=view.keep_until,
        manual_until=view.manual_until,
        manual_reason=view.manual_reason,
        next_settlement=view.next_settlement,
    )
