"""POS orders: quote an order in the documented order of application, and settle it in one transaction.

The order is a consumption record in the `purchase` table (source 'pos', order_no 'pos:<idempotency key>'),
so it earns points and growth exactly as the purchases endpoint does (models/checkout/purchases.py _finish).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from models.checkout import pricing
from models.checkout.purchases import Purchase, _earned_today, _finish, multiplier_permille
from models.coupons import redemption
from models.kernel import clock
from models.kernel.errors import Conflict, Forbidden, NotFound, Unprocessable
from models.ledger import books as ledger
from models.members.members import Member
from models.points.rules import PointsRules, get_points_rules, purchase_points
from models.tenancy.merchants import Store, merchant_zone
from models.tenancy.staff import Staff
from models.tenancy.visibility import Scope
from models.tiers import standing as tier_rules
from models.tiers.growth import growth_for_amount

PAYMENT_METHODS = ("cash", "card", "wechat", "alipay", "other")
KEY_MAX = 60  # order_no is "pos:" + key, at most 64 characters


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


async def _check_store(*, scope: Scope, store_id: int) -> None:
    if not scope.sees_store(store_id):
        raise Forbidden("staff of one store settle orders of that store", code="auth.store_scope", field="store_id")
    if not await Store.exists(id=store_id, merchant_id=scope.merchant_id):
        raise Unprocessable("no such store", code="checkout.store_invalid", field="store_id")


async def _check_staff(*, scope: Scope, items: list[pricing.Item]) -> None:
    """A service line's staff member must be the merchant's (of this merchant, any store: stylists move)."""
    wanted = {it.staff_id for it in items if it.staff_id is not None}
    if not wanted:
        return
    found = set(await Staff.filter(id__in=wanted, merchant_id=scope.merchant_id).values_list("id", flat=True))
    for index, item in enumerate(items):
        if item.staff_id is not None and item.staff_id not in found:
            raise Unprocessable("no such staff member", code="checkout.staff_invalid", field=f"items.{index}.staff_id")


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
    priced = pricing.price(
        order.items,
        off_permille=off,
        coupon=coupon,
        points=order.points,
        balance=order.balance,
        rules=rules,
        member_points=member_points,
        member_balance=member_balance,
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


def request_hash(order: OrderInput, payments: list[dict[str, Any]], expect: dict[str, Any] | None) -> str:
    body = {"order": asdict(order), "payments": payments, "expect": expect}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _check_key(key: str) -> None:
    if not key or len(key) > KEY_MAX:
        raise Unprocessable(
            f"idempotency_key must be 1-{KEY_MAX} characters", code="idempotency.key_invalid", field="idempotency_key"
        )


def _check_payments(payments: list[dict[str, Any]], due: int) -> None:
    for index, payment in enumerate(payments):
        amount = payment.get("amount")
        if payment.get("method") not in PAYMENT_METHODS:
            raise Unprocessable(
                f"method must be one of {', '.join(PAYMENT_METHODS)}",
                code="checkout.payment_invalid",
                field=f"payments.{index}.method",
            )
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise Unprocessable(
                "amount must be a positive number of fen",
                code="checkout.payment_invalid",
                field=f"payments.{index}.amount",
            )
    paid = sum(int(p["amount"]) for p in payments)
    if paid != due:
        raise Unprocessable(
            f"payments add up to {paid} fen, {due} fen are due",
            code="checkout.payments_mismatch",
            field="payments",
            due=due,
            paid=paid,
        )


_CHANGED_CODES = {
    "checkout.points_insufficient": "points",
    "checkout.balance_insufficient": "balance",
    "checkout.points_over_cap": "points",
    "checkout.balance_over_due": "balance",
    "points.insufficient": "points",
    "balance.insufficient": "balance",
}


def _changed(reason: str, message: str) -> Conflict:
    return Conflict(f"the order changed since the quote: {message}", code="checkout.changed", reason=reason)


async def _repeat(*, scope: Scope, order_no: str, digest: str) -> Purchase | None:
    earlier = await Purchase.get_or_none(merchant_id=scope.merchant_id, order_no=order_no)
    if earlier is None:
        return None
    if not scope.sees_store(earlier.store_id):  # another store's order: say nothing of it
        raise Conflict("idempotency_key was already used for a different order", code="checkout.key_reused")
    if earlier.request_hash != digest:
        raise Conflict(
            "idempotency_key was already used for a different order", code="checkout.key_reused", order_id=earlier.id
        )
    return earlier


def _lines_json(priced: pricing.Priced) -> list[dict[str, Any]]:
    """The lines as the order keeps them: every priced figure, the points each took, how many units came back."""
    points_per_line = pricing.allocate(priced.points_used, [ln.points_fen for ln in priced.lines])
    return [
        {**asdict(ln), "points": points, "returned": 0}
        for ln, points in zip(priced.lines, points_per_line, strict=True)
    ]


async def settle(
    *,
    scope: Scope,
    order: OrderInput,
    idempotency_key: str,
    payments: list[dict[str, Any]],
    expect: dict[str, Any] | None = None,
    staff_id: int | None = None,
    api_key_id: int | None = None,
) -> tuple[Purchase, bool]:
    """Settle an order once per key, all or nothing: (the order, True when this call created it).

    expect: the quote's {due, points, balance} the till saw; a different figure now is 409 checkout.changed.
    A member whose points or stored value were spent meanwhile (read here or lost to a concurrent order at the
    guarded debit) is 409 checkout.changed and nothing is written.
    """
    merchant_id = scope.merchant_id
    _check_key(idempotency_key)
    if order.member_id is None:
        raise Unprocessable("a POS order needs a member", code="checkout.member_required", field="member_id")
    member_id = order.member_id
    order_no = f"pos:{idempotency_key}"
    digest = request_hash(order, payments, expect)
    earlier = await _repeat(scope=scope, order_no=order_no, digest=digest)
    if earlier is not None:
        return earlier, False
    await _check_store(scope=scope, store_id=order.store_id)
    await _check_staff(scope=scope, items=order.items)
    await _member(scope=scope, member_id=member_id)
    rules = await get_points_rules(merchant_id=merchant_id)

    async def work() -> Purchase:
        async with in_transaction():
            # the points account row lock serialises this member's orders (their points, the daily cap)
            await ledger.PointsAccount.filter(member_id=member_id, merchant_id=merchant_id).select_for_update().first()
            member_points, member_balance = await ledger.get_balances(member_id=member_id)
            tier = await tier_rules.current_tier(merchant_id=merchant_id, member_id=member_id)
            off = pricing.off_permille_of(tier.discount_permille) if tier is not None else 0
            coupon = await _coupon(
                merchant_id=merchant_id,
                member_id=member_id,
                coupon_id=order.coupon_id,
                store_id=order.store_id,
                tier_id=tier.id if tier is not None else None,
            )
            try:
                priced = pricing.price(
                    order.items,
                    off_permille=off,
                    coupon=coupon,
                    points=order.points,
                    balance=order.balance,
                    rules=rules,
                    member_points=member_points,
                    member_balance=member_balance,
                )
            except Unprocessable as exc:
                if exc.code in _CHANGED_CODES and expect is not None:
                    raise _changed(_CHANGED_CODES[exc.code], exc.message) from None
                if exc.code == "coupon.not_applicable" and exc.extra.get("reason") in ("used", "expired"):
                    raise _changed("coupon", exc.message) from None  # used by another order since the quote
                raise
            if expect is not None:
                for name, now in (("due", priced.due), ("points", priced.points_used), ("balance", priced.balance_fen)):
                    if name in expect and expect[name] != now:
                        raise _changed(name, f"{name} is now {now}, the quote said {expect[name]}")
            _check_payments(payments, priced.due)
            when = clock.now()
            points = await _points_earned(
                rules, priced=priced, store_id=order.store_id, merchant_id=merchant_id, member_id=member_id
            )
            if rules.daily_cap is not None and points > 0:
                zone = await merchant_zone(merchant_id=merchant_id)
                used = await _earned_today(merchant_id=merchant_id, member_id=member_id, occurred_at=when, zone=zone)
                points = max(0, min(points, rules.daily_cap - used))
            growth = int(await growth_for_amount(merchant_id=merchant_id, amount=priced.earn_basis))
            purchase = await Purchase.create(
                merchant_id=merchant_id,
                member_id=member_id,
                store_id=order.store_id,
                order_no=order_no,
                amount=priced.earn_basis,
                items=_earn_items(priced),
                points=points,
                growth=growth,
                occurred_at=when,
                source="pos",
                staff_id=staff_id,
                api_key_id=api_key_id,
                gross=priced.gross,
                tier_discount=priced.tier_discount,
                coupon_id=priced.coupon_id,
                coupon_discount=priced.coupon_discount,
                points_used=priced.points_used,
                points_fen=priced.points_fen,
                balance_fen=priced.balance_fen,
                due=priced.due,
                payments=payments,
                lines=_lines_json(priced),
                request_hash=digest,
                return_seq=0,
            )
            reason = f"POS order {purchase.id}"
            if priced.coupon_id is not None and not await redemption.redeem(
                merchant_id=merchant_id,
                coupon_id=priced.coupon_id,
                member_id=member_id,
                order_ref=f"purchase:{purchase.id}",
            ):  # the guarded UPDATE lost: used by another order meanwhile (or just expired); all of this rolls back
                raise _changed("coupon", "the coupon was used or expired meanwhile")
            debits = (
                (ledger.change_points, priced.points_used, "spend", "pos-points"),
                (ledger.change_balance, priced.balance_fen, "pay", "pos-balance"),
            )
            try:
                for change, amount, kind, key in debits:
                    if amount:
                        await change(
                            merchant_id=merchant_id,
                            member_id=member_id,
                            delta=-amount,
                            kind=kind,
                            reason=reason,
                            idempotency_key=f"{key}:{purchase.id}",
                            ref_type="purchase",
                            ref_id=str(purchase.id),
                            operator_staff_id=staff_id,
                            savepoint=False,
                        )
            except Conflict as exc:
                if exc.code in _CHANGED_CODES:
                    raise _changed(_CHANGED_CODES[exc.code], exc.message) from None
                raise
            await _finish(purchase, fresh=True)  # points earned as a new lot, growth value and tier upgrade
            return purchase

    try:
        return await ledger.retrying(work, what="pos order"), True
    except IntegrityError:
        earlier = await _repeat(scope=scope, order_no=order_no, digest=digest)
        if earlier is None:
            raise
        return earlier, False


async def get_order(*, scope: Scope, order_id: int) -> Purchase:
    purchase = await Purchase.get_or_none(id=order_id, merchant_id=scope.merchant_id, source="pos")
    if purchase is None or not scope.sees_store(purchase.store_id):
        raise NotFound("no such order", code="checkout.order_not_found")
    return purchase
