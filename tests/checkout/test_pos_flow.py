"""The till as a new user drives it, over HTTP: a 满100减20 template, the member claims it in the mini-program, the
cashier identifies the member by the dynamic QR, quotes and settles with tier discount + coupon + points + stored
value, then returns one line and then the rest. Every number below is computed by hand in the documented order
(docs/architecture.md "Checkout"):

  tier "normal" pays 90 % (100 permille off); default points rules: 10 points = 100 fen, at most 50 % of what is
  left; 1 point per 1,000 fen earned, growth 1 per 100 fen.
  A 6000 x 1, B 3000 x 2                          gross 12000
  (1) tier per line: A 600, B 600                 -> 5400 / 5400 = 10800
  (2) coupon 满100减20 (10800 >= 10000): 2000 over 5400:5400 -> 1000 / 1000 -> 4400 / 4400 = 8800
  (3) points: cap 8800 * 500 // 1000 = 4400 fen -> points_max 440; 300 points = 3000 fen -> 1500 / 1500
  (4) stored value 2000 over 2900:2900 -> 1000 / 1000; due 1900 / 1900 = 3800, paid in cash
  earns on 12000 - 1200 - 2000 - 3000 = 5800 fen: 5 points, 58 growth
  earned per line by 2900:2900 -> points [3, 2] (a tie goes to the first line), growth [29, 29]
  return B (both units): 150 points and 1000 fen of stored value back, 1900 fen of money to hand back, 2 earned
  points and 29 growth taken back; the coupon stays used (the order is not all back). Then A: the coupon
  comes back to the member (still valid, the template allows it).
"""

from __future__ import annotations

from models.ledger.books import BalanceAccount, PointsAccount
from models.tiers.tables import MemberTier
from server.__main__ import _check_ledgers
from tests.helpers import add_member, add_staff, add_store, error_of
from tests.points.helpers import adjust
from tests.tiers.helpers import add_tier

EMU = "/_emulator"  # the built-in WeChat emulator's control API
ITEMS = [
    {"sku": "A", "name": "Latte beans 1kg", "category": "beans", "unit_price": 6000, "quantity": 1},
    {"sku": "B", "name": "Mug", "category": "ware", "unit_price": 3000, "quantity": 2},
]


async def _holdings(member: int) -> tuple[int, int, int]:
    row = await MemberTier.get_or_none(member_id=member)
    return (
        (await PointsAccount.get(member_id=member)).balance,
        (await BalanceAccount.get(member_id=member)).balance,
        row.growth_total if row is not None else 0,
    )


async def test_a_new_user_drives_coupon_claim_qr_identify_quote_settle_and_returns(client, admin, demo):
    await add_tier(client, admin, "normal", 0, 0, discount_permille=900)
    template = await client.post(
        "/api/coupon-templates",
        json={
            "kind": "full_reduction",
            "name": "满100减20",
            "threshold": 10000,
            "reduction": 2000,
            "valid_days": 30,
            "total_stock": 100,
            "per_member_limit": 1,
            "channels": ["self", "staff"],
        },
        headers=admin,
    )
    assert template.status_code == 201, template.text
    template_id = template.json()["id"]

    # the member, in the mini-program: logs in at the store, sees the template, claims it
    code = (await client.post(f"{EMU}/control/mp-code", json={"openid": "mp_flow"})).json()["code"]
    login = await client.post("/api/mp/login", json={"code": code, "store_code": demo.store.code})
    assert login.status_code == 200, login.text
    member = login.json()["member_id"]
    me = {"Authorization": f"Bearer {login.json()['access_token']}"}
    offered = await client.get("/api/mp/coupon-templates", headers=me)
    assert [t["id"] for t in offered.json()["items"]] == [template_id], offered.text
    claimed = await client.post("/api/mp/coupons", json={"template_id": template_id}, headers=me)
    assert claimed.status_code == 201, claimed.text
    coupon_id = claimed.json()["id"]
    twice = await client.post("/api/mp/coupons", json={"template_id": template_id}, headers=me)
    assert (twice.status_code, error_of(twice)["code"]) == (409, "coupon.limit_reached")

    await adjust(client, admin, member, 1000, "flow-points")
    body = {"delta": 5000, "kind": "recharge", "reason": "储值", "idempotency_key": "flow-balance"}
    assert (await client.post(f"/api/members/{member}/balance", json=body, headers=admin)).status_code == 200

    # the cashier of that store scans the member's dynamic QR
    cashier = await add_staff(client, admin, username="flow-cashier", role="cashier", store_id=demo.store.id)
    qr = await client.get("/api/mp/me/qr", headers=me)
    assert qr.status_code == 200, qr.text
    found = await client.get("/api/pos/member", params={"qr": qr.json()["token"]}, headers=cashier)
    assert found.status_code == 200, found.text
    who = found.json()
    assert (who["member_id"], who["points"], who["balance"]) == (member, 1000, 5000)
    assert who["tier"]["discount_permille"] == 900
    assert [(c["coupon_id"], c["threshold"], c["reduction"]) for c in who["coupons"]] == [(coupon_id, 10000, 2000)]

    order = {
        "store_id": demo.store.id,
        "member_id": member,
        "items": ITEMS,
        "coupon_id": coupon_id,
        "points": 300,
        "balance": 2000,
    }
    quote = await client.post("/api/pos/quote", json=order, headers=cashier)
    assert quote.status_code == 200, quote.text
    q = quote.json()
    assert q["gross"] == 12000
    assert [ln["tier_discount"] for ln in q["lines"]] == [600, 600] and q["tier_discount"] == 1200
    assert [ln["coupon_discount"] for ln in q["lines"]] == [1000, 1000] and q["coupon_discount"] == 2000
    assert q["points_max"] == 440
    assert [ln["points_fen"] for ln in q["lines"]] == [1500, 1500] and q["points_fen"] == 3000
    assert [ln["balance_fen"] for ln in q["lines"]] == [1000, 1000] and q["balance"] == 2000
    assert [ln["due"] for ln in q["lines"]] == [1900, 1900] and q["due"] == 3800
    assert (q["points_earned"], q["growth_earned"]) == (5, 58)

    settle = {
        **order,
        "idempotency_key": "flow-0001",
        "payments": [{"method": "cash", "amount": 3800}],
        "expect": {"due": 3800, "points": 300, "balance": 2000},
    }
    settled = await client.post("/api/pos/orders", json=settle, headers=cashier)
    assert settled.status_code == 201, settled.text
    paid = settled.json()
    assert (paid["coupon_id"], paid["coupon_discount"], paid["due"]) == (coupon_id, 2000, 3800)
    assert (paid["points_earned"], paid["growth_earned"], paid["amount"]) == (5, 58, 5800)
    assert await _holdings(member) == (1000 - 300 + 5, 5000 - 2000, 58)
    used = await client.get("/api/mp/me/coupons", params={"status": "used"}, headers=me)
    assert [c["id"] for c in used.json()["items"]] == [coupon_id], used.text

    # the same coupon on another order: the quote says why, a settle with the old quote's figures is 409
    again = await client.post("/api/pos/quote", json=order, headers=cashier)
    assert (again.status_code, error_of(again)["code"], error_of(again)["reason"]) == (
        422,
        "coupon.not_applicable",
        "used",
    )
    stale = await client.post("/api/pos/orders", json={**settle, "idempotency_key": "flow-0002"}, headers=cashier)
    assert (stale.status_code, error_of(stale)["code"], error_of(stale)["reason"]) == (
        409,
        "checkout.changed",
        "coupon",
    )
    assert await _holdings(member) == (705, 3000, 58)  # nothing written

    # return line B (both mugs)
    back = await client.post(
        f"/api/pos/orders/{paid['id']}/returns",
        json={"items": [{"sku": "B", "quantity": 2}], "idempotency_key": "flow-r1"},
        headers=cashier,
    )
    assert back.status_code == 201, back.text
    r = back.json()
    # earned 5 points / 58 growth over the lines' 2900:2900 -> [3, 2] (a tie goes to the first line) / [29, 29]
    assert (r["earned_back"], r["growth_back"]) == (2, 29)
    assert (r["whole"], r["coupon_back"]) == (False, False)
    assert await _holdings(member) == (705 + 150 - 2, 3000 + 1000, 58 - 29)

    # then line A: the whole order is back, and so is the coupon
    rest = await client.post(
        f"/api/pos/orders/{paid['id']}/returns",
        json={"items": [{"sku": "A", "quantity": 1}], "idempotency_key": "flow-r2"},
        headers=cashier,
    )
    assert rest.status_code == 201, rest.text
    assert (rest.json()["whole"], rest.json()["coupon_back"]) == (True, True)
    r = rest.json()
    assert (r["points_back"], r["balance_back"], r["refund_due"], r["earned_back"], r["growth_back"]) == (
        150,
        1000,
        1900,
        3,
        29,
    )
    assert await _holdings(member) == (1000, 5000, 0)
    usable = await client.get("/api/mp/me/coupons", params={"status": "usable"}, headers=me)
    assert [c["id"] for c in usable.json()["items"]] == [coupon_id], usable.text
    assert await _check_ledgers() == 0


async def test_a_coupon_that_does_not_apply_or_is_not_the_members_is_refused_with_the_reason(client, admin, demo):
    body = {"kind": "full_reduction", "name": "满100减20", "threshold": 10000, "reduction": 2000, "valid_days": 30,
            "channels": ["staff"], "store_ids": [demo.store.id]}  # fmt: skip
    template = (await client.post("/api/coupon-templates", json=body, headers=admin)).json()["id"]
    members = [(await add_member(client, admin, phone=f"1370000000{i}"))["id"] for i in range(2)]
    coupons = []
    for member in members:
        grant = {"template_id": template, "idempotency_key": f"g-{member}"}
        coupons.append((await client.post(f"/api/members/{member}/coupons", json=grant, headers=admin)).json()["id"])
    other_store = await add_store(client, admin, code="F2")

    async def quote(member: int, coupon: int, *, store: int = demo.store.id, price: int = 12000):
        items = [{"sku": "A", "name": "A", "unit_price": price, "quantity": 1}]
        body = {"store_id": store, "member_id": member, "items": items, "coupon_id": coupon}
        return await client.post("/api/pos/quote", json=body, headers=admin)

    theirs = await quote(members[0], coupons[1])
    assert (theirs.status_code, error_of(theirs)["code"]) == (404, "coupon.not_found")
    for response, reason in (
        (await quote(members[0], coupons[0], price=9999), "threshold"),
        (await quote(members[0], coupons[0], store=other_store), "store"),
    ):
        error = error_of(response)
        assert (response.status_code, error["code"], error["field"], error["reason"]) == (
            422,
            "coupon.not_applicable",
            "coupon_id",
            reason,
        )
    fine = await quote(members[0], coupons[0])
    assert fine.status_code == 200 and fine.json()["coupon_discount"] == 2000, fine.text
