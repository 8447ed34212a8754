"""Shared steps of the points tests: members, rules, purchases, spends, a pinned clock and the lots invariant."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from tortoise.functions import Sum

from models.kernel import clock
from models.ledger.books import PointsAccount, PointsEntry
from models.points.lots import PointsExpiry, PointsLot, PointsLotUse
from models.tenancy.staff import Staff
from server.auth import issue_access_token
from tests.helpers import add_member


@contextmanager
def pinned(at: datetime) -> Iterator[None]:
    clock.set_clock(lambda: at)
    try:
        yield
    finally:
        clock.set_clock(None)


def pin(at: datetime) -> None:
    clock.set_clock(lambda: at)


async def timeless_owner(app: Any, demo: Any) -> dict[str, str]:
    """The demo owner's headers with a token valid from 2000 to 2100, for tests that move the clock."""
    owner = await Staff.get(username=demo.admin_username)
    with pinned(datetime(2000, 1, 1, tzinfo=UTC)):
        token, _ = issue_access_token(
            secret=app.ctx.settings.security.jwt_secret,
            ttl=100 * 365 * 86400,
            kind="staff",
            subject_id=owner.id,
            merchant_id=demo.merchant.id,
            role=owner.role,
            store_id=None,
        )
    return {"Authorization": f"Bearer {token}"}


async def new_member(client: httpx.AsyncClient, headers: dict[str, str], **profile: Any) -> int:
    return int((await add_member(client, headers, **profile))["id"])


async def put_rules(client: httpx.AsyncClient, headers: dict[str, str], **rules: Any) -> dict[str, Any]:
    response = await client.put("/api/loyalty/points-rules", json=rules, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def buy(
    client: httpx.AsyncClient, headers: dict[str, str], member_id: int, order_no: str, amount: int, **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/api/members/{member_id}/purchases", json={"order_no": order_no, "amount": amount, **extra}, headers=headers
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


async def spend(
    client: httpx.AsyncClient, headers: dict[str, str], member_id: int, points: int, key: str
) -> httpx.Response:
    return await client.post(
        f"/api/members/{member_id}/points/spend",
        json={"points": points, "reason": "redeemed at the counter", "idempotency_key": key},
        headers=headers,
    )


async def adjust(client: httpx.AsyncClient, headers: dict[str, str], member_id: int, delta: int, key: str) -> dict:
    """A staff adjustment through the ledger endpoint (a credit becomes a lot by the merchant's policy)."""
    response = await client.post(
        f"/api/members/{member_id}/points",
        json={"delta": delta, "reason": "test", "idempotency_key": key, "kind": "adjust"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return response.json()


async def member_points(client: httpx.AsyncClient, headers: dict[str, str], member_id: int, **params: Any) -> dict:
    response = await client.get(f"/api/members/{member_id}/points", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def open_lots(member_id: int) -> list[tuple[int, int]]:
    """(amount, remaining) of the member's open lots, in id order."""
    lots = await PointsLot.filter(member_id=member_id, status="open").order_by("id")
    return [(lot.amount, lot.remaining) for lot in lots]


async def assert_lots_agree(member_id: int) -> int:
    """balance = sum(ledger) = sum(open lots' remaining) >= 0, no lot used beyond its amount; returns the balance."""
    account = await PointsAccount.get(member_id=member_id)
    ledger_rows = await PointsEntry.filter(member_id=member_id).annotate(total=Sum("delta")).values("total")
    ledger_sum = int(ledger_rows[0]["total"] or 0) if ledger_rows else 0
    lots = await PointsLot.filter(member_id=member_id)
    open_sum = sum(lot.remaining for lot in lots if lot.status == "open")
    assert account.balance == ledger_sum == open_sum >= 0, (account.balance, ledger_sum, open_sum)
    for lot in lots:
        uses = await PointsLotUse.filter(lot_id=lot.id)
        used = sum(use.amount - use.restored for use in uses)
        assert 0 <= lot.remaining <= lot.amount, (lot.id, lot.remaining, lot.amount)
        if lot.status == "expired":
            # expiry took exactly what had not been spent: never a spent point
            assert lot.remaining == 0 and lot.expired + used == lot.amount, (lot.id, lot.expired, used)
        else:
            assert lot.expired == 0, (lot.id, lot.expired)
            assert lot.remaining + used == lot.amount, (lot.id, lot.remaining, used, lot.amount)
            assert (lot.status == "spent") == (lot.remaining == 0), (lot.id, lot.status)
    await assert_expiry_totals_agree(member_id, lots)
    return account.balance


async def assert_expiry_totals_agree(member_id: int, lots: list[PointsLot] | None = None) -> None:
    """points_expiry holds, per expiry instant, exactly SUM(remaining) of the member's open lots expiring then:
    no row for never-expiring lots, none for an instant that holds nothing."""
    if lots is None:
        lots = await PointsLot.filter(member_id=member_id)
    held: dict[datetime, int] = {}
    for lot in lots:
        if lot.status == "open" and lot.expires_at is not None and lot.remaining:
            moment = clock.as_utc(lot.expires_at)
            assert moment is not None
            held[moment] = held.get(moment, 0) + lot.remaining
    kept = {}
    for row in await PointsExpiry.filter(member_id=member_id):
        moment = clock.as_utc(row.expires_at)
        assert moment is not None and moment not in kept, (member_id, row.expires_at)
        kept[moment] = row.points
    assert kept == held, (member_id, kept, held)
