"""Packages over HTTP: selling with stored value or cash, visits down to zero, undo, expiry, pro-rata refunds."""

from __future__ import annotations

import pytest

from jobs.context import JobContext
from models.kernel import clock
from models.ledger.balance_lots import BalanceLot, BalanceLotUse
from models.ledger.books import BalanceAccount, BalanceEntry
from models.packages.tables import MemberPackage, PackageUse
from models.packages.uses import expire_due_packages
from server.wiring import SCHEDULED_JOBS
from tests.conftest import login
from tests.helpers import OTHER_OWNER_PASSWORD, add_member, add_staff, add_store, error_of, other_merchant
from tests.packages.helpers import member_with_balance, sell, template, use
from tests.payments.wallet_helpers import assert_consistent
from tests.tiers.helpers import lasting, member_token, pin


@pytest.fixture(autouse=True)
def _unpin():
    yield
    clock.set_clock(None)


async def test_sell_with_stored_value_debits_the_ledger_and_lots(client, admin, demo):
    tpl = await template(client, admin)
    member_id = await member_with_balance(client, admin, merchant_id=demo.merchant.id, phone="13900000101", fen=50_000)
    response = await sell(
        client, admin, member_id, tpl["id"], key="sale-1", payments=[{"method": "balance", "amount": 30_000}]
    )
    assert response.status_code == 201, response.text
    package = response.json()
    assert (package["uses_total"], package["uses_left"], package["price_paid"], package["balance_paid"]) == (
        10,
        10,
        30_000,
        30_000,
    )
    assert package["status"] == "active" and package["valid_until"] is not None
    entry = await BalanceEntry.get(idempotency_key="package:sale-1")
    assert (entry.delta, entry.kind, entry.ref_type, entry.ref_id) == (
        -30_000,
        "pay",
        "member_package",
        str(package["id"]),
    )
    assert (await BalanceAccount.get(member_id=member_id)).balance == 20_000
    lot = await BalanceLot.get(member_id=member_id)
    assert lot.principal_remaining == 20_000
    assert [(u.principal, u.bonus) for u in await BalanceLotUse.filter(debit_entry_id=entry.id)] == [(30_000, 0)]
    again = await sell(
        client, admin, member_id, tpl["id"], key="sale-1", payments=[{"method": "balance", "amount": 30_000}]
    )
    assert again.status_code == 200 and again.json()["id"] == package["id"]
    assert (await BalanceAccount.get(member_id=member_id)).balance == 20_000
    assert await MemberPackage.filter(member_id=member_id).count() == 1


async def test_sell_with_cash_and_bad_payments(client, admin, demo):
    tpl = await template(client, admin, price=10_000)
    member_id = await member_with_balance(client, admin, merchant_id=demo.merchant.id, phone="13900000102", fen=500)
    short = await sell(client, admin, member_id, tpl["id"], key="s1", payments=[{"method": "cash", "amount": 9_999}])
    assert short.status_code == 422 and error_of(short)["code"] == "package.payments_mismatch"
    poor = await sell(client, admin, member_id, tpl["id"], key="s2", payments=[{"method": "balance", "amount": 10_000}])
    assert poor.status_code == 409 and error_of(poor)["code"] == "balance.insufficient"
    assert await MemberPackage.filter(member_id=member_id).count() == 0
    bad = await sell(client, admin, member_id, tpl["id"], key="s3", payments=[{"method": "bitcoin", "amount": 10_000}])
    assert bad.status_code == 422
    mixed = [{"method": "balance", "amount": 500}, {"method": "cash", "amount": 9_500}]
    response = await sell(client, admin, member_id, tpl["id"], key="s4", payments=mixed)
    assert response.status_code == 201, response.text
    assert response.json()["payments"] == mixed and response.json()["balance_paid"] == 500
    reused = await sell(client, admin, member_id, tpl["id"] + 1000, key="s4", payments=mixed)
    assert reused.status_code == 409 and error_of(reused)["code"] == "idempotency.key_reused"
    unknown = await sell(client, admin, member_id, tpl["id"] + 1000, key="s6", payments=mixed)
    assert unknown.status_code == 404 and error_of(unknown)["code"] == "package.template_not_found"
    missing = await sell(client, admin, 999_999, tpl["id"], key="s5", payments=[{"method": "cash", "amount": 10_000}])
    assert missing.status_code == 404


async def test_uses_count_down_to_zero_then_409_and_a_repeat_visit_is_the_first_answer(client, admin, demo):
    tpl = await template(client, admin, uses=3, price=9_000)
    member_id = (await add_member(client, admin, phone="13900000103"))["id"]
    package_id = (
        await sell(client, admin, member_id, tpl["id"], key="k", payments=[{"method": "cash", "amount": 9_000}])
    ).json()["id"]
    first = await use(client, admin, member_id, package_id, "visit-1")
    assert first.status_code == 201 and first.json()["package"]["uses_left"] == 2
    repeat = await use(client, admin, member_id, package_id, "visit-1")
    assert repeat.status_code == 200 and repeat.json()["use"]["id"] == first.json()["use"]["id"]
    assert repeat.json()["package"]["uses_left"] == 2
    assert (await use(client, admin, member_id, package_id, "visit-2")).status_code == 201
    last = await use(client, admin, member_id, package_id, "visit-3")
    assert last.json()["package"]["uses_left"] == 0 and last.json()["package"]["status"] == "used_up"
    empty = await use(client, admin, member_id, package_id, "visit-4")
    assert empty.status_code == 409 and error_of(empty)["code"] == "package.used_up"
    # undo a visit: the use comes back, and a repeat of the undo changes nothing
    use_id = last.json()["use"]["id"]
    undo = await client.post(f"/api/members/{member_id}/packages/{package_id}/uses/{use_id}/reverse", headers=admin)
    assert undo.status_code == 200 and undo.json()["package"]["uses_left"] == 1
    assert undo.json()["package"]["status"] == "active" and undo.json()["use"]["reversed_at"] is not None
    twice = await client.post(f"/api/members/{member_id}/packages/{package_id}/uses/{use_id}/reverse", headers=admin)
    assert twice.status_code == 200 and twice.json()["package"]["uses_left"] == 1
    assert (await use(client, admin, member_id, package_id, "visit-5")).status_code == 201
    nowhere = await client.post(f"/api/members/{member_id}/packages/{package_id}/uses/999999/reverse", headers=admin)
    assert nowhere.status_code == 404


async def test_the_expiry_job_expires_packages_past_their_validity(app, client, admin, demo):
    admin = lasting(app, admin)
    pin("2027-03-01 10:00")
    tpl = await template(client, admin, uses=5, price=5_000, valid_days=30)
    member_id = (await add_member(client, admin, phone="13900000104"))["id"]
    sold = await sell(client, admin, member_id, tpl["id"], key="e", payments=[{"method": "card", "amount": 5_000}])
    assert sold.json()["valid_until"] == "2027-03-30T16:00:00Z"  # the end of the 30th local day
    pin("2027-03-31 00:00")
    late = await use(client, admin, member_id, sold.json()["id"], "v")
    assert late.status_code == 409 and error_of(late)["code"] == "package.expired"
    ctx = JobContext(settings=app.ctx.settings, redis=None, keys=None, gateway=None)
    assert await SCHEDULED_JOBS["packages.expire"].func(ctx) == "1 packages expired"
    assert await expire_due_packages(now=clock.now()) == 0
    assert (await MemberPackage.get(id=sold.json()["id"])).status == "expired"
    mine = await client.get(
        "/api/mp/me/packages", headers=member_token(app, member_id=member_id, merchant_id=demo.merchant.id)
    )
    assert mine.status_code == 200
    assert [(p["uses_left"], p["status"]) for p in mine.json()["items"]] == [(5, "expired")]


async def test_a_refund_gives_back_the_unused_share_to_the_same_lots_once(client, admin, demo):
    tpl = await template(client, admin, uses=7, price=10_000)
    member_id = await member_with_balance(client, admin, merchant_id=demo.merchant.id, phone="13900000105", fen=6_000)
    payments = [{"method": "balance", "amount": 6_000}, {"method": "cash", "amount": 4_000}]
    package_id = (await sell(client, admin, member_id, tpl["id"], key="rf", payments=payments)).json()["id"]
    for n in range(3):
        assert (await use(client, admin, member_id, package_id, f"v{n}")).status_code == 201
    url = f"/api/members/{member_id}/packages/{package_id}/refund"
    response = await client.post(url, json={"idempotency_key": "refund-1"}, headers=admin)
    assert response.status_code == 200, response.text
    # 10_000 * 4 // 7 = 5_714 fen; the stored-value share 5_714 * 6_000 // 10_000 = 3_428, the rest 2_286 in cash
    assert (response.json()["refund_amount"], response.json()["refund_balance"], response.json()["status"]) == (
        5_714,
        3_428,
        "refunded",
    )
    assert (await BalanceAccount.get(member_id=member_id)).balance == 3_428
    lot = await BalanceLot.get(member_id=member_id)
    assert (lot.principal_remaining, lot.status) == (3_428, "open")  # restored to the recharge lot
    assert await assert_consistent(member_id) == (3_428, 3_428, 0)
    again = await client.post(url, json={"idempotency_key": "refund-1"}, headers=admin)
    assert again.status_code == 200 and again.json()["refund_amount"] == 5_714
    other = await client.post(url, json={"idempotency_key": "refund-2"}, headers=admin)
    assert other.status_code == 409 and error_of(other)["code"] == "package.refunded"
    assert (await BalanceAccount.get(member_id=member_id)).balance == 3_428
    after = await use(client, admin, member_id, package_id, "late")
    assert after.status_code == 409 and error_of(after)["code"] == "package.refunded"


async def test_a_time_pass_records_one_visit_a_day_and_refunds_by_days(app, client, admin, demo):
    admin = lasting(app, admin)
    pin("2027-05-01 09:00")
    tpl = await template(client, admin, name="月卡", kind="time", uses=None, days=30, valid_days=None, price=3_000)
    member_id = (await add_member(client, admin, phone="13900000106"))["id"]
    package_id = (
        await sell(client, admin, member_id, tpl["id"], key="t", payments=[{"method": "wechat", "amount": 3_000}])
    ).json()["id"]
    assert (await use(client, admin, member_id, package_id, "d1")).status_code == 201
    same_day = await use(client, admin, member_id, package_id, "d1-again")
    assert same_day.status_code == 409 and error_of(same_day)["code"] == "package.used_today"
    pin("2027-05-02 09:00")
    second = await use(client, admin, member_id, package_id, "d2")
    assert second.status_code == 201 and second.json()["package"]["uses_count"] == 2
    pin("2027-05-21 12:00")  # days 21..30 left: 10 of 30
    refund = await client.post(
        f"/api/members/{member_id}/packages/{package_id}/refund", json={"idempotency_key": "r"}, headers=admin
    )
    assert refund.status_code == 200 and refund.json()["refund_amount"] == 1_000
    assert await PackageUse.filter(member_package_id=package_id).count() == 2


async def test_templates_are_listed_patched_and_bad_ones_refused(client, admin, demo):
    tpl = await template(client, admin)
    assert (
        await client.post("/api/package-templates", json={"name": "x", "kind": "uses", "price": 1}, headers=admin)
    ).status_code == 422
    bad_time = {"name": "x", "kind": "time", "price": 1, "days": 3, "valid_days": 3}
    assert (await client.post("/api/package-templates", json=bad_time, headers=admin)).status_code == 422
    neg = {"name": "x", "kind": "uses", "uses": 2, "price": -1}
    assert (await client.post("/api/package-templates", json=neg, headers=admin)).status_code == 422
    unknown_store = {"name": "x", "kind": "uses", "uses": 2, "price": 1, "store_ids": [99999]}
    assert (
        error_of(await client.post("/api/package-templates", json=unknown_store, headers=admin))["code"]
        == "package.store_unknown"
    )
    patched = await client.patch(
        f"/api/package-templates/{tpl['id']}", json={"status": "retired", "price": 1}, headers=admin
    )
    assert patched.status_code == 200 and (patched.json()["status"], patched.json()["price"]) == ("retired", 1)
    listed = await client.get("/api/package-templates?status=retired", headers=admin)
    assert [t["id"] for t in listed.json()["items"]] == [tpl["id"]]
    member_id = (await add_member(client, admin, phone="13900000107"))["id"]
    retired = await sell(client, admin, member_id, tpl["id"], key="x", payments=[{"method": "cash", "amount": 1}])
    assert retired.status_code == 409 and error_of(retired)["code"] == "package.template_retired"


async def test_another_merchants_templates_members_and_packages_are_404(client, admin, demo):
    tpl = await template(client, admin, price=100)
    member_id = (await add_member(client, admin, phone="13900000108"))["id"]
    package_id = (
        await sell(client, admin, member_id, tpl["id"], key="m", payments=[{"method": "cash", "amount": 100}])
    ).json()["id"]
    other = await other_merchant()
    theirs = await login(client, other.admin_username, OTHER_OWNER_PASSWORD)
    assert (
        await client.patch(f"/api/package-templates/{tpl['id']}", json={"price": 5}, headers=theirs)
    ).status_code == 404
    assert (
        await sell(client, theirs, member_id, tpl["id"], key="m2", payments=[{"method": "cash", "amount": 100}])
    ).status_code == 404
    assert (await use(client, theirs, member_id, package_id, "v")).status_code == 404
    assert (await client.get(f"/api/members/{member_id}/packages", headers=theirs)).status_code == 404
    refund = await client.post(
        f"/api/members/{member_id}/packages/{package_id}/refund", json={"idempotency_key": "r"}, headers=theirs
    )
    assert refund.status_code == 404
    assert (await client.get("/api/package-templates", headers=theirs)).json()["items"] == []


async def test_the_member_detail_lists_active_packages(client, admin, demo):
    tpl = await template(client, admin, uses=4, price=400)
    member_id = (await add_member(client, admin, phone="13900000109"))["id"]
    sold = await sell(client, admin, member_id, tpl["id"], key="p", payments=[{"method": "other", "amount": 400}])
    assert (await use(client, admin, member_id, sold.json()["id"], "v")).status_code == 201
    detail = await client.get(f"/api/members/{member_id}", headers=admin)
    assert detail.status_code == 200
    assert [(p["id"], p["uses_total"], p["uses_left"]) for p in detail.json()["packages"]] == [
        (sold.json()["id"], 4, 3)
    ]


async def test_bad_input_is_a_4xx_and_writes_nothing(client, admin, demo):
    tpl = await template(client, admin, price=200)
    member_id = (await add_member(client, admin, phone="13900000110"))["id"]
    url = f"/api/package-templates/{tpl['id']}"
    for patch in ({"name": None}, {"store_ids": None}, {"price": None}):
        assert (await client.patch(url, json=patch, headers=admin)).status_code == 200
    assert (await client.patch(url, json={"uses": None}, headers=admin)).status_code == 422
    assert (await client.patch(url, json={"kind": "time"}, headers=admin)).status_code == 422
    two = [{"method": "balance", "amount": 100}, {"method": "balance", "amount": 100}]
    zero = [{"method": "cash", "amount": 0}, {"method": "cash", "amount": 200}]
    for payments in (two, zero):
        assert (await sell(client, admin, member_id, tpl["id"], key="b", payments=payments)).status_code == 422
    body = {"template_id": tpl["id"], "idempotency_key": "b", "payments": [{"method": "cash", "amount": 200}]}
    elsewhere = await client.post(
        f"/api/members/{member_id}/packages", json={**body, "store_id": 99_999}, headers=admin
    )
    assert elsewhere.status_code == 422 and error_of(elsewhere)["code"] == "package.store_unknown"
    assert await MemberPackage.filter(member_id=member_id).count() == 0
    assert (await client.get(f"/api/members/{member_id}/packages/1/uses", headers=admin)).status_code in (404, 405)
    empty_key = await client.post(
        f"/api/members/{member_id}/packages/1/uses", json={"idempotency_key": ""}, headers=admin
    )
    assert empty_key.status_code == 422
    assert (await client.get("/api/package-templates", headers=admin)).json()["items"][0]["name"] == "10 haircuts"


async def test_a_cashier_sells_and_uses_in_their_own_store_only(client, admin, demo):
    other_store = await add_store(client, admin, code="S009")
    tpl = await template(client, admin, uses=2, price=100, store_ids=[demo.store.id])
    cashier = await add_staff(client, admin, username="pkg-cashier", role="cashier", store_id=demo.store.id)
    member_id = (await add_member(client, admin, phone="13900000111", store_id=demo.store.id))["id"]
    body = {"template_id": tpl["id"], "idempotency_key": "c1", "payments": [{"method": "cash", "amount": 100}]}
    there = await client.post(
        f"/api/members/{member_id}/packages", json={**body, "store_id": other_store}, headers=cashier
    )
    assert there.status_code == 403 and error_of(there)["code"] == "auth.store_scope"
    sold = await client.post(f"/api/members/{member_id}/packages", json=body, headers=cashier)
    assert sold.status_code == 201 and sold.json()["store_id"] == demo.store.id
    package_id = sold.json()["id"]
    uses_url = f"/api/members/{member_id}/packages/{package_id}/uses"
    outside = await client.post(uses_url, json={"idempotency_key": "v0", "store_id": other_store}, headers=admin)
    assert outside.status_code == 422 and error_of(outside)["code"] == "package.store_not_covered"
    assert (await client.post(uses_url, json={"idempotency_key": "v1"}, headers=cashier)).status_code == 201
    refund = await client.post(
        f"/api/members/{member_id}/packages/{package_id}/refund", json={"idempotency_key": "r"}, headers=cashier
    )
    assert refund.status_code == 403


async def test_a_stores_pos_key_records_a_visit_without_naming_a_staff_member(client, admin, demo):
    tpl = await template(client, admin, uses=2, price=100)
    member_id = (await add_member(client, admin, phone="13900000112", store_id=demo.store.id))["id"]
    body = {"template_id": tpl["id"], "idempotency_key": "k1", "payments": [{"method": "cash", "amount": 100}]}
    package_id = (await client.post(f"/api/members/{member_id}/packages", json=body, headers=admin)).json()["id"]
    created = await client.post(f"/api/stores/{demo.store.id}/api-keys", json={"name": "till"}, headers=admin)
    till = {"Authorization": f"ApiKey {created.json()['key']}"}
    visit = await use(client, till, member_id, package_id, "visit-1")
    assert visit.status_code == 201, visit.text
    assert visit.json()["use"]["staff_id"] is None and visit.json()["package"]["uses_left"] == 1
    sale = await client.post(f"/api/members/{member_id}/packages", json={**body, "idempotency_key": "k2"}, headers=till)
    assert sale.status_code == 403  # a key records visits; selling stays with staff
