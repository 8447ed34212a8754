"""Shared steps of the coupon tests: templates and members through the API."""

from __future__ import annotations

from typing import Any

import httpx

from tests.helpers import add_member


def template_body(**extra: Any) -> dict[str, Any]:
    """满100减20, valid 30 days after claim, stock 10, self and staff channels."""
    return {
        "kind": "full_reduction",
        "name": "100-20",
        "threshold": 10000,
        "reduction": 2000,
        "valid_days": 30,
        "total_stock": 10,
        "channels": ["self", "staff"],
        **extra,
    }


async def add_template(client: httpx.AsyncClient, headers: dict[str, str], **extra: Any) -> dict[str, Any]:
    response = await client.post("/api/coupon-templates", json=template_body(**extra), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def member_id(client: httpx.AsyncClient, headers: dict[str, str], phone: str) -> int:
    return int((await add_member(client, headers, phone=phone))["id"])
