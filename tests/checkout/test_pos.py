"""POS checkout over HTTP: quote, settle, read, return, with every number computed by hand below.

The order: tier "normal" (the entry tier) pays 90 % (discount_permille 900: 100 permille OFF); default points
rules (10 points = 100 fen, at most 50 % of what is left; 1 point per 1,000 fen earned); growth 1 per 100 fen.
  A  3333 x 3 = 9999, tier -999 -> 9000          B  5001 x 1 = 5001, tier -500 -> 4501      left 13501
  points cap 13501 * 500 // 1000 = 6750 fen -> 67 units -> points_max 670 (the member holds 1000)
  500 points = 5000 fen over 9000:4501 -> 3333.08 / 1666.92 -> [3333, 1667]; points per line [333, 167]
  left 5667 / 2834 = 8501; balance 2000 over them -> 1333.25 / 666.75 -> [1333, 667]
  due [4334, 2167] = 6501; earns on 15000 - 1499 - 5000 = 8501 fen: 8 points, 85 growth
  earned per line by 5667:2834 -> [5, 3]; growth -> [57, 28]
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from models.ledger.balance_lots import BalanceLot
from models.ledger.books import BalanceAccount, PointsAccount, PointsEntry
from models.points.lots import PointsLotUse
from models.tiers.tables import MemberTier
from server.__main__ import _check_ledgers
from tests.conftest import login
from tests.helpers import OTHER_OWNER_PASSWORD, add_member, add_staff, add_store, error_of, other_merchant
from tests.points.helpers import adjust, assert_lots_agree, new_member, pinned, timeless_owner
from tests.tiers.helpers import add_tier

ITEMS = [
    {"sku": "A", "name": "Shampoo", "category": "care", "unit_price": 3333, "quantity": 3},
    {"sku": "B", "name": "Haircut", "category": "service", "unit_price": 5001, "quantity": 1, "kind": "service",
     "minutes": 45},
]  # fmt: skip


async def _member(client: httpx.AsyncClient, admin: dict[str, str], *, points: int = 1000, balance: int = 3000) -> int:
    member = await new_member(client, admin)
    if points:
        await adjust(client, admin, member, points, f"seed-points-{member}")
    if balance:
        body = {"delta": balance, "kind": "recharge", "reason": "储值", "idempotency_key": f"seed-bal-{member}"}
        response = await client.post(f"/api/members/{member}/balance", json=body, headers=admin)
        assert response.status_code == 200, response.text
    return member


async def _setup(client: httpx.AsyncClient, admin: dict[str, str]) -> int:
    await add_tier(client, admin, "normal", 0, 0, discount_permille=900)
    return await _member(client, admin)


def _order(store_id: int, member_id: int, key: str, **extra: Any) -> dict[str, Any]:
    return {
        "store_id": store_id,
        "member_id": member_id,
        "items": ITEMS,
        "points": 500,
        "balance": 2000,
        "idempotency_key": key,
        "payments": [{"method": "cash", "amount": 501}, {"method": "wechat", "amount": 6000}],
        "expect": {"due": 6501, "points": 500, "balance": 2000},
        **extra,
    }


async def _balances(member: int) -> tuple[int, int, int]:
    points = (await PointsAccount.get(member_id=member)).balance
    balance = (await BalanceAccount.get(member_id=member)).balance
    row = await MemberTier.get_or_none(member_id=member)
    growth = row.growth_total if row is not None else 0
    return points, balance, growth


async def _ledgers_clean() -> None:
    """What `python -m server check-ledgers` checks: balances, running totals and points expiry totals."""
    assert await _check_ledgers() == 0


async def test_quote_settle_and_return_by_hand(client, admin, demo):
    member = await _setup(client, admin)
    store = demo.store.id
    quote = await client.post(
        "/api/pos/quote",
        json={"store_id": store, "member_id": member, "items": ITEMS, "points": 500, "balance": 2000},
        headers=admin,
    )
    assert quote.status_code == 200, quote.text
    q = quote.json()
    assert q["tier_discount_permille"] == 100
    assert [ln["gross"] for ln in q["lines"]] == [9999, 5001] and q["gross"] == 15000
    assert [ln["tier_discount"] for ln in q["lines"]] == [999, 500] and q["tier_discount"] == 1499
    assert q["points_max"] == 670 and q["member_points"] == 1000
    assert [ln["points_fen"] for ln in q["lines"]] == [3333, 1667] and q["points_fen"] == 5000
    assert [ln["balance_fen"] for ln in q["lines"]] == [1333, 667] and q["balance"] == 2000
    assert [ln["due"] for ln in q["lines"]] == [4334, 2167] and q["due"] == 6501
    assert q["balance_max"] == 3000 and q["member_balance"] == 3000
    assert q["points_earned"] == 8 and q["growth_earned"] == 85

    body = _order(store, member, "till-1-0001")
    settled = await client.post("/api/pos/orders", json=body, headers=admin)
    assert settled.status_code == 201, settled.text
    order = settled.json()
    assert order["due"] == 6501 and order["points_used"] == 500 and order["balance_fen"] == 2000
    assert [ln["points"] for ln in order["lines"]] == [333, 167]
    assert order["points_earned"] == 8 and order["growth_earned"] == 85 and order["amount"] == 8501
    assert [p["amount"] for p in order["payments"]] == [501, 6000]
    assert order["order_no"] == "pos:till-1-0001"
    assert await _balances(member) == (1000 - 500 + 8, 3000 - 2000, 85)

    again = await client.post("/api/pos/orders", json=body, headers=admin)
    assert again.status_code == 200 and again.json()["id"] == order["id"]
    assert await _balances(member) == (508, 1000, 85)
    reused = await client.post("/api/pos/orders", json={**body, "points": 0, "expect": None}, headers=admin)
    assert reused.status_code == 409 and error_of(reused)["code"] == "checkout.key_reused"

    read = await client.get(f"/api/pos/orders/{order['id']}", headers=admin)
    assert read.status_code == 200 and read.json() == order

    # one unit of A: 1/3 of each of its figures, floored
    one = {"items": [{"sku": "A", "quantity": 1}], "idempotency_key": "ret-1"}
    first = await client.post(f"/api/pos/orders/{order['id']}/returns", json=one, headers=admin)
    assert first.status_code == 201, first.text
    r = first.json()
    assert (r["gross"], r["points_back"], r["balance_back"], r["earned_back"], r["growth_back"], r["refund_due"]) == (
        3333, 111, 444, 1, 19, 1444,
    )  # fmt: skip
    assert r["whole"] is False and r["points_lost"] == 0
    assert await _balances(member) == (508 + 111 - 1, 1000 + 444, 85 - 19)
    repeat = await client.post(f"/api/pos/orders/{order['id']}/returns", json=one, headers=admin)
    assert repeat.status_code == 200 and repeat.json() == r
    assert await _balances(member) == (618, 1444, 66)

    too_many = {"items": [{"sku": "A", "quantity": 3}], "idempotency_key": "ret-2"}
    over = await client.post(f"/api/pos/orders/{order['id']}/returns", json=too_many, headers=admin)
    assert over.status_code == 422 and error_of(over)["code"] == "checkout.return_exceeds"

    # the rest: the remainders, so the whole order comes back exactly
    rest = {"items": [{"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 1}], "idempotency_key": "ret-3"}
    second = await client.post(f"/api/pos/orders/{order['id']}/returns", json=rest, headers=admin)
    assert second.status_code == 201, second.text
    r2 = second.json()
    assert (r2["points_back"], r2["balance_back"], r2["earned_back"], r2["growth_back"], r2["refund_due"]) == (
        222 + 167, 889 + 667, 4 + 3, 38 + 28, 2890 + 2167,
    )  # fmt: skip
    assert r2["whole"] is True
    assert await _balances(member) == (1000, 3000, 0)
    after = (await client.get(f"/api/pos/orders/{order['id']}", headers=admin)).json()
    assert [ln["returned"] for ln in after["lines"]] == [3, 1] and after["status"] == "returned"
    reverse = await client.post(f"/api/members/{member}/purchases/pos:till-1-0001/reverse", headers=admin)
    assert reverse.status_code == 409 and error_of(reverse)["code"] == "purchase.pos_order"
    nothing = await client.post(
        f"/api/pos/orders/{order['id']}/returns",
        json={"items": [{"sku": "B", "quantity": 1}], "idempotency_key": "ret-4"},
        headers=admin,
    )
    assert nothing.status_code == 422 and error_of(nothing)["code"] == "checkout.return_exceeds"
    assert await assert_lots_agree(member) == 1000
    await _ledgers_clean()


async def test_a_quote_without_member_and_an_order_paid_all_in_money(client, admin, demo):
    member = await _member(client, admin, points=0, balance=0)
    items = [{"sku": "X", "unit_price": 1999, "quantity": 2}]
    quote = await client.post("/api/pos/quote", json={"store_id": demo.store.id, "items": items}, headers=admin)
    assert quote.status_code == 200, quote.text
    assert quote.json()["due"] == 3998 and quote.json()["points_earned"] == 0
    body = {
        "store_id": demo.store.id,
        "member_id": member,
        "items": items,
        "idempotency_key": "cash-only",
        "payments": [{"method": "card", "amount": 3998}],
    }
    settled = await client.post("/api/pos/orders", json=body, headers=admin)
    assert settled.status_code == 201, settled.text
    assert settled.json()["points_earned"] == 3 and settled.json()["growth_earned"] == 39  # 3998 fen
    assert await _balances(member) == (3, 0, 39)


async def _error(response: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["code"] == code, error
    if field is not None:
        assert error.get("field") == field, error


async def test_bad_input_is_refused_and_writes_nothing(client, admin, demo):
    member = await _setup(client, admin)
    store = demo.store.id
    quote_body = {"store_id": store, "member_id": member, "items": ITEMS}

    async def quote(**change: Any) -> httpx.Response:
        return await client.post("/api/pos/quote", json={**quote_body, **change}, headers=admin)

    zero_price = [{**ITEMS[0], "unit_price": 0}]
    await _error(await quote(items=zero_price), 422, "validation.failed", "items.0.unit_price")
    negative = [{**ITEMS[0], "quantity": -1}]
    await _error(await quote(items=negative), 422, "validation.failed", "items.0.quantity")
    await _error(await quote(items=[]), 422, "validation.failed", "items")
    huge = [{**ITEMS[0], "unit_price": 10**12, "quantity": 2}]
    await _error(await quote(items=huge), 422, "checkout.amount_invalid", "items")
    await _error(await quote(points=680), 422, "checkout.points_over_cap", "points")
    await _error(await quote(points=15), 422, "checkout.points_invalid", "points")
    await _error(await quote(balance=3001), 422, "checkout.balance_insufficient", "balance")
    await _error(await quote(coupon_id=7), 404, "coupon.not_found", "coupon_id")  # none of this member's
    no_stylist = [ITEMS[0], {**ITEMS[1], "staff_id": 999_999}]
    await _error(await quote(items=no_stylist), 422, "checkout.staff_invalid", "items.1.staff_id")
    await _error(await quote(member_id=999_999), 404, "member.not_found")
    poor = await _member(client, admin, points=100, balance=0)
    await _error(await quote(member_id=poor, points=200), 422, "checkout.points_insufficient", "points")
    rich = await _member(client, admin, points=0, balance=100_000)
    await _error(await quote(member_id=rich, balance=13502), 422, "checkout.balance_over_due", "balance")

    other = await other_merchant()
    await _error(await quote(store_id=other.store.id), 422, "checkout.store_invalid", "store_id")
    other_owner = {"Authorization": (await _login_other(client))["Authorization"]}
    stranger = await new_member(client, other_owner)
    await _error(await quote(member_id=stranger), 404, "member.not_found")

    second_store = await add_store(client, admin, code="S002")
    cashier = await add_staff(client, admin, username="cashier-2", role="cashier", store_id=second_store)
    denied = await client.post("/api/pos/quote", json=quote_body, headers=cashier)
    await _error(denied, 403, "auth.store_scope", "store_id")
    marketer = await add_staff(client, admin, username="marketer-1", role="marketer")
    assert (await client.post("/api/pos/quote", json=quote_body, headers=marketer)).status_code == 403

    order = _order(store, member, "bad-1")

    async def settle(**change: Any) -> httpx.Response:
        return await client.post("/api/pos/orders", json={**order, **change}, headers=admin)

    await _error(await settle(payments=[{"method": "cash", "amount": 6500}]), 422, "checkout.payments_mismatch")
    await _error(await settle(payments=[{"method": "bitcoin", "amount": 6501}]), 422, "validation.failed")
    await _error(await settle(expect={"due": 6000}), 409, "checkout.changed")
    await _error(await settle(points=680, expect=None), 422, "checkout.points_over_cap", "points")
    await _error(await settle(coupon_id=3), 404, "coupon.not_found", "coupon_id")
    await _error(await settle(idempotency_key=""), 422, "validation.failed", "idempotency_key")
    assert (await client.get("/api/pos/orders/999999", headers=admin)).status_code == 404
    assert await _balances(member) == (1000, 3000, 0)

    # spent meanwhile: the quote's figures no longer hold -> 409 checkout.changed, nothing written
    spend = {"points": 600, "reason": "gift", "idempotency_key": "meanwhile"}
    assert (await client.post(f"/api/members/{member}/points/spend", json=spend, headers=admin)).status_code == 200
    changed = await settle()
    await _error(changed, 409, "checkout.changed")
    assert error_of(changed)["reason"] == "points"
    assert await _balances(member) == (400, 3000, 0)
    await _ledgers_clean()


async def _login_other(client: httpx.AsyncClient) -> dict[str, str]:
    return await login(client, "other-owner", OTHER_OWNER_PASSWORD)


async def test_a_return_never_resurrects_expired_points_and_refills_balance_lots(client, app, demo):
    owner = await timeless_owner(app, demo)
    start = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)
    with pinned(start):
        member = await _member(client, owner, points=300, balance=0)
        for key, kind, delta in (("r", "recharge", 1000), ("g", "gift", 500)):
            body = {"delta": delta, "kind": kind, "reason": "储值", "idempotency_key": f"{key}-{member}"}
            assert (await client.post(f"/api/members/{member}/balance", json=body, headers=owner)).status_code == 200
        items = [{"sku": "X", "unit_price": 1000, "quantity": 2}]
        body = {
            "store_id": demo.store.id,
            "member_id": member,
            "items": items,
            "points": 100,  # 1000 fen: the 50 % cap of 2000
            "balance": 1000,
            "idempotency_key": "exp-1",
            "payments": [],
        }
        settled = await client.post("/api/pos/orders", json=body, headers=owner)
        assert settled.status_code == 201, settled.text
        order = settled.json()
        assert order["due"] == 0 and order["amount"] == 1000 and order["points_earned"] == 1  # earns on 1000 fen
        lot = await BalanceLot.get(member_id=member, source="recharge")
        assert lot.principal_remaining == 0  # oldest lot first: the recharge, then the gift's bonus
    # two years on: the spent points' lot has expired (rolling year); the stored value never expires
    with pinned(start + timedelta(days=730)):
        ret = await client.post(
            f"/api/pos/orders/{order['id']}/returns",
            json={"items": [{"sku": "X", "quantity": 2}], "idempotency_key": "exp-r"},
            headers=owner,
        )
        assert ret.status_code == 201, ret.text
        r = ret.json()
        assert (r["points_back"], r["points_lost"], r["balance_back"], r["refund_due"], r["whole"]) == (
            0, 100, 1000, 0, True,
        )  # fmt: skip
        lot = await BalanceLot.get(member_id=member, source="recharge")
        assert lot.principal_remaining == 1000
        assert (await BalanceAccount.get(member_id=member)).balance == 1500
        # the earned point is taken back (it was still held: the expiry job has not run)
        assert r["earned_back"] == 1
    await _ledgers_clean()


async def test_partial_returns_walk_the_spent_lots_once(client, app, demo):
    """200 points spent from an old lot (100, expired by the returns) and a newer one (100, still valid): the
    first unit's 100 points fall on the expired lot (lost), the second unit's on the valid lot (back)."""
    owner = await timeless_owner(app, demo)
    start = datetime(2026, 1, 10, 4, 0, tzinfo=UTC)
    with pinned(start):
        member = await _member(client, owner, points=100, balance=0)
    with pinned(start + timedelta(days=200)):
        await adjust(client, owner, member, 100, "newer-lot")
        body = {
            "store_id": demo.store.id,
            "member_id": member,
            "items": [{"sku": "X", "unit_price": 2000, "quantity": 2}],
            "points": 200,  # 2000 fen: the 50 % cap of 4000
            "idempotency_key": "two-lots",
            "payments": [{"method": "cash", "amount": 2000}],
        }
        settled = await client.post("/api/pos/orders", json=body, headers=owner)
        assert settled.status_code == 201, settled.text
        order = settled.json()
        assert order["points_earned"] == 2  # on 2000 fen
    with pinned(start + timedelta(days=400)):
        backs = []
        for n in range(2):
            ret = await client.post(
                f"/api/pos/orders/{order['id']}/returns",
                json={"items": [{"sku": "X", "quantity": 1}], "idempotency_key": f"unit-{n}"},
                headers=owner,
            )
            assert ret.status_code == 201, ret.text
            r = ret.json()
            backs.append((r["points_back"], r["points_lost"], r["earned_back"], r["refund_due"]))
        assert backs == [(0, 100, 1, 1000), (100, 0, 1, 1000)]
        assert (await PointsAccount.get(member_id=member)).balance == 200 - 200 + 2 - 1 - 1 + 100
    await _ledgers_clean()


async def test_a_stores_pos_key_settles_and_returns_and_is_recorded_as_the_key(client, admin, demo):
    await add_tier(client, admin, "normal", 0, 0, discount_permille=900)
    member = (await add_member(client, admin, phone="13800000031", store_id=demo.store.id))["id"]  # the key's store
    await adjust(client, admin, member, 1000, f"seed-points-{member}")
    body = {"delta": 3000, "kind": "recharge", "reason": "储值", "idempotency_key": f"seed-bal-{member}"}
    assert (await client.post(f"/api/members/{member}/balance", json=body, headers=admin)).status_code == 200
    created = await client.post(f"/api/stores/{demo.store.id}/api-keys", json={"name": "till 1"}, headers=admin)
    assert created.status_code == 201, created.text
    till = {"Authorization": f"ApiKey {created.json()['key']}"}
    settled = await client.post("/api/pos/orders", json=_order(demo.store.id, member, "key-1"), headers=till)
    assert settled.status_code == 201, settled.text
    order = settled.json()
    assert (order["staff_id"], order["api_key_id"]) == (None, created.json()["id"])
    assert (await client.get(f"/api/pos/orders/{order['id']}", headers=till)).json()["due"] == 6501
    back = await client.post(
        f"/api/pos/orders/{order['id']}/returns",
        json={"items": [{"sku": "B", "quantity": 1}], "idempotency_key": "key-r1"},
        headers=till,
    )
    assert back.status_code == 201, back.text
    other_store = await add_store(client, admin, code="K2")
    elsewhere = await client.post("/api/pos/orders", json=_order(other_store, member, "key-2"), headers=till)
    assert elsewhere.status_code == 403, elsewhere.text  # a key sells in its own store only
    await _ledgers_clean()


async def test_points_spread_over_more_lots_than_one_read_holds_are_taken_oldest_first(client, admin, demo):
    """70 one-point lots: more than the batched debit reads (32 expiring), so the settle takes them through the
    ledger's ORM path; the same rows either way: every lot used once, in order, the balance and lots agree."""
    member = await new_member(client, admin)
    for n in range(70):
        await adjust(client, admin, member, 1, f"one-{n}")
    body = {
        "store_id": demo.store.id,
        "member_id": member,
        "items": [{"sku": "S", "unit_price": 2000, "quantity": 1}],
        "points": 70,
        "idempotency_key": "many-lots",
        "payments": [{"method": "cash", "amount": 1300}],
        "expect": {"due": 1300, "points": 70},
    }
    settled = await client.post("/api/pos/orders", json=body, headers=admin)
    assert settled.status_code == 201, settled.text
    entry = await PointsEntry.get(idempotency_key=f"pos-points:{settled.json()['id']}")
    uses = await PointsLotUse.filter(debit_entry_id=entry.id).order_by("lot_id")
    assert [u.amount for u in uses] == [1] * 70
    assert len({u.lot_id for u in uses}) == 70
    earned = settled.json()["points_earned"]
    assert (await PointsAccount.get(member_id=member)).balance == earned == await assert_lots_agree(member)
    await _ledgers_clean()
