"""Helpers of the package tests: a template, a member with stored value, a sale, a visit."""

from __future__ import annotations

from typing import Any

import httpx

from models.ledger import books as ledger
from tests.helpers import add_member


async def template(client: httpx.AsyncClient, admin: dict[str, str], **fields: Any) -> dict:
    body = {"name": "10 haircuts", "kind": "uses", "uses": 10, "price": 30_000, "valid_days": 365, **fields}
    response = await client.post("/api/package-templates", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()


async def member_with_balance(
    client: httpx.AsyncClient, admin: dict[str, str], *, merchant_id: int, phone: str, fen: int
) -> int:
    member_id = (await add_member(client, admin, phone=phone))["id"]
    if fen:
        await ledger.change_balance(
            merchant_id=merchant_id,
            member_id=member_id,
            delta=fen,
            kind="recharge",
            reason="充值",
            idempotency_key=f"r-{phone}",
        )
    return member_id


async def sell(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    member_id: int,
    template_id: int,
    *,
    key: str,
    payments: list[dict],
) -> httpx.Response:
    body = {"template_id": template_id, "idempotency_key": key, "payments": payments}
    return await client.post(f"/api/members/{member_id}/packages", json=body, headers=headers)


async def use(
    client: httpx.AsyncClient, headers: dict[str, str], member_id: int, package_id: int, key: str
) -> httpx.Response:
    return await client.post(
        f"/api/members/{member_id}/packages/{package_id}/uses", json={"idempotency_key": key}, headers=headers
    )
