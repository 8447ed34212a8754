"""1,000 mixed POS orders on MariaDB: 20 members, each sending 50 orders at once that race for the member's last
points, last stored value and one coupon; then half of the settled orders returned (some partially), concurrently.
Everything is checked against the hand computation below, then `check-ledgers`.

Each order is 2 units of A at 1,000 fen: gross 2000, tier "normal" pays 90 % -> 200 off -> 1800. Points earn
nothing here (1 point per 100,000 fen); growth is 1 per 100 fen of gross - discounts - points as cash.
Per member: 1000 points, 10000 fen of stored value (a recharge), one 满10减2 coupon (threshold 1000, 200 off).

  kind  n   pays                                        settles            growth each
  P    15   90 points (900 fen, the 50 % cap) + 900 cash  1000 // 90 = 11    900 // 100 = 9
  B    15   1700 stored value + 100 cash                 10000 // 1700 = 5  18
  C     3   the coupon (-200) + 1600 cash                1 (one coupon)     16
  M    17   1800 cash                                    17                 18
  -> 34 settled per member, 680 in all; the losers are 409 checkout.changed and write nothing.

Returns per member (a partial return is 1 of the 2 units: c * 1 // 2 of each figure c comes back):
  P: 3 whole + 3 partial -> points back 3 * 90 + 3 * 45 = 405; growth back 3 * 9 + 3 * 4 = 39
  B: 1 whole + 2 partial -> stored value back 1700 + 2 * 850 = 3400; growth back 18 + 2 * 9 = 36
  C: 1 whole             -> the coupon is the member's again; growth back 16
  M: 4 whole + 4 partial -> growth back 4 * 18 + 4 * 9 = 108
  points 1000 - 11 * 90 + 405 = 415; stored value 10000 - 5 * 1700 + 3400 = 4900;
  growth 11 * 9 + 5 * 18 + 16 + 17 * 18 - (39 + 36 + 16 + 108) = 511 - 199 = 312
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import pytest

from models.checkout.purchases import Purchase
from models.coupons.tables import Coupon
from models.ledger.balance_lots import BalanceLot
from models.ledger.books import BalanceAccount, PointsAccount
from models.tiers.tables import MemberTier
from server.__main__ import _check_ledgers
from tests.helpers import add_member, error_of
from tests.points.helpers import adjust, assert_lots_agree, put_rules
from tests.tiers.helpers import add_tier

MEMBERS = 20
KINDS = {"P": 15, "B": 15, "C": 3, "M": 17}
SETTLE = {"P": 11, "B": 5, "C": 1, "M": 17}
GROWTH = {"P": 9, "B": 18, "C": 16, "M": 18}
RETURNS = {"P": (3, 3), "B": (1, 2), "C": (1, 0), "M": (4, 4)}  # (whole, partial) per member


def _order(store: int, member: int, coupon: int, kind: str, n: int) -> dict:
    points, balance, coupon_id, cash = {
        "P": (90, 0, None, 900),
        "B": (0, 1700, None, 100),
        "C": (0, 0, coupon, 1600),
        "M": (0, 0, None, 1800),
    }[kind]
    return {
        "store_id": store,
        "member_id": member,
        "items": [{"sku": "A", "name": "A", "unit_price": 1000, "quantity": 2}],
        "coupon_id": coupon_id,
        "points": points,
        "balance": balance,
        "idempotency_key": f"m{member}-{kind}-{n}",
        "payments": [{"method": "cash", "amount": cash}],
        "expect": {"due": cash, "points": points, "balance": balance},
    }


async def test_a_thousand_mixed_orders_race_then_half_come_back(client, admin, demo, settings):
    if not settings.database.url.startswith("mysql://"):
        pytest.skip("row-lock concurrency runs on MariaDB")
    await put_rules(client, admin, earn={"points": 1, "per_fen": 100_000})
    await add_tier(client, admin, "normal", 0, 0, discount_permille=900)
    template = await client.post(
        "/api/coupon-templates",
        json={"kind": "full_reduction", "name": "满10减2", "threshold": 1000, "reduction": 200, "valid_days": 30,
              "channels": ["staff"]},
        headers=admin,
    )  # fmt: skip
    assert template.status_code == 201, template.text
    members: dict[int, int] = {}  # member -> its coupon
    for i in range(MEMBERS):
        member = (await add_member(client, admin, phone=f"1390000{i:04d}", store_id=demo.store.id))["id"]
        await adjust(client, admin, member, 1000, f"seed-points-{member}")
        body = {"delta": 10000, "kind": "recharge", "reason": "储值", "idempotency_key": f"seed-bal-{member}"}
        assert (await client.post(f"/api/members/{member}/balance", json=body, headers=admin)).status_code == 200
        grant = {"template_id": template.json()["id"], "idempotency_key": f"grant-{member}"}
        granted = await client.post(f"/api/members/{member}/coupons", json=grant, headers=admin)
        assert granted.status_code == 201, granted.text
        members[member] = granted.json()["id"]

    bodies = [
        (member, kind, _order(demo.store.id, member, coupon, kind, n))
        for member, coupon in members.items()
        for kind, count in KINDS.items()
        for n in range(count)
    ]
    assert len(bodies) == 1000
    random.Random(13).shuffle(bodies)
    gate = asyncio.Semaphore(48)

    async def post(path: str, body: dict):
        async with gate:
            return await client.post(path, json=body, headers=admin)

    answers = await asyncio.gather(*(post("/api/pos/orders", body) for _, _, body in bodies))
    settled: dict[tuple[int, str], list[int]] = defaultdict(list)
    for (member, kind, _), answer in zip(bodies, answers, strict=True):
        if answer.status_code == 201:
            settled[(member, kind)].append(answer.json()["id"])
        else:
            assert (answer.status_code, error_of(answer)["code"]) == (409, "checkout.changed"), answer.text
    for member in members:
        assert {kind: len(settled[(member, kind)]) for kind in KINDS} == SETTLE, member
    assert await Purchase.filter(source="pos").count() == MEMBERS * sum(SETTLE.values())

    returns = []
    for member in members:
        for kind, (whole, partial) in RETURNS.items():
            for n, order_id in enumerate(settled[(member, kind)][: whole + partial]):
                units = 2 if n < whole else 1
                body = {"items": [{"sku": "A", "quantity": units}], "idempotency_key": f"r-{order_id}"}
                returns.append(post(f"/api/pos/orders/{order_id}/returns", body))
    for answer in await asyncio.gather(*returns):
        assert answer.status_code == 201, answer.text

    earned = sum(SETTLE[kind] * GROWTH[kind] for kind in KINDS)
    for member, coupon in members.items():
        assert (await PointsAccount.get(member_id=member)).balance == 415 == await assert_lots_agree(member)
        assert (await BalanceAccount.get(member_id=member)).balance == 4900
        lots = await BalanceLot.filter(member_id=member)
        assert sum(lot.principal_remaining + lot.bonus_remaining for lot in lots) == 4900
        assert (await MemberTier.get(member_id=member)).growth_total == earned - 199 == 312
        assert (await Coupon.get(id=coupon)).status == "usable"
    assert await _check_ledgers() == 0
