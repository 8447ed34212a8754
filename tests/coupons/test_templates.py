"""Coupon templates over HTTP: create, validation, list, get, patch, void, tenancy."""

from __future__ import annotations

import pytest

from tests.conftest import login
from tests.coupons.helpers import add_template, member_id, template_body
from tests.helpers import OTHER_OWNER_PASSWORD, add_staff, error_of, other_merchant
from tests.tiers.helpers import member_token


async def test_create_get_list(client, admin):
    created = await add_template(client, admin)
    assert created["kind"] == "full_reduction" and created["threshold"] == 10000 and created["reduction"] == 2000
    assert created["issued"] == 0 and created["status"] == "active" and created["per_member_limit"] == 1
    got = await client.get(f"/api/coupon-templates/{created['id']}", headers=admin)
    assert got.status_code == 200 and got.json() == created
    page = (await client.get("/api/coupon-templates", headers=admin)).json()
    assert page["total"] == 1 and page["items"][0]["id"] == created["id"]


async def test_fixed_local_dates_are_the_merchant_day(client, admin):
    created = await add_template(client, admin, valid_days=None, valid_from="2027-03-01", valid_until="2027-03-31")
    assert created["valid_from"] == "2027-02-28T16:00:00Z"
    assert created["valid_until"] == "2027-03-31T16:00:00Z"
    assert created["last_day"] == "2027-03-31"
    offset = await add_template(
        client, admin, valid_days=None, valid_until="2027-04-01T12:00:00+08:00", name="with offset"
    )
    assert offset["valid_until"] == "2027-04-01T04:00:00Z"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "bogus"}, "kind"),
        ({"reduction": -1}, "reduction"),
        ({"threshold": -5}, "threshold"),
        ({"threshold": 1000, "reduction": 2000}, "threshold"),
        ({"kind": "discount", "discount_permille": 0}, "discount_permille"),
        ({"kind": "discount", "discount_permille": 1000}, "discount_permille"),
        ({"kind": "cash", "reduction": 0}, "reduction"),
        ({"kind": "gift"}, "gift_sku"),
        ({"valid_until": "2027-03-31"}, "valid_days"),
        ({"valid_days": None}, "valid_until"),
        ({"valid_days": None, "valid_from": "2027-03-31", "valid_until": "2027-03-01"}, "valid_until"),
        ({"valid_days": None, "valid_until": "2027-03-31T10:00:00"}, "valid_until"),
        ({"valid_days": None, "valid_until": "not-a-date"}, "valid_until"),
        ({"channels": []}, "channels"),
        ({"channels": ["self", "self"]}, "channels"),
        ({"per_member_limit": 0}, "per_member_limit"),
        ({"total_stock": -1}, "total_stock"),
    ],
)
async def test_bad_terms_are_422(client, admin, change, field):
    response = await client.post("/api/coupon-templates", json=template_body(**change), headers=admin)
    assert response.status_code == 422, response.text
    assert error_of(response)["field"].split(".")[0] == field


async def test_threshold_below_reduction_code(client, admin):
    response = await client.post(
        "/api/coupon-templates", json=template_body(threshold=100, reduction=2000), headers=admin
    )
    assert error_of(response)["code"] == "coupon_template.threshold_below_reduction"


async def test_patch_rules(client, admin):
    template = await add_template(client, admin, total_stock=5)
    path = f"/api/coupon-templates/{template['id']}"
    response = await client.patch(path, json={"name": "renamed", "reduction": 3000}, headers=admin)
    assert response.status_code == 200 and response.json()["reduction"] == 3000
    member = await member_id(client, admin, "13900000101")
    grant = {"template_id": template["id"], "idempotency_key": "k1"}
    assert (await client.post(f"/api/members/{member}/coupons", json=grant, headers=admin)).status_code == 201
    response = await client.patch(path, json={"reduction": 1000}, headers=admin)
    assert response.status_code == 409 and error_of(response)["code"] == "coupon_template.in_use"
    response = await client.patch(path, json={"total_stock": 0}, headers=admin)
    assert response.status_code == 409 and error_of(response)["code"] == "coupon_template.stock_below_issued"
    response = await client.patch(path, json={"total_stock": 1, "per_member_limit": 2}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["total_stock"] == 1 and response.json()["per_member_limit"] == 2
    response = await client.patch(path, json={"total_stock": None}, headers=admin)
    assert response.status_code == 200 and response.json()["total_stock"] is None


async def test_void_stops_claims_keeps_coupons(client, admin, app, demo):
    template = await add_template(client, admin)
    member = await member_id(client, admin, "13900000102")
    grant = {"template_id": template["id"], "idempotency_key": "k1"}
    assert (await client.post(f"/api/members/{member}/coupons", json=grant, headers=admin)).status_code == 201
    voided = await client.post(f"/api/coupon-templates/{template['id']}/void", headers=admin)
    assert voided.status_code == 200 and voided.json()["status"] == "voided"
    again = await client.post(f"/api/coupon-templates/{template['id']}/void", headers=admin)
    assert again.status_code == 200
    other = await member_id(client, admin, "13900000103")
    response = await client.post(
        f"/api/members/{other}/coupons", json={"template_id": template["id"], "idempotency_key": "k2"}, headers=admin
    )
    assert response.status_code == 409 and error_of(response)["code"] == "coupon_template.voided"
    mine = await client.get(f"/api/members/{member}/coupons", headers=admin)
    assert [c["status"] for c in mine.json()["items"]] == ["usable"]
    headers = member_token(app, member_id=other, merchant_id=demo.merchant.id)
    assert (await client.get("/api/mp/coupon-templates", headers=headers)).json()["items"] == []


async def test_roles_and_other_merchant(client, admin, demo):
    template = await add_template(client, admin)
    cashier = await add_staff(client, admin, username="cashier1", role="cashier", store_id=demo.store.id)
    response = await client.post("/api/coupon-templates", json=template_body(), headers=cashier)
    assert response.status_code == 403
    assert (await client.get(f"/api/coupon-templates/{template['id']}", headers=cashier)).status_code == 200
    await other_merchant()
    owner = await login(client, "other-owner", OTHER_OWNER_PASSWORD)
    assert (await client.get(f"/api/coupon-templates/{template['id']}", headers=owner)).status_code == 404
    patched = await client.patch(f"/api/coupon-templates/{template['id']}", json={"name": "x"}, headers=owner)
    assert patched.status_code == 404
    voided = await client.post(f"/api/coupon-templates/{template['id']}/void", headers=owner)
    assert voided.status_code == 404
    member = await member_id(client, admin, "13900000104")
    grant = {"template_id": template["id"], "idempotency_key": "k"}
    assert (await client.post(f"/api/members/{member}/coupons", json=grant, headers=owner)).status_code == 404
    assert (await client.get(f"/api/members/{member}/coupons", headers=owner)).status_code == 404
