"""The checkout interface: offer() per kind and applicability, exact allocation, guarded redeem and restore."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tortoise.transactions import in_transaction

from models.coupons.redemption import (
    CouponNotApplicable,
    CouponTerms,
    Line,
    allocate,
    offer,
    redeem,
    redeem_statements,
    restore,
    usable_coupon,
    usable_for_member,
)
from models.kernel import clock, sqlpath
from models.kernel.errors import NotFound
from tests.coupons.helpers import add_template, member_id

NOW = datetime(2027, 3, 5, 2, 0, tzinfo=UTC)


def terms(**extra) -> CouponTerms:
    base = {
        "coupon_id": 1,
        "template_id": 1,
        "member_id": 1,
        "kind": "full_reduction",
        "name": "t",
        "threshold": 10000,
        "reduction": 2000,
        "discount_permille": 0,
        "max_discount": None,
        "gift_sku": None,
        "stackable": True,
        "status": "usable",
        "valid_from": NOW - timedelta(days=1),
        "valid_until": NOW + timedelta(days=1),
        "returnable": True,
    }
    return CouponTerms(**(base | extra))


LINES = [
    Line(index=0, sku="A", category="coffee", amount=6000, unit_price=3000, quantity=2),
    Line(index=1, sku="B", category="cake", amount=4001, unit_price=4001, quantity=1),
    Line(index=2, sku="C", category="tea", amount=1999, unit_price=1999, quantity=1),
]


def test_full_reduction_allocates_exactly():
    result = offer(terms(), LINES, store_id=1, tier_id=None, now=NOW)
    assert result.discount == 2000 and sum(result.per_line.values()) == 2000
    assert result.per_line == {0: 1000, 1: 667, 2: 333}


def test_threshold_sku_store_tier_validity():
    with pytest.raises(CouponNotApplicable, match="needs"):
        offer(terms(sku_include=("C",)), LINES, store_id=1, tier_id=None, now=NOW)
    with pytest.raises(CouponNotApplicable):
        offer(terms(store_ids=(2,)), LINES, store_id=1, tier_id=None, now=NOW)
    with pytest.raises(CouponNotApplicable):
        offer(terms(tier_ids=(5,)), LINES, store_id=1, tier_id=4, now=NOW)
    with pytest.raises(CouponNotApplicable):
        offer(terms(), LINES, store_id=1, tier_id=None, now=NOW + timedelta(days=2))
    with pytest.raises(CouponNotApplicable):
        offer(terms(status="used"), LINES, store_id=1, tier_id=None, now=NOW)
    excluded = offer(terms(threshold=0, category_exclude=("cake",)), LINES, store_id=1, tier_id=None, now=NOW)
    assert set(excluded.per_line) == {0, 2}


def test_discount_cash_gift():
    discount = offer(
        terms(kind="discount", threshold=0, discount_permille=150), LINES, store_id=1, tier_id=None, now=NOW
    )
    assert discount.discount == 12000 * 150 // 1000 == 1800
    capped = offer(
        terms(kind="discount", threshold=0, discount_permille=150, max_discount=500),
        LINES,
        store_id=1,
        tier_id=None,
        now=NOW,
    )
    assert capped.discount == 500 and sum(capped.per_line.values()) == 500
    cash = offer(terms(kind="cash", threshold=0, reduction=50000), LINES, store_id=1, tier_id=None, now=NOW)
    assert cash.discount == 12000
    gift = offer(terms(kind="gift", threshold=0, gift_sku="A"), LINES, store_id=1, tier_id=None, now=NOW)
    assert gift.discount == 3000 and gift.per_line == {0: 3000}
    with pytest.raises(CouponNotApplicable):
        offer(terms(kind="gift", threshold=0, gift_sku="Z"), LINES, store_id=1, tier_id=None, now=NOW)


def test_allocate_sums():
    lines = [
        Line(index=i, sku=str(i), category=None, amount=a, unit_price=a, quantity=1) for i, a in enumerate([1, 1, 1])
    ]
    assert allocate(2, lines) == {0: 1, 1: 1}


async def test_redeem_once_and_restore(client, admin, demo):
    template = await add_template(client, admin, returnable=True)
    member = await member_id(client, admin, "13900000301")
    body = {"template_id": template["id"], "idempotency_key": "r"}
    coupon = (await client.post(f"/api/members/{member}/coupons", json=body, headers=admin)).json()
    merchant_id = demo.merchant.id
    found = await usable_coupon(merchant_id=merchant_id, member_id=member, coupon_id=coupon["id"])
    assert found.kind == "full_reduction" and found.threshold == 10000
    with pytest.raises(NotFound):
        await usable_coupon(merchant_id=merchant_id, member_id=member + 1, coupon_id=coupon["id"])
    assert [t.coupon_id for t in await usable_for_member(merchant_id=merchant_id, member_id=member)] == [coupon["id"]]
    assert await redeem(merchant_id=merchant_id, coupon_id=coupon["id"], member_id=member, order_ref="o1") is True
    assert await redeem(merchant_id=merchant_id, coupon_id=coupon["id"], member_id=member, order_ref="o2") is False
    assert await usable_for_member(merchant_id=merchant_id, member_id=member) == []
    assert await restore(coupon_id=coupon["id"], order_ref="o2") is False
    assert await restore(coupon_id=coupon["id"], order_ref="o1") is True
    assert await restore(coupon_id=coupon["id"], order_ref="o1") is False
    assert await redeem(merchant_id=merchant_id, coupon_id=coupon["id"], member_id=member, order_ref="o3") is True
    assert await restore(coupon_id=coupon["id"], order_ref="o3") is True
    async with in_transaction():
        batch = await sqlpath.run(
            redeem_statements(coupon_id=coupon["id"], member_id=member, order_ref="o4", now=clock.now()) * 2
        )
    assert batch.counts == [1, 0]
