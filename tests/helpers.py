"""Helpers shared by the tests: staff logins, members, custom fields, a second merchant, the OA message mode."""

from __future__ import annotations

import httpx

from models.tenancy.merchants import Merchant, find_wechat_account, upsert_wechat_account
from server.seed import SeedResult, ensure_merchant
from tests.conftest import login

STAFF_PASSWORD = "staff-password-1"
OTHER_OWNER_PASSWORD = "other-owner-password-1"


async def other_merchant(code: str = "other", *, store_code: str = "O001") -> SeedResult:
    """A second tenant with one store and an owner `<code>-owner` (password OTHER_OWNER_PASSWORD)."""
    return await ensure_merchant(
        code=code,
        name=f"{code.title()} Co",
        timezone="Asia/Shanghai",
        store_code=store_code,
        store_name=f"{code.title()} Main",
        admin_username=f"{code}-owner",
        admin_password=OTHER_OWNER_PASSWORD,
    )


async def set_message_mode(mode: str, *, appid: str | None = None) -> None:
    """Put an official account (default: the demo's, seeded in safe mode) in plaintext, compatible or safe mode.

    Server side only: the emulator keeps pushing in the mode of its own account (safe for the demo's, which has
    an EncodingAESKey), so pass `mode` to /control/oa-event and /control/scan when it should differ.
    """
    account = await find_wechat_account(kind="official", key=appid)
    assert account is not None
    await upsert_wechat_account(
        merchant=await Merchant.get(id=account.merchant_id),
        kind="official",
        appid=account.appid,
        api_base=account.api_base,
        secrets=account.secrets(),
        message_mode=mode,
    )


async def add_staff(
    client: httpx.AsyncClient, headers: dict[str, str], *, username: str, role: str, store_id: int | None = None
) -> dict[str, str]:
    """Create a staff login through the API and return its auth headers."""
    body = {"username": username, "password": STAFF_PASSWORD, "role": role, "store_id": store_id}
    response = await client.post("/api/staff", json=body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["role"] == role
    return await login(client, username, STAFF_PASSWORD)


async def add_store(client: httpx.AsyncClient, headers: dict[str, str], *, code: str) -> int:
    response = await client.post("/api/stores", json={"code": code, "name": f"Store {code}"}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def add_member(client: httpx.AsyncClient, headers: dict[str, str], **profile: object) -> dict:
    response = await client.post("/api/members/", json={"name": "Li Lei", **profile}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def member_total(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    response = await client.get("/api/members/", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["total"]


def error_of(response: httpx.Response) -> dict:
    """The error object, after checking the envelope is exactly {"error": {"code", "message", ...}}."""
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    return error
