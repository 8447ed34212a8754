"""POS pricing: the documented order of application, as pure functions (no I/O).

Order (docs/architecture.md "Checkout"):
1. tier discount per line: discount = gross * off_permille // 1000 (floored per line); skipped when the coupon
   is not stackable with the tier discount;
2. the coupon on the lines it applies to (models.coupons.redemption.offer on the after-tier lines);
3. points as cash: a multiple of rules.cash.points, worth rules.cash.fen per unit, at most max_order_permille of
   what is left and at most the member's points (422 beyond either, never trimmed);
4. stored value, at most what is left and the member's balance (422 beyond either).
Each discount and the points/balance are allocated back to the lines by largest remainder in proportion to the
line amounts at that step (ties by line index), so every line carries its own figures and partial returns are
exact. Earned points and growth are computed on (gross - discounts - points_fen): money and stored value both
count, as the existing purchase path counts every fen paid (models/checkout/purchases.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from models.coupons.redemption import Line, Offer
from models.kernel.errors import Unprocessable
from models.points.rules import PointsRules

MAX_ORDER = 10**12  # fen: an order's gross, as the purchases' MAX_AMOUNT


@dataclass(frozen=True)
class Item:
    sku: str
    name: str
    category: str | None
    unit_price: int  # fen > 0
    quantity: int  # > 0
    kind: str = "product"  # product | service
    staff_id: int | None = None
    minutes: int | None = None


@dataclass(frozen=True)
class Coupon:
    """The coupon as pricing needs it: whether it stacks with the tier discount, and how to price it."""

    coupon_id: int
    stackable: bool
    offer: Callable[[list[Line]], Offer]


@dataclass
class PricedLine:
    index: int
    sku: str
    name: str
    category: str | None
    kind: str
    staff_id: int | None
    minutes: int | None
    unit_price: int
    quantity: int
    gross: int
    tier_discount: int = 0
    coupon_discount: int = 0
    points_fen: int = 0
    balance_fen: int = 0
    due: int = 0

    @property
    def after_discounts(self) -> int:
        return self.gross - self.tier_discount - self.coupon_discount


@dataclass
class Priced:
    lines: list[PricedLine]
    gross: int
    tier_discount: int
    coupon_id: int | None
    coupon_discount: int
    points_used: int
    points_fen: int
    points_max: int  # most points the member may use on this order (a multiple of the rate)
    balance_fen: int
    balance_max: int  # most stored value the member may use after the points
    due: int  # left to pay by other means
    earn_basis: int  # fen that earn points and growth: gross - discounts - points_fen
    extra: dict[str, int] = field(default_factory=dict)


def allocate(total: int, weights: list[int]) -> list[int]:
    """Split `total` fen in proportion to weights by largest remainder (ties by index); sums exactly to total.

    A share never exceeds its weight when total <= sum(weights)."""
    whole = sum(weights)
    if total == 0 or whole == 0:
        return [0] * len(weights)
    shares = [total * w // whole for w in weights]
    rest = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in order[:rest]:
        shares[i] += 1
    return shares


def tier_discounts(items: list[Item], off_permille: int) -> list[int]:
    return [it.unit_price * it.quantity * off_permille // 1000 for it in items]


def off_permille_of(discount_permille: int | None) -> int:
    """The tier table stores what the member pays (950 = pays 95 %): the discount OFF is 1000 - that."""
    if discount_permille is None:
        return 0
    return max(0, min(1000, 1000 - discount_permille))


def points_cap(rules: PointsRules, *, left: int, member_points: int) -> tuple[int, int]:
    """(max points by the order cap, max points the member can use) as multiples of the rate."""
    cap_fen = left * rules.cash.max_order_permille // 1000
    by_cap = cap_fen // rules.cash.fen * rules.cash.points
    by_balance = member_points // rules.cash.points * rules.cash.points
    return by_cap, by_balance


def price(
    items: list[Item],
    *,
    off_permille: int,
    coupon: Coupon | None,
    points: int,
    balance: int,
    rules: PointsRules,
    member_points: int,
    member_balance: int,
) -> Priced:
    """Price an order in the documented order; raises Unprocessable naming the field for what cannot be paid."""
    if not items:
        raise Unprocessable("an order needs at least one item", code="checkout.items_required", field="items")
    if sum(it.unit_price * it.quantity for it in items) > MAX_ORDER:
        raise Unprocessable(f"an order is at most {MAX_ORDER} fen", code="checkout.amount_invalid", field="items")
    lines = [
        PricedLine(
            index=i,
            sku=it.sku,
            name=it.name,
            category=it.category,
            kind=it.kind,
            staff_id=it.staff_id,
            minutes=it.minutes,
            unit_price=it.unit_price,
            quantity=it.quantity,
            gross=it.unit_price * it.quantity,
        )
        for i, it in enumerate(items)
    ]
    # (1) tier discount, unless the coupon does not stack with it
    if coupon is None or coupon.stackable:
        for line, off in zip(lines, tier_discounts(items, off_permille), strict=True):
            line.tier_discount = off
    # (2) the coupon on the after-tier lines
    if coupon is not None:
        offer = coupon.offer(
            [
                Line(
                    index=ln.index,
                    sku=ln.sku,
                    category=ln.category,
                    amount=ln.gross - ln.tier_discount,
                    unit_price=ln.unit_price,
                    quantity=ln.quantity,
                )
                for ln in lines
            ]
        )
        for ln in lines:
            ln.coupon_discount = min(int(offer.per_line.get(ln.index, 0)), ln.gross - ln.tier_discount)
    left = sum(ln.after_discounts for ln in lines)
    # (3) points as cash
    by_cap, by_balance = points_cap(rules, left=left, member_points=member_points)
    points_max = min(by_cap, by_balance)
    if points:
        if points % rules.cash.points:
            raise Unprocessable(
                f"points must be a multiple of {rules.cash.points}", code="checkout.points_invalid", field="points"
            )
        if points > by_cap:
            raise Unprocessable(
                f"at most {by_cap} points may pay this order", code="checkout.points_over_cap", field="points"
            )
        if points > member_points:
            raise Unprocessable(
                f"the member has {member_points} points", code="checkout.points_insufficient", field="points"
            )
    points_fen = points // rules.cash.points * rules.cash.fen
    for ln, share in zip(lines, allocate(points_fen, [ln.after_discounts for ln in lines]), strict=True):
        ln.points_fen = share
    left -= points_fen
    # (4) stored value
    balance_max = min(left, member_balance)
    if balance > member_balance:
        raise Unprocessable(
            f"the member holds {member_balance} fen of stored value",
            code="checkout.balance_insufficient",
            field="balance",
        )
    if balance > left:
        raise Unprocessable(f"only {left} fen are left to pay", code="checkout.balance_over_due", field="balance")
    weights = [ln.after_discounts - ln.points_fen for ln in lines]
    for ln, share in zip(lines, allocate(balance, weights), strict=True):
        ln.balance_fen = share
        ln.due = ln.after_discounts - ln.points_fen - share
    tier_total = sum(ln.tier_discount for ln in lines)
    coupon_total = sum(ln.coupon_discount for ln in lines)
    gross = sum(ln.gross for ln in lines)
    return Priced(
        lines=lines,
        gross=gross,
        tier_discount=tier_total,
        coupon_id=coupon.coupon_id if coupon is not None else None,
        coupon_discount=coupon_total,
        points_used=points,
        points_fen=points_fen,
        points_max=points_max,
        balance_fen=balance,
        balance_max=balance_max,
        due=left - balance,
        earn_basis=gross - tier_total - coupon_total - points_fen,
    )
