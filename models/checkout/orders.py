"""POS orders: quote an order in the documented order of application (settling it: models/checkout/settling.py).

The order is a consumption record in the `purchase` table (source 'pos', order_no 'pos:<idempotency key>'),
so it earns points and growth exactly as the purchases endpoint does (models/checkout/purchases.py _finish).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.checkout import pricing
from models.checkout.purchases import (
    Purchase,
    multiplier_permille,
)
from models.coupons import redemption
from models.kernel import clock
from models.kernel.errors import Forbidden, NotFound, Unprocessable
from models.ledger import books as ledger
from models.members.members import Member
from models.points.rules import PointsRules, get_points_rules, purchase_points
from models.tenancy.merchants import Store
from models.tenancy.staff import Staff
from models.tenancy.visibility import Scope
from models.tiers import standing as tier_rules
from models.tiers.growth import growth_for_amount


@dataclass(frozen=True)
class OrderInput:
    store_id: int
    member_id: int | None
    items: list[pricing.Item]
    coupon_id: int | None = None
    points: int = 0
    balance: int = 0


@dataclass(frozen=True)
class Quote:
    priced: pricing.Priced
    member_id: int | None
    store_id: int
    tier_id: int | None
    off_permille: int
    member_points: int
    member_balance: int
    points_earned: int
    growth_earned: int


async def _coupon(
    *, merchant_id: int, member_id: int | None, coupon_id: int | None, store_id: int, tier_id: int | None
) -> pricing.Coupon | None:
    """The member's coupon as pricing takes it (its offer on the after-tier lines); 404 / 422 with the reason."""
    if coupon_id is None:
        return None
    if member_id is None:
        raise Unprocessable("a coupon needs a member", code="checkout.member_required", field="member_id")
    terms = await redemption.usable_coupon(merchant_id=merchant_id, member_id=member_id, coupon_id=coupon_id)
    now = clock.now()

    def offer(lines: list[redemption.Line]) -> redemption.Offer:
        try:
            return redemption.offer(terms, lines, store_id=store_id, tier_id=tier_id, now=now)
        except redemption.CouponNotApplicable as exc:
            raise Unprocessable(
                exc.message, code="coupon.not_applicable", field="coupon_id", reason=exc.extra.get("reason")
            ) from None

    return pricing.Coupon(coupon_id=coupon_id, stackable=terms.stackable, offer=offer)


def _store_checked(*, scope: Scope, store_id: int, found: bool) -> None:
    if not scope.sees_store(store_id):
        raise Forbidden("staff of one store settle orders of that store", code="auth.store_scope", field="store_id")
    if not found:
        raise Unprocessable("no such store", code="checkout.store_invalid", field="store_id")


async def _check_store(*, scope: Scope, store_id: int) -> None:
    found = scope.sees_store(store_id) and await Store.exists(id=store_id, merchant_id=scope.merchant_id)
    _store_checked(scope=scope, store_id=store_id, found=found)


def _staff_checked(*, items: list[pricing.Item], found: set[int]) -> None:
    """A service line's staff member must be the merchant's (of this merchant, any store: stylists move)."""
    for index, item in enumerate(items):
        if item.staff_id is not None and item.staff_id not in found:
            raise Unprocessable("no such staff member", code="checkout.staff_invalid", field=f"items.{index}.staff_id")


async def _check_staff(*, scope: Scope, items: list[pricing.Item]) -> None:
    wanted = {it.staff_id for it in items if it.staff_id is not None}
    if not wanted:
        return
    rows = await Staff.filter(id__in=wanted, merchant_id=scope.merchant_id).values_list("id", flat=True)
    found = {int(i) for i in rows}  # type: ignore[call-overload]
    _staff_checked(items=items, found=found)


async def _member(*, scope: Scope, member_id: int) -> None:
    if not await Member.exists(id=member_id, **scope.members()):
        raise NotFound("member not found", code="member.not_found", field="member_id")


def _earn_items(priced: pricing.Priced) -> list[dict[str, Any]]:
    """The lines as the earning rule reads them: amount = what earns (after discounts and points as cash)."""
    return [
        {
            "sku": ln.sku,
            "category": ln.category or "",
            "amount": ln.after_discounts - ln.points_fen,
            "quantity": ln.quantity,
        }
        for ln in priced.lines
    ]


async def _points_earned(
    rules: PointsRules, *, priced: pricing.Priced, store_id: int, merchant_id: int, member_id: int
) -> int:
    if priced.earn_basis <= 0:
        return 0
    return purchase_points(
        rules,
        amount=priced.earn_basis,
        items=_earn_items(priced),
        store_id=store_id,
        multiplier_permille=await multiplier_permille(merchant_id=merchant_id, member_id=member_id),
    )


def price_order(
    order: OrderInput,
    *,
    off_permille: int,
    coupon: pricing.Coupon | None,
    rules: PointsRules,
    member_points: int,
    member_balance: int,
) -> pricing.Priced:
    """The order priced for this member: their tier's discount, the coupon, the points and stored value asked for."""
    return pricing.price(
        order.items,
        off_permille=off_permille,
        coupon=coupon,
        points=order.points,
        balance=order.balance,
        rules=rules,
        member_points=member_points,
        member_balance=member_balance,
    )


async def quote(*, scope: Scope, order: OrderInput) -> Quote:
    """Price an order for the till: every line of the computation, what is left to pay, what it will earn."""
    merchant_id = scope.merchant_id
    await _check_store(scope=scope, store_id=order.store_id)
    await _check_staff(scope=scope, items=order.items)
    rules = await get_points_rules(merchant_id=merchant_id)
    member_points = member_balance = 0
    tier_id, off = None, 0
    if order.member_id is not None:
        await _member(scope=scope, member_id=order.member_id)
        member_points, member_balance = await ledger.get_balances(member_id=order.member_id)
        tier = await tier_rules.current_tier(merchant_id=merchant_id, member_id=order.member_id)
        if tier is not None:
            tier_id, off = tier.id, pricing.off_permille_of(tier.discount_permille)
    elif order.points or order.balance:
        raise Unprocessable("points and stored value need a member", code="checkout.member_required", field="member_id")
    coupon = await _coupon(
        merchant_id=merchant_id,
        member_id=order.member_id,
        coupon_id=order.coupon_id,
        store_id=order.store_id,
        tier_id=tier_id,
    )
    priced = price_order(
        order, off_permille=off, coupon=coupon, rules=rules, member_points=member_points, member_balance=member_balance
    )
    earned = growth = 0
    if order.member_id is not None:
        earned = await _points_earned(
            rules, priced=priced, store_id=order.store_id, merchant_id=merchant_id, member_id=order.member_id
        )
        growth = await growth_for_amount(merchant_id=merchant_id, amount=priced.earn_basis)
    return Quote(
        priced=priced,
        member_id=order.member_id,
        store_id=order.store_id,
        tier_id=tier_id,
        off_permille=off,
        member_points=member_points,
        member_balance=member_balance,
        points_earned=earned,
        growth_earned=int(growth),
    )


async def get_order(*, scope: Scope, order_id: int) -> Purchase:
    purchase = await Purchase.get_or_none(id=order_id, merchant_id=scope.merchant_id, source="pos")
    if purchase is None or not scope.sees_store(purchase.store_id):
        raise NotFound("no such order", code="checkout.order_not_found")
    return purchase
