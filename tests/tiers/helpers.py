"""Shared steps of the sign-in and tier tests: a pinned merchant-local clock, tiers, members with cards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from models.kernel import clock
from models.kernel.outbox import OutboxMessage
from models.members.member_card import MemberCard
from server.auth import decode_access_token, issue_access_token
from tests.helpers import add_member

SHANGHAI = ZoneInfo("Asia/Shanghai")
TEN_YEARS = 10 * 366 * 86400


def lasting(app: Any, headers: dict[str, str]) -> dict[str, str]:
    """The same principal with a token that survives a clock pinned months ahead."""
    secret = app.ctx.settings.security.jwt_secret
    principal = decode_access_token(headers["Authorization"].split(" ", 1)[1], secret=secret)
    token, _ = issue_access_token(
        secret=secret,
        ttl=TEN_YEARS,
        kind=principal.kind,
        subject_id=principal.subject_id,
        merchant_id=principal.merchant_id,
        role=principal.role,
        store_id=principal.store_id,
    )
    return {"Authorization": f"Bearer {token}"}


def member_token(app: Any, *, member_id: int, merchant_id: int) -> dict[str, str]:
    """Mini-program headers of a member, valid across a pinned clock."""
    token, _ = issue_access_token(
        secret=app.ctx.settings.security.jwt_secret,
        ttl=TEN_YEARS,
        kind="member",
        subject_id=member_id,
        merchant_id=merchant_id,
        role="member",
        store_id=None,
    )
    return {"Authorization": f"Bearer {token}"}


def local(text: str) -> datetime:
    """A Shanghai wall-clock time ("2027-03-05 23:59") as an aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def pin(text: str) -> datetime:
    """Pin the clock at a Shanghai wall-clock time."""
    moment = local(text)
    clock.set_clock(lambda: moment)
    return moment


@contextmanager
def pinned(text: str) -> Iterator[datetime]:
    try:
        yield pin(text)
    finally:
        clock.set_clock(None)


async def new_member(
    client: httpx.AsyncClient, headers: dict[str, str], *, merchant_id: int, phone: str, card: bool = False
) -> int:
    """A member made by staff; with card=True they also hold an activated WeChat member card."""
    member = await add_member(client, headers, phone=phone)
    if card:
        await MemberCard.create(
            merchant_id=merchant_id,
            member_id=member["id"],
            card_id="pTIERCARD",
            code=f"C{member['id']:011d}",
            status="activated",
        )
    return member["id"]


def tier_body(code: str, rank: int, threshold: int, **extra: Any) -> dict[str, Any]:
    return {"code": code, "name": code.title(), "rank": rank, "threshold": threshold, **extra}


async def add_tier(client: httpx.AsyncClient, headers: dict[str, str], code: str, rank: int, threshold: int, **extra):
    response = await client.post("/api/tiers", json=tier_body(code, rank, threshold, **extra), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def standard_tiers(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, dict]:
    """normal 0 / silver 1,000 / gold 5,000 growth, with upgrade gifts on silver and gold."""
    return {
        "normal": await add_tier(client, headers, "normal", 0, 0),
        "silver": await add_tier(
            client,
            headers,
            "silver",
            1,
            1000,
            points_multiplier_permille=1200,
            discount_permille=950,
            upgrade_gift={"points": 100, "balance": 500, "coupons": []},
        ),
        "gold": await add_tier(
            client,
            headers,
            "gold",
            2,
            5000,
            points_multiplier_permille=1500,
            discount_permille=900,
            upgrade_gift={"points": 300, "balance": 0, "coupons": []},
        ),
    }


async def put_policy(client: httpx.AsyncClient, headers: dict[str, str], **policy: Any) -> dict[str, Any]:
    response = await client.put("/api/loyalty/tier-policy", json=policy, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def pending_tier_syncs(member_id: int) -> int:
    """Pending card syncs of the member that carry a tier change."""
    rows = await OutboxMessage.filter(topic="card.sync", status="pending", coalesce_key=f"card:{member_id}")
    return sum(1 for row in rows if "tier" in row.payload.get("books", []))


async def settle_syncs(member_id: int) -> None:
    """Mark the member's pending card syncs delivered (the card itself is tested in the onboarding suite)."""
    await OutboxMessage.filter(topic="card.sync", status="pending", coalesce_key=f"card:{member_id}").update(
        status="delivered"
    )
