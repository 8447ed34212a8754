"""The pure pricing: documented order, allocations exact to the fen."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.checkout.pricing import Coupon, Item, Line, Offer, allocate, off_permille_of, price
from models.kernel.errors import Unprocessable
from models.points.rules import PointsRules

RULES = PointsRules()  # 10 points = 100 fen, at most 50 % of what is left


def _items() -> list[Item]:
    return [
        Item(sku="A", name="Shampoo", category="care", unit_price=3333, quantity=3),  # 9999
        Item(sku="B", name="Haircut", category="service", unit_price=5001, quantity=1, kind="service", staff_id=7),
    ]


def test_documented_order_by_hand() -> None:
    # tier pays 95 %: 5 % off per line, floored: 9999*50//1000 = 499, 5001*50//1000 = 250
    p = price(
        _items(),
        off_permille=off_permille_of(950),
        coupon=None,
        points=300,
        balance=2000,
        rules=RULES,
        member_points=1000,
        member_balance=5000,
    )
    assert [ln.tier_discount for ln in p.lines] == [499, 250]
    left = 15000 - 749  # 14251
    assert p.points_max == 710  # cap 14251*500//1000 = 7125 fen -> 71 units; the member's 1000 -> 100 units
    # 300 points = 3000 fen, allocated 9500:4751 -> 3000*9500/14251 = 1999.85 -> 1999 (+1 by remainder)
    assert [ln.points_fen for ln in p.lines] == [2000, 1000]
    # balance 2000 over 7500:3751 -> 1333.21 / 666.78 -> 1333 + 667
    assert [ln.balance_fen for ln in p.lines] == [1333, 667]
    assert p.due == left - 3000 - 2000 == 9251
    assert [ln.due for ln in p.lines] == [9500 - 2000 - 1333, 4751 - 1000 - 667]
    assert p.earn_basis == 15000 - 749 - 3000


def test_points_max_is_a_multiple_of_the_rate() -> None:
    p = price(
        _items(),
        off_permille=50,
        coupon=None,
        points=0,
        balance=0,
        rules=RULES,
        member_points=1000,
        member_balance=0,
    )
    # left 14251, cap 7125 fen -> 71 units of 100 fen -> 710 points; member 1000
    assert p.points_max == 710


def test_non_stackable_coupon_skips_the_tier_discount() -> None:
    def offer(lines: list[Line]) -> Offer:
        assert [ln.amount for ln in lines] == [9999, 5001]
        return Offer(discount=2000, per_line={0: 1333, 1: 667})

    p = price(
        _items(),
        off_permille=50,
        coupon=Coupon(coupon_id=9, stackable=False, offer=offer),
        points=0,
        balance=0,
        rules=RULES,
        member_points=0,
        member_balance=0,
    )
    assert p.tier_discount == 0 and p.coupon_discount == 2000 and p.due == 13000 and p.coupon_id == 9


@pytest.mark.parametrize(
    ("points", "balance", "code"),
    [
        (15, 0, "checkout.points_invalid"),
        (720, 0, "checkout.points_over_cap"),
        (710, 0, "checkout.points_insufficient"),
        (0, 6000, "checkout.balance_insufficient"),
    ],
)
def test_what_cannot_be_paid_is_refused(points: int, balance: int, code: str) -> None:
    with pytest.raises(Unprocessable) as exc:
        price(
            _items(),
            off_permille=50,
            coupon=None,
            points=points,
            balance=balance,
            rules=RULES,
            member_points=700,
            member_balance=5000,
        )
    assert exc.value.code == code


def test_balance_beyond_what_is_left() -> None:
    with pytest.raises(Unprocessable) as exc:
        price(
            _items(),
            off_permille=0,
            coupon=None,
            points=0,
            balance=15001,
            rules=RULES,
            member_points=0,
            member_balance=10**6,
        )
    assert exc.value.code == "checkout.balance_over_due"


@given(st.integers(0, 10**9), st.lists(st.integers(0, 10**7), min_size=1, max_size=20))
def test_allocate_is_exact_and_bounded(total: int, weights: list[int]) -> None:
    shares = allocate(total, weights)
    if sum(weights) == 0:
        assert shares == [0] * len(weights)
        return
    assert sum(shares) == total
    if total <= sum(weights):
        assert all(0 <= s <= w for s, w in zip(shares, weights, strict=True))


@given(
    st.lists(st.tuples(st.integers(1, 10**6), st.integers(1, 50)), min_size=1, max_size=8),
    st.integers(0, 1000),
    st.integers(0, 10**5),
    st.integers(0, 10**7),
)
def test_lines_add_up(lines: list[tuple[int, int]], off: int, member_points: int, member_balance: int) -> None:
    items = [Item(sku=f"S{i}", name="x", category=None, unit_price=u, quantity=q) for i, (u, q) in enumerate(lines)]
    probe = price(
        items,
        off_permille=off,
        coupon=None,
        points=0,
        balance=0,
        rules=RULES,
        member_points=member_points,
        member_balance=member_balance,
    )
    p = price(
        items,
        off_permille=off,
        coupon=None,
        points=probe.points_max,
        balance=0,
        rules=RULES,
        member_points=member_points,
        member_balance=member_balance,
    )
    p = price(
        items,
        off_permille=off,
        coupon=None,
        points=probe.points_max,
        balance=p.balance_max,
        rules=RULES,
        member_points=member_points,
        member_balance=member_balance,
    )
    for ln in p.lines:
        assert ln.gross == ln.tier_discount + ln.coupon_discount + ln.points_fen + ln.balance_fen + ln.due
        assert min(ln.tier_discount, ln.points_fen, ln.balance_fen, ln.due) >= 0
    assert p.due == sum(ln.due for ln in p.lines)
    assert p.gross - p.tier_discount - p.points_fen - p.balance_fen == p.due


def test_a_stackable_coupon_prices_the_after_tier_lines() -> None:
    seen: list[list[int]] = []

    def offer(lines: list[Line]) -> Offer:  # 满100减20 on everything, allocated as the coupons package does
        seen.append([ln.amount for ln in lines])
        return Offer(discount=2000, per_line=dict(enumerate(allocate(2000, [ln.amount for ln in lines]))))

    p = price(
        _items(),
        off_permille=100,
        coupon=Coupon(coupon_id=3, stackable=True, offer=offer),
        points=0,
        balance=0,
        rules=RULES,
        member_points=0,
        member_balance=0,
    )
    # tier: 9999 -> 999 off, 5001 -> 500 off; the coupon sees 9000 and 4501; 2000 over them -> 1333.2 / 666.8
    assert seen == [[9000, 4501]]
    assert [ln.coupon_discount for ln in p.lines] == [1333, 667]
    assert p.due == 15000 - 1499 - 2000 and p.earn_basis == p.due
