"""Identify the member at the till: by dynamic QR, card code, encrypted card code (WeChat) or phone.

Every way ends in the caller's merchant; a member of another merchant, or nobody at all, is the same 404
member.not_found. By phone, the staff views' visibility rule holds: a cashier or a store's POS key finds the
members of its own store only. A member who shows their dynamic QR code or their card is at this till in person:
a store-scoped caller finds them wherever they joined the chain, and gets a till ticket (models/pos/tickets.py)
to quote and settle their order here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from models.coupons.redemption import CouponTerms, usable_for_member
from models.kernel.errors import NotFound, wechat_errors
from models.ledger.books import get_balances
from models.members import members
from models.members.member_card import MemberCard
from models.members.members import Member
from models.members.qr import verify_member_qr
from models.onboarding.miniprogram import mask_phone
from models.plans.terms import PaidPlan, member_plan_status
from models.pos.tickets import issue_ticket
from models.tenancy.merchants import merchant_client
from models.tenancy.visibility import Scope
from models.tiers.standing import current_tier
from models.tiers.tables import Tier
from wechat import card as card_api

if TYPE_CHECKING:
    from wechat.gateway import WeChatGateway


@dataclass(frozen=True)
class PosMember:
    """What the till shows once the member is identified."""

    member: Member
    phone_masked: str | None
    card_code: str | None
    tier: Tier | None
    points: int
    balance: int
    plan: PaidPlan | None
    plan_ends_at: datetime | None
    coupons: list[CouponTerms] = field(default_factory=list)  # usable now, soonest expiring first
    visiting: bool = False  # a member of another store, served at this store's till
    ticket: str | None = None  # for a visiting member: what quote and settle need to serve them here


def _not_found() -> NotFound:
    return NotFound("member not found", code="member.not_found")


async def _by_card_code(*, scope: Scope, code: str) -> Member:
    card = await MemberCard.filter(merchant_id=scope.merchant_id, code=code).order_by("-claimed_at", "-id").first()
    if card is None:
        raise _not_found()
    return await members.get_member(scope=scope, member_id=card.member_id)


async def find_member(
    *,
    scope: Scope,
    secret: str,
    wechat: WeChatGateway,
    qr: str | None = None,
    card_code: str | None = None,
    encrypted_code: str | None = None,
    phone: str | None = None,
) -> Member:
    """The member named by exactly one of qr, card_code, encrypted_code or phone.

    By phone, visible in the scope; by QR or card (the member is here), anywhere in the scope's merchant.
    """
    present = Scope(merchant_id=scope.merchant_id)  # shown in person: the whole chain's members
    if qr is not None:
        merchant_id, member_id = verify_member_qr(qr, secret=secret)  # 401 member_qr.invalid: forged or expired
        if merchant_id != scope.merchant_id:
            raise _not_found()
        return await members.get_member(scope=present, member_id=member_id)
    if card_code is not None:
        return await _by_card_code(scope=present, code=card_code)
    if encrypted_code is not None:
        # a network call to WeChat: outside any transaction, through the gateway's client
        client = await merchant_client(wechat, merchant_id=scope.merchant_id, kind="official")
        with wechat_errors("card/code/decrypt"):
            code = await card_api.decrypt_code(client, encrypt_code=encrypted_code)
        if code is None:
            raise _not_found()
        return await _by_card_code(scope=present, code=code)
    if phone is not None:
        member = await Member.filter(phone=phone, **scope.members()).first()
        if member is None:
            raise _not_found()
        return member
    raise _not_found()


async def describe(*, member: Member) -> PosMember:
    """Tier, points, balance, card code and running plan of an identified member."""
    points, balance = await get_balances(member_id=member.id)
    card = (
        await MemberCard.filter(member_id=member.id, merchant_id=member.merchant_id)  # type: ignore[attr-defined]
        .exclude(status="removed")
        .order_by("-claimed_at", "-id")
        .first()
    )
    tier = await current_tier(merchant_id=member.merchant_id, member_id=member.id)  # type: ignore[attr-defined]
    plan = await member_plan_status(merchant_id=member.merchant_id, member_id=member.id)  # type: ignore[attr-defined]
    return PosMember(
        member=member,
        phone_masked=mask_phone(member.phone),
        card_code=card.code if card is not None else None,
        tier=tier,
        points=points,
        balance=balance,
        plan=plan.plan,
        plan_ends_at=plan.ends_at,
        coupons=await usable_for_member(merchant_id=member.merchant_id, member_id=member.id),  # type: ignore[attr-defined]
    )


async def lookup_member(
    *,
    scope: Scope,
    secret: str,
    wechat: WeChatGateway,
    qr: str | None = None,
    card_code: str | None = None,
    encrypted_code: str | None = None,
    phone: str | None = None,
) -> PosMember:
    """Identify the member at the till: tier, benefits, points, balance, plan and the coupons usable now.

    A store-scoped caller identifying a member of another store (by QR or card) gets them with a till ticket.
    """
    member = await find_member(
        scope=scope,
        secret=secret,
        wechat=wechat,
        qr=qr,
        card_code=card_code,
        encrypted_code=encrypted_code,
        phone=phone,
    )
    found = await describe(member=member)
    if scope.store_id is not None and member.origin_store_id != scope.store_id:
        ticket = issue_ticket(
            secret=secret, merchant_id=scope.merchant_id, store_id=scope.store_id, member_id=member.id
        )
        found = replace(found, visiting=True, ticket=ticket)
    return found
