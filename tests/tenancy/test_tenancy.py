"""Roles and tenancy over HTTP: who may set up the merchant, and who sees which members."""

from __future__ import annotations

import pytest

from tests.conftest import login
from tests.helpers import (
    OTHER_OWNER_PASSWORD,
    STAFF_PASSWORD,
    add_member,
    add_staff,
    add_store,
    error_of,
    other_merchant,
)


async def _other_merchant(client) -> dict[str, str]:
    """A second tenant with its own store and owner; returns the owner's auth headers."""
    await other_merchant(store_code="T001")
    return await login(client, "other-owner", OTHER_OWNER_PASSWORD)


async def test_owner_creates_stores_and_staff(client, admin, demo):
    store_id = await add_store(client, admin, code="S002")
    stores = await client.get("/api/stores", headers=admin)
    assert stores.status_code == 200
    assert [s["code"] for s in stores.json()["items"]] == ["S001", "S002"]

    created = await client.post(
        "/api/staff",
        json={"username": "cashier-2", "password": STAFF_PASSWORD, "role": "cashier", "store_id": store_id},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    assert created.json()["store_id"] == store_id
    assert created.json()["role"] == "cashier"
    assert "password" not in created.json() and "password_hash" not in created.json()

    cashier = await login(client, "cashier-2", STAFF_PASSWORD)
    own = await client.get("/api/stores", headers=cashier)
    assert [s["id"] for s in own.json()["items"]] == [store_id]


async def test_duplicate_store_code_is_409(client, admin):
    response = await client.post("/api/stores", json={"code": "S001", "name": "Again"}, headers=admin)
    assert response.status_code == 409
    assert error_of(response)["code"] == "store.code_taken"


async def test_store_role_needs_a_store(client, admin):
    response = await client.post(
        "/api/staff", json={"username": "no-store", "password": STAFF_PASSWORD, "role": "cashier"}, headers=admin
    )
    assert response.status_code == 422
    assert error_of(response)["code"] == "staff.store_required"
    assert error_of(response)["field"] == "store_id"


@pytest.mark.parametrize("role", ["cashier", "store_manager", "marketer"])
async def test_non_admin_roles_cannot_set_up_the_merchant(client, admin, demo, role):
    staff = await add_staff(client, admin, username=f"{role}-1", role=role, store_id=demo.store.id)
    attempts = [
        ("/api/stores", {"code": "S099", "name": "Sneaky"}),
        (
            "/api/staff",
            {"username": "sneaky", "password": STAFF_PASSWORD, "role": "cashier", "store_id": demo.store.id},
        ),
        ("/api/member-fields", {"key": "sneaky", "label": "Sneaky", "type": "string"}),
    ]
    for path, body in attempts:
        response = await client.post(path, json=body, headers=staff)
        assert response.status_code == 403, (path, response.text)
        assert error_of(response)["code"] == "auth.role_forbidden", path
    stores = await client.get("/api/stores", headers=admin)
    assert [s["code"] for s in stores.json()["items"]] == ["S001"]
    fields = await client.get("/api/member-fields", headers=admin)
    assert fields.json()["items"] == []
    assert (
        await client.post("/api/auth/login", json={"username": "sneaky", "password": STAFF_PASSWORD})
    ).status_code == 401


async def test_store_roles_see_only_their_stores_members(client, admin, demo):
    store_a, store_b = demo.store.id, await add_store(client, admin, code="S002")
    manager_a = await add_staff(client, admin, username="manager-a", role="store_manager", store_id=store_a)
    manager_b = await add_staff(client, admin, username="manager-b", role="store_manager", store_id=store_b)
    cashier_b = await add_staff(client, admin, username="cashier-b", role="cashier", store_id=store_b)
    member_a = await add_member(client, admin, store_id=store_a, phone="13800000001")
    assert member_a["store_id"] == store_a

    for staff in (manager_b, cashier_b):
        hidden = await client.get(f"/api/members/{member_a['id']}", headers=staff)
        assert hidden.status_code == 404
        assert error_of(hidden)["code"] == "member.not_found"
        patched = await client.patch(f"/api/members/{member_a['id']}", json={"name": "Hacked"}, headers=staff)
        assert patched.status_code == 404
        search = await client.get("/api/members/", params={"phone": "13800000001"}, headers=staff)
        assert search.json() == {"total": 0, "items": []}

    points = await client.post(
        f"/api/members/{member_a['id']}/points",
        json={"delta": 10, "reason": "test", "idempotency_key": "b-steals"},
        headers=manager_b,
    )
    assert points.status_code == 404

    for staff in (manager_a, admin):
        seen = await client.get(f"/api/members/{member_a['id']}", headers=staff)
        assert seen.status_code == 200
        assert seen.json()["name"] == "Li Lei"
        assert seen.json()["points"] == 0
        search = await client.get("/api/members/", headers=staff)
        assert [m["id"] for m in search.json()["items"]] == [member_a["id"]]


async def test_store_staff_always_register_into_their_own_store(client, admin, demo):
    store_b = await add_store(client, admin, code="S002")
    cashier_b = await add_staff(client, admin, username="cashier-b", role="cashier", store_id=store_b)
    member = await add_member(client, cashier_b, store_id=demo.store.id, phone="13800000002")
    assert member["store_id"] == store_b


async def test_hq_sees_members_of_every_store(client, admin, demo):
    store_b = await add_store(client, admin, code="S002")
    hq = await add_staff(client, admin, username="hq-1", role="hq_admin")
    in_a = await add_member(client, admin, store_id=demo.store.id, phone="13800000003")
    in_b = await add_member(client, admin, store_id=store_b, phone="13800000004")
    search = await client.get("/api/members/", headers=hq)
    assert search.json()["total"] == 2
    assert {m["id"] for m in search.json()["items"]} == {in_a["id"], in_b["id"]}


async def test_other_merchant_never_sees_our_members(client, admin, demo):
    ours = await add_member(client, admin, store_id=demo.store.id, phone="13800000005", name="Ours")
    theirs_headers = await _other_merchant(client)
    theirs = await add_member(client, theirs_headers, phone="13800000005", name="Theirs")
    assert theirs["id"] != ours["id"]

    read = await client.get(f"/api/members/{ours['id']}", headers=theirs_headers)
    assert read.status_code == 404
    assert error_of(read)["code"] == "member.not_found"
    search = await client.get("/api/members/", params={"phone": "13800000005"}, headers=theirs_headers)
    assert [m["id"] for m in search.json()["items"]] == [theirs["id"]]
    everything = await client.get("/api/members/", headers=theirs_headers)
    assert everything.json()["total"] == 1

    patched = await client.patch(f"/api/members/{ours['id']}", json={"name": "Stolen"}, headers=theirs_headers)
    assert patched.status_code == 404
    for book in ("points", "balance"):
        change = await client.post(
            f"/api/members/{ours['id']}/{book}",
            json={"delta": 500, "reason": "cross-tenant", "idempotency_key": f"x-{book}"},
            headers=theirs_headers,
        )
        assert change.status_code == 404, change.text
        ledger = await client.get(f"/api/members/{ours['id']}/{book}/ledger", headers=theirs_headers)
        assert ledger.status_code == 404

    unchanged = (await client.get(f"/api/members/{ours['id']}", headers=admin)).json()
    assert (unchanged["name"], unchanged["points"], unchanged["balance"]) == ("Ours", 0, 0)


async def test_other_merchant_cannot_use_our_stores(client, admin, demo):
    theirs_headers = await _other_merchant(client)
    staff = await client.post(
        "/api/staff",
        json={"username": "infiltrator", "password": STAFF_PASSWORD, "role": "cashier", "store_id": demo.store.id},
        headers=theirs_headers,
    )
    assert staff.status_code == 404
    assert error_of(staff)["code"] == "store.not_found"
    member = await client.post("/api/members/", json={"store_id": demo.store.id}, headers=theirs_headers)
    assert member.status_code == 404
    assert error_of(member)["code"] == "store.not_found"
    stores = await client.get("/api/stores", headers=theirs_headers)
    assert [s["code"] for s in stores.json()["items"]] == ["T001"]


async def test_only_an_owner_may_create_an_owner(client, admin):
    hq = await add_staff(client, admin, username="hq-1", role="hq_admin")
    body = {"username": "owner-2", "password": STAFF_PASSWORD, "role": "owner"}
    refused = await client.post("/api/staff", json=body, headers=hq)
    assert refused.status_code == 403
    assert error_of(refused)["code"] == "staff.owner_only"
    assert (
        await client.post("/api/auth/login", json={"username": "owner-2", "password": STAFF_PASSWORD})
    ).status_code == 401

    created = await client.post("/api/staff", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["role"] == "owner"
    owner_2 = await login(client, "owner-2", STAFF_PASSWORD)
    assert (await client.get("/api/merchant", headers=owner_2)).json()["code"] == "demo"


async def test_hq_admin_may_create_store_staff(client, admin, demo):
    hq = await add_staff(client, admin, username="hq-1", role="hq_admin")
    cashier = await add_staff(client, hq, username="cashier-1", role="cashier", store_id=demo.store.id)
    assert (await client.get("/api/stores", headers=cashier)).status_code == 200
