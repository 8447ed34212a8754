"""GET /api/pos/member: the member at the till by dynamic QR, card code, encrypted card code or phone."""

from __future__ import annotations

from datetime import datetime, timedelta

from models.kernel import clock
from models.members.members import Member
from models.plans.terms import MemberPlan, PaidPlan
from tests.cards.helpers import claim, encrypt_code, put_template
from tests.conftest import login
from tests.helpers import add_member, add_staff, add_store, error_of, other_merchant
from tests.pos.test_api_keys import api_key, new_key

EMU = "/_emulator"


async def mp_qr(client, openid: str, store_code: str) -> tuple[int, str]:
    code = (await client.post(f"{EMU}/control/mp-code", json={"openid": openid})).json()["code"]
    login_body = (await client.post("/api/mp/login", json={"code": code, "store_code": store_code})).json()
    headers = {"Authorization": f"Bearer {login_body['access_token']}"}
    qr = await client.get("/api/mp/me/qr", headers=headers)
    assert qr.status_code == 200, qr.text
    return login_body["member_id"], qr.json()["token"]


async def lookup(client, headers, **params):
    return await client.get("/api/pos/member", params=params, headers=headers)


async def test_by_phone_with_tier_points_balance(client, admin, demo):
    tier = {"code": "silver", "name": "银卡", "rank": 0, "threshold": 0, "discount_permille": 950}
    tier["benefits"] = {"birthday_gift_points": 100, "free_items": ["coffee"], "priority_support": True}
    assert (await client.post("/api/tiers", json=tier, headers=admin)).status_code == 201
    member = await add_member(client, admin, name="Han Meimei", phone="13800001234", store_id=demo.store.id)
    change = {"delta": 300, "reason": "x", "idempotency_key": "p1"}
    assert (await client.post(f"/api/members/{member['id']}/points", json=change, headers=admin)).status_code == 200
    recharge = {"delta": 5000, "kind": "recharge", "reason": "储值", "idempotency_key": "b1"}
    assert (await client.post(f"/api/members/{member['id']}/balance", json=recharge, headers=admin)).status_code == 200
    key = (await new_key(client, admin, demo.store.id))["key"]
    found = await lookup(client, api_key(key), phone="13800001234")
    assert found.status_code == 200, found.text
    body = found.json()
    assert (body["member_id"], body["name"], body["phone_masked"]) == (member["id"], "Han Meimei", "138****1234")
    assert (body["points"], body["balance"], body["card_code"], body["plan"], body["coupons"]) == (
        300,
        5000,
        None,
        None,
        [],
    )
    assert body["tier"]["name"] == "银卡" and body["tier"]["discount_permille"] == 950
    assert body["tier"]["benefits"]["free_items"] == ["coffee"]
    assert "13800001234" not in found.text
    unknown = await lookup(client, admin, phone="13900000000")
    assert (unknown.status_code, error_of(unknown)["code"]) == (404, "member.not_found")


async def test_exactly_one_way(client, admin, demo):
    missing = await lookup(client, admin)
    assert (missing.status_code, error_of(missing)["code"]) == (422, "pos.lookup_missing")
    both = await lookup(client, admin, phone="13800001234", card_code="123")
    assert (both.status_code, error_of(both)["code"]) == (422, "pos.lookup_ambiguous")
    unknown_param = await lookup(client, admin, member_id="1")
    assert unknown_param.status_code == 422
    too_long = await lookup(client, admin, qr="H" * 65)
    assert too_long.status_code == 422
    marketer = await add_staff(client, admin, username="mkt1", role="marketer")
    assert (await lookup(client, marketer, phone="1")).status_code == 403
    assert (await lookup(client, {}, phone="1")).status_code == 401


async def test_by_dynamic_qr_expiry_forgery_and_merchant(client, admin, demo, pinned):
    member_id, token = await mp_qr(client, "mp_till", demo.store.code)
    key = (await new_key(client, admin, demo.store.id))["key"]
    cashier = await add_staff(client, admin, username="cash1", role="cashier", store_id=demo.store.id)
    for headers in (api_key(key), cashier, admin):
        found = await lookup(client, headers, qr=token)
        assert (found.status_code, found.json()["member_id"]) == (200, member_id), found.text
    # shown in person at another store of the chain: found, as a visiting member with a till ticket
    other_store_key = (await new_key(client, admin, await add_store(client, admin, code="S901")))["key"]
    visiting = (await lookup(client, api_key(other_store_key), qr=token)).json()
    assert (visiting["member_id"], visiting["visiting"]) == (member_id, True)
    assert visiting["member_ticket"].startswith("HYT")
    at_home = (await lookup(client, api_key(key), qr=token)).json()
    assert (at_home["visiting"], at_home["member_ticket"]) == (False, None)
    theirs = await other_merchant()
    owner = await login(client, "other-owner", "other-owner-password-1")
    foreign = await lookup(client, owner, qr=token)
    assert (foreign.status_code, error_of(foreign)["code"]) == (404, "member.not_found")
    assert theirs.store.id != demo.store.id

    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (forged, "garbage"):
        response = await lookup(client, api_key(key), qr=bad)
        assert (response.status_code, error_of(response)["code"]) == (401, "member_qr.invalid")
    pinned[0] += timedelta(seconds=59)
    assert (await lookup(client, api_key(key), qr=token)).status_code == 200
    pinned[0] += timedelta(seconds=2)
    expired = await lookup(client, api_key(key), qr=token)
    assert (expired.status_code, error_of(expired)["code"]) == (401, "member_qr.invalid")


async def test_by_card_code_and_encrypted_code(client, admin, demo):
    card_id = (await put_template(client, admin))["card_id"]
    code = await claim(client, openid="o_card", card_id=card_id)
    member = await Member.get(openid="o_card")
    key = (await new_key(client, admin, demo.store.id))["key"]
    by_code = await lookup(client, api_key(key), card_code=code)
    assert by_code.status_code == 200, by_code.text
    assert (by_code.json()["member_id"], by_code.json()["card_code"]) == (member.id, code)
    encrypted = await encrypt_code(client, card_id=card_id, code=code)
    by_encrypted = await lookup(client, api_key(key), encrypted_code=encrypted)
    assert by_encrypted.status_code == 200, by_encrypted.text
    assert by_encrypted.json()["member_id"] == member.id
    calls = (await client.get(f"{EMU}/control/calls", params={"path": "/card/code/decrypt"})).json()["calls"]
    assert len(calls) == 1
    for params in ({"card_code": "999999999999"}, {"encrypted_code": "AAAA"}):
        unknown = await lookup(client, api_key(key), **params)
        assert (unknown.status_code, error_of(unknown)["code"]) == (404, "member.not_found"), params
    other_key = (await new_key(client, admin, await add_store(client, admin, code="S902")))["key"]
    visiting = await lookup(client, api_key(other_key), card_code=code)  # the card shown at another store
    assert (visiting.status_code, visiting.json()["visiting"]) == (200, True), visiting.text


async def test_a_running_plan_is_shown(client, admin, demo):
    member = await add_member(client, admin, name="Plan Holder", phone="13800005555", store_id=demo.store.id)
    plan = await PaidPlan.create(
        merchant_id=demo.merchant.id, code="vip", name="VIP 月卡", period="month", price=3000, benefits={"free": 1}
    )
    now = clock.now()
    ends = now + timedelta(days=20)
    await MemberPlan.create(
        merchant_id=demo.merchant.id, member_id=member["id"], plan_id=plan.id, order_id=1, starts_at=now, ends_at=ends
    )
    body = (await lookup(client, admin, phone="13800005555")).json()
    assert (body["plan"]["id"], body["plan"]["name"], body["plan"]["benefits"]) == (plan.id, "VIP 月卡", {"free": 1})
    assert abs(datetime.fromisoformat(body["plan"]["ends_at"]) - ends) < timedelta(seconds=1)
