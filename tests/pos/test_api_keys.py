"""Per-store POS API keys over HTTP: shown once, hashed at rest, store-scoped, revoked at once."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

from models.tenancy.api_keys import PosApiKey
from tests.conftest import login
from tests.helpers import add_member, add_staff, add_store, error_of, other_merchant


def api_key(key: str) -> dict[str, str]:
    return {"Authorization": f"ApiKey {key}"}


async def new_key(client, headers, store_id: int, name: str = "till 1") -> dict:
    response = await client.post(f"/api/stores/{store_id}/api-keys", json={"name": name}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def test_key_is_shown_once_hashed_at_rest_and_revoked_at_once(client, admin, demo):
    store_id = demo.store.id
    member = await add_member(client, admin, name="Han Meimei", phone="13800000001", store_id=store_id)
    created = await new_key(client, admin, store_id)
    key = created["key"]
    prefix, secret = key.removeprefix("hy_pos_").split("_", 1)
    assert key.startswith("hy_pos_") and created["prefix"] == prefix and len(prefix) == 8
    assert len(secret) >= 43 and created["revoked_at"] is None and created["store_id"] == store_id

    listed = await client.get(f"/api/stores/{store_id}/api-keys", headers=admin)
    assert listed.status_code == 200
    [item] = listed.json()["items"]
    assert "key" not in item and secret not in listed.text and item["prefix"] == prefix
    row = await PosApiKey.get(id=created["id"])
    assert row.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert all(secret not in str(value) for value in row.__dict__.values())

    found = await client.get("/api/pos/member", params={"phone": "13800000001"}, headers=api_key(key))
    assert found.status_code == 200, found.text
    assert found.json()["member_id"] == member["id"]
    used = (await PosApiKey.get(id=created["id"])).last_used_at
    assert used is not None
    await client.get("/api/pos/member", params={"phone": "13800000001"}, headers=api_key(key))
    assert (await PosApiKey.get(id=created["id"])).last_used_at == used  # at most once a minute

    # a till's key is not a manager: it may not manage keys, nor call a staff-only endpoint
    assert (await client.get(f"/api/stores/{store_id}/api-keys", headers=api_key(key))).status_code == 403
    assert (await client.get("/api/members/", headers=api_key(key))).status_code == 403

    revoked = await client.post(f"/api/stores/{store_id}/api-keys/{created['id']}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    denied = await client.get("/api/pos/member", params={"phone": "13800000001"}, headers=api_key(key))
    assert (denied.status_code, error_of(denied)["code"]) == (401, "auth.api_key_invalid")
    again = await client.post(f"/api/stores/{store_id}/api-keys/{created['id']}/revoke", headers=admin)
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]
    missing = await client.post(f"/api/stores/{store_id}/api-keys/999999/revoke", headers=admin)
    assert (missing.status_code, error_of(missing)["code"]) == (404, "api_key.not_found")


async def test_who_may_manage_a_stores_keys(client, admin, demo):
    other_store = await add_store(client, admin, code="S777")
    manager = await add_staff(client, admin, username="mgr1", role="store_manager", store_id=demo.store.id)
    cashier = await add_staff(client, admin, username="cash1", role="cashier", store_id=demo.store.id)
    mine = await new_key(client, manager, demo.store.id)
    assert mine["store_id"] == demo.store.id
    listed = await client.get(f"/api/stores/{demo.store.id}/api-keys", headers=manager)
    assert [k["id"] for k in listed.json()["items"]] == [mine["id"]]
    revoked = await client.post(f"/api/stores/{demo.store.id}/api-keys/{mine['id']}/revoke", headers=manager)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    elsewhere = await new_key(client, admin, other_store)
    hidden = await client.post(f"/api/stores/{demo.store.id}/api-keys/{elsewhere['id']}/revoke", headers=admin)
    assert (hidden.status_code, error_of(hidden)["code"]) == (404, "api_key.not_found")  # a key of another store
    foreign = await client.post(f"/api/stores/{other_store}/api-keys", json={"name": "x"}, headers=manager)
    assert (foreign.status_code, error_of(foreign)["code"]) == (404, "store.not_found")
    assert (await client.get(f"/api/stores/{other_store}/api-keys", headers=manager)).status_code == 404
    assert (
        await client.post(f"/api/stores/{demo.store.id}/api-keys", json={"name": "x"}, headers=cashier)
    ).status_code == 403
    theirs = await other_merchant()
    owner = await login(client, "other-owner", "other-owner-password-1")
    assert (
        await client.post(f"/api/stores/{demo.store.id}/api-keys", json={"name": "x"}, headers=owner)
    ).status_code == 404
    assert (await new_key(client, owner, theirs.store.id))["store_id"] == theirs.store.id
    bad = await client.post(f"/api/stores/{demo.store.id}/api-keys", json={"name": ""}, headers=admin)
    assert bad.status_code == 422


async def test_wrong_scheme_and_garbage_keys_are_401_json(client, admin, demo):
    key = (await new_key(client, admin, demo.store.id))["key"]
    prefix = key.removeprefix("hy_pos_").split("_", 1)[0]
    for header in (
        "ApiKey garbage",
        "ApiKey hy_pos_abcdefgh_" + "x" * 43,
        f"ApiKey hy_pos_{prefix}_" + "x" * 43,
        f"ApiKey hy_pos_{prefix.upper()}_" + key.split("_", 3)[3],
        f"ApiKey {key}x",
        f"Basic {key}",
        f"Bearer {key}",
        "ApiKey ",
    ):
        response = await client.get("/api/pos/member", params={"phone": "1"}, headers={"Authorization": header})
        assert response.status_code == 401, (header, response.text)
        assert error_of(response)["code"].startswith("auth."), header


async def test_store_key_sees_its_stores_members_like_a_cashier(client, admin, demo):
    other_store = await add_store(client, admin, code="S888")
    ours = await add_member(client, admin, name="Ours", phone="13800000011", store_id=demo.store.id)
    await add_member(client, admin, name="Theirs", phone="13800000022", store_id=other_store)
    key = (await new_key(client, admin, demo.store.id))["key"]
    cashier = await add_staff(client, admin, username="cash2", role="cashier", store_id=demo.store.id)
    for headers in (api_key(key), cashier):
        found = await client.get("/api/pos/member", params={"phone": "13800000011"}, headers=headers)
        assert found.json()["member_id"] == ours["id"]
        hidden = await client.get("/api/pos/member", params={"phone": "13800000022"}, headers=headers)
        assert (hidden.status_code, error_of(hidden)["code"]) == (404, "member.not_found")
    assert (await client.get("/api/pos/member", params={"phone": "13800000022"}, headers=admin)).status_code == 200
    theirs = await other_merchant()
    owner = await login(client, "other-owner", "other-owner-password-1")
    foreign_key = (await new_key(client, owner, theirs.store.id))["key"]
    hidden = await client.get("/api/pos/member", params={"phone": "13800000011"}, headers=api_key(foreign_key))
    assert hidden.status_code == 404


async def test_a_revocation_from_another_process_reaches_this_one(client, app, admin, demo):
    await add_member(client, admin, name="Ours", phone="13800000011", store_id=demo.store.id)
    created = await new_key(client, admin, demo.store.id)
    headers = api_key(created["key"])
    assert (await client.get("/api/pos/member", params={"phone": "13800000011"}, headers=headers)).status_code == 200
    # another process revokes: the row changes and the prefix is published, this process's cache must drop it
    await PosApiKey.filter(id=created["id"]).update(revoked_at=datetime.now(UTC))
    await app.ctx.redis.publish(app.ctx.keys("api_key_revoked"), created["prefix"])
    for _ in range(50):
        response = await client.get("/api/pos/member", params={"phone": "13800000011"}, headers=headers)
        if response.status_code == 401:
            break
        await asyncio.sleep(0.05)
    assert response.status_code == 401
