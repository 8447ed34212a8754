"""Issuing coupons over HTTP: staff grants, self-claims, limits, stock, channels, lists; expiry and reminders."""

from __future__ import annotations

from datetime import timedelta

import pytest

from models.coupons.expiry import expire_due, send_reminders
from models.coupons.tables import Coupon, CouponTemplate
from models.kernel import clock
from models.kernel.outbox import OutboxMessage
from tests.coupons.helpers import add_template, member_id
from tests.helpers import add_staff, error_of
from tests.tiers.helpers import lasting, member_token, pin


@pytest.fixture(autouse=True)
def _unpin():
    yield
    clock.set_clock(None)


async def test_staff_grant_is_idempotent_and_limited(client, admin):
    template = await add_template(client, admin, total_stock=2)
    member = await member_id(client, admin, "13900000201")
    path = f"/api/members/{member}/coupons"
    first = await client.post(path, json={"template_id": template["id"], "idempotency_key": "a"}, headers=admin)
    assert first.status_code == 201, first.text
    coupon = first.json()
    assert coupon["status"] == "usable" and coupon["channel"] == "staff" and coupon["name"] == "100-20"
    again = await client.post(path, json={"template_id": template["id"], "idempotency_key": "a"}, headers=admin)
    assert again.status_code == 200 and again.json()["id"] == coupon["id"]
    second = await client.post(path, json={"template_id": template["id"], "idempotency_key": "b"}, headers=admin)
    assert second.status_code == 409 and error_of(second)["code"] == "coupon.limit_reached"
    other = await member_id(client, admin, "13900000202")
    third = await member_id(client, admin, "13900000203")
    body = {"template_id": template["id"], "idempotency_key": "c"}
    assert (await client.post(f"/api/members/{other}/coupons", json=body, headers=admin)).status_code == 201
    out = await client.post(f"/api/members/{third}/coupons", json=body | {"idempotency_key": "d"}, headers=admin)
    assert out.status_code == 409 and error_of(out)["code"] == "coupon.out_of_stock"
    assert (await CouponTemplate.get(id=template["id"])).issued == 2
    assert await Coupon.filter(template_id=template["id"]).count() == 2


async def test_bad_grants(client, admin, demo):
    template = await add_template(client, admin, channels=["self"])
    member = await member_id(client, admin, "13900000204")
    path = f"/api/members/{member}/coupons"
    closed = await client.post(path, json={"template_id": template["id"], "idempotency_key": "a"}, headers=admin)
    assert closed.status_code == 403 and error_of(closed)["code"] == "coupon.channel_closed"
    missing = await client.post(path, json={"template_id": 999999, "idempotency_key": "a"}, headers=admin)
    assert missing.status_code == 404
    assert (await client.post(path, json={"template_id": template["id"]}, headers=admin)).status_code == 422
    nobody = await client.post(
        "/api/members/999999/coupons", json={"template_id": 1, "idempotency_key": "a"}, headers=admin
    )
    assert nobody.status_code == 404
    cashier = await add_staff(client, admin, username="cashier2", role="cashier", store_id=demo.store.id)
    staff_template = await add_template(client, admin, name="staff")
    granted = await client.post(
        path, json={"template_id": staff_template["id"], "idempotency_key": "c"}, headers=cashier
    )
    assert granted.status_code in (201, 404)  # 404 when the member is not of the cashier's store


async def test_self_claim_and_lists(client, admin, app, demo):
    template = await add_template(client, admin, per_member_limit=2)
    staff_only = await add_template(client, admin, channels=["staff"], name="staff only")
    member = await member_id(client, admin, "13900000205")
    headers = member_token(app, member_id=member, merchant_id=demo.merchant.id)
    offers = (await client.get("/api/mp/coupon-templates", headers=headers)).json()["items"]
    assert [(o["id"], o["may_claim"]) for o in offers] == [(template["id"], 2)]
    first = await client.post("/api/mp/coupons", json={"template_id": template["id"]}, headers=headers)
    assert first.status_code == 201, first.text
    second = await client.post("/api/mp/coupons", json={"template_id": template["id"]}, headers=headers)
    assert second.status_code == 201 and second.json()["id"] != first.json()["id"]
    third = await client.post("/api/mp/coupons", json={"template_id": template["id"]}, headers=headers)
    assert third.status_code == 409 and error_of(third)["code"] == "coupon.limit_reached"
    closed = await client.post("/api/mp/coupons", json={"template_id": staff_only["id"]}, headers=headers)
    assert closed.status_code == 403
    assert (await client.get("/api/mp/coupon-templates", headers=headers)).json()["items"] == []
    mine = (await client.get("/api/mp/me/coupons?status=usable", headers=headers)).json()["items"]
    assert len(mine) == 2 and {c["channel"] for c in mine} == {"self"}
    assert (await client.get("/api/mp/me/coupons?status=used", headers=headers)).json()["items"] == []
    assert (await client.get("/api/mp/me/coupons?status=bogus", headers=headers)).status_code == 422
    staff_view = (await client.get(f"/api/members/{member}/coupons", headers=admin)).json()["items"]
    assert {c["id"] for c in staff_view} == {c["id"] for c in mine}


async def test_self_claim_with_idempotency_header(client, admin, app, demo):
    template = await add_template(client, admin, per_member_limit=3)
    member = await member_id(client, admin, "13900000206")
    headers = member_token(app, member_id=member, merchant_id=demo.merchant.id) | {"Idempotency-Key": "click-1"}
    first = await client.post("/api/mp/coupons", json={"template_id": template["id"]}, headers=headers)
    again = await client.post("/api/mp/coupons", json={"template_id": template["id"]}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200) and first.json()["id"] == again.json()["id"]


async def test_valid_days_end_of_local_day_then_expire_and_remind(client, admin, app, demo):
    admin = lasting(app, admin)
    pin("2027-03-05 09:30")
    template = await add_template(client, admin, valid_days=3)
    member = await member_id(client, admin, "13900000207")
    headers = member_token(app, member_id=member, merchant_id=demo.merchant.id)
    coupon = (await client.post("/api/mp/coupons", json={"template_id": template["id"]}, headers=headers)).json()
    assert coupon["valid_until"] == "2027-03-07T16:00:00Z" and coupon["last_day"] == "2027-03-07"
    now = pin("2027-03-06 10:00")
    assert await send_reminders(now=now, days=3) == 1
    assert await send_reminders(now=now, days=3) == 0
    notice = await OutboxMessage.filter(topic="member.notice").order_by("-id").first()
    assert notice is not None and notice.payload["coupon_id"] == coupon["id"]
    assert await expire_due(now=now) == 0
    later = pin("2027-03-08 00:00")
    assert await expire_due(now=later) == 1
    assert await expire_due(now=later + timedelta(days=1)) == 0
    expired = (await client.get("/api/mp/me/coupons?status=expired", headers=headers)).json()["items"]
    assert [c["id"] for c in expired] == [coupon["id"]]
