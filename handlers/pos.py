"""The till: identify the member (dynamic QR, card code, encrypted card code or phone)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field
from sanic import Blueprint
from sanic.request import Request

from models.kernel.errors import Unprocessable
from models.pos.lookup import PosMember, lookup_member
from server.api import Out, Schema, endpoint, ok
from server.auth import POS, scope_of

bp = Blueprint("pos", url_prefix="/api/pos")

LOOKUP_ROLES = ("owner", "hq_admin", "store_manager", "cashier", POS)
WAYS = ("qr", "card_code", "encrypted_code", "phone")


class LookupQuery(Schema):
    qr: str | None = Field(None, min_length=1, max_length=64, description="The member's dynamic QR token (60 s)")
    card_code: str | None = Field(None, min_length=1, max_length=32, description="The member card's code")
    encrypted_code: str | None = Field(
        None, min_length=1, max_length=512, description="An encrypt_code of the card (decrypted with WeChat)"
    )
    phone: str | None = Field(None, min_length=1, max_length=24, description="The member's phone, exactly")


class TierOut(Out):
    id: int
    code: str
    name: str
    discount_permille: int = Field(description="950 = orders at 95 %")
    points_multiplier_permille: int
    benefits: dict[str, Any]


class PlanOut(Out):
    id: int
    code: str
    name: str
    ends_at: datetime | None = Field(description="When the last stacked term ends; null for lifetime")
    benefits: dict[str, Any]


class PosCouponOut(Out):
    coupon_id: int
    template_id: int
    kind: str = Field(description="full_reduction | discount | cash | gift")
    name: str
    threshold: int = Field(description="Fen of eligible items the order needs (0: none)")
    reduction: int = Field(description="Fen off (full_reduction, cash)")
    discount_permille: int = Field(description="Permille off (discount)")
    max_discount: int | None
    gift_sku: str | None
    stackable: bool = Field(description="Usable together with the tier discount")
    valid_until: datetime


class PosMemberOut(Out):
    member_id: int
    name: str
    phone_masked: str | None
    card_code: str | None
    tier: TierOut | None
    points: int
    balance: int = Field(description="Stored value in fen")
    plan: PlanOut | None
    coupons: list[PosCouponOut] = Field(description="Coupons usable now, soonest expiring first (at most 100)")
    visiting: bool = Field(description="A member of another store of the chain, shown in person (QR or card)")
    member_ticket: str | None = Field(
        description="For a visiting member: pass it as member_ticket to quote and settle here (valid 30 minutes)"
    )


def _out(found: PosMember) -> PosMemberOut:
    tier, plan = found.tier, found.plan
    return PosMemberOut(
        member_id=found.member.id,
        name=found.member.name,
        phone_masked=found.phone_masked,
        card_code=found.card_code,
        tier=TierOut.model_validate(tier) if tier is not None else None,
        points=found.points,
        balance=found.balance,
        plan=None
        if plan is None
        else PlanOut(id=plan.id, code=plan.code, name=plan.name, ends_at=found.plan_ends_at, benefits=plan.benefits),
        coupons=[
            PosCouponOut(
                coupon_id=c.coupon_id,
                template_id=c.template_id,
                kind=c.kind,
                name=c.name,
                threshold=c.threshold,
                reduction=c.reduction,
                discount_permille=c.discount_permille,
                max_discount=c.max_discount,
                gift_sku=c.gift_sku,
                stackable=c.stackable,
                valid_until=c.valid_until,
            )
            for c in found.coupons
        ],
        visiting=found.visiting,
        member_ticket=found.ticket,
    )


@bp.get("/member")
@endpoint(
    summary="Identify the member at the till",
    tag="pos",
    roles=LOOKUP_ROLES,
    query=LookupQuery,
    response=PosMemberOut,
    errors=(404, 502, 503),
    description="Exactly one of qr, card_code, encrypted_code, phone (else 422 pos.lookup_missing or "
    "pos.lookup_ambiguous). 401 member_qr.invalid for a forged or expired QR; 404 member.not_found for an unknown "
    "member or one the caller may not see (another merchant's; for a cashier or a store's POS key, by phone, "
    "another store's). A member of another store who shows their QR code or card is found, with `visiting` and "
    "a `member_ticket` for quote and settle at this store. encrypted_code is decrypted by the merchant's "
    "official account (card/code/decrypt).",
)
async def find_member(request: Request, query: LookupQuery):
    given = {way: getattr(query, way) for way in WAYS if getattr(query, way) is not None}
    if not given:
        raise Unprocessable("give one of qr, card_code, encrypted_code, phone", code="pos.lookup_missing", field="qr")
    if len(given) > 1:
        raise Unprocessable(
            f"give only one of {', '.join(sorted(given))}", code="pos.lookup_ambiguous", field=sorted(given)[1]
        )
    found = await lookup_member(
        scope=scope_of(request.ctx.principal),
        secret=request.app.ctx.settings.security.jwt_secret,
        wechat=request.app.ctx.wechat,
        **given,
    )
    return ok(_out(found))
