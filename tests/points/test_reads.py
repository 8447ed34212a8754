"""The points page read as raw SQL (models/points/reads.py): byte for byte what the ORM + pydantic path answered."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from handlers.points import ExpiringOut, PointsItem, PointsOut
from models.kernel import clock
from models.kernel.config_cache import config_change
from models.ledger.books import PointsAccount, PointsEntry
from models.points import reads
from models.points.expiry import expire_due_lots
from models.points.lots import PointsExpiry, PointsLot, earn_points, points_summary
from models.points.reads import points_page
from models.points.rules import last_valid_day
from models.tenancy.merchants import Merchant
from server.api import ok
from server.auth import issue_member_token
from tests.points.helpers import adjust, assert_lots_agree, new_member, pin, pinned, spend, timeless_owner


@pytest.fixture
async def admin(app, demo, client):
    return await timeless_owner(app, demo)


def member_token(app: Any, demo: Any, member_id: int) -> dict[str, str]:
    with pinned(datetime(2000, 1, 1, tzinfo=UTC)):
        token, _ = issue_member_token(
            secret=app.ctx.settings.security.jwt_secret,
            ttl=100 * 365 * 86400,
            member_id=member_id,
            merchant_id=demo.merchant.id,
        )
    return {"Authorization": f"Bearer {token}"}


async def oracle(merchant_id: int, member_id: int, before_id: int | None = None, limit: int = 50) -> bytes:
    """The body the handler wrote before: Tortoise models through PointsOut (pydantic) into Sanic's JSON."""
    summary = await points_summary(merchant_id=merchant_id, member_id=member_id, before_id=before_id, limit=limit)
    out = PointsOut(
        balance=summary.balance,
        expiring_soon=ExpiringOut(points=summary.expiring_points, expires_on=summary.expires_on),
        items=[PointsItem.model_validate(e) for e in summary.entries],
        next_before_id=summary.next_before_id,
    )
    return bytes(ok(out).body or b"")


async def both_views(client, admin, member_headers, member_id, **params) -> bytes:
    own = await client.get("/api/mp/me/points", params=params, headers=member_headers)
    staff = await client.get(f"/api/members/{member_id}/points", params=params, headers=admin)
    assert own.status_code == staff.status_code == 200, (own.text, staff.text)
    assert own.content == staff.content
    PointsOut.model_validate_json(own.content, strict=False)  # what the OpenAPI says it is
    return own.content


async def test_pages_are_byte_for_byte_the_orm_answer(client, app, admin, demo):
    merchant = demo.merchant.id
    async with config_change(merchant_id=merchant):  # the expiring-soon day is the merchant's local day
        await Merchant.filter(id=merchant).update(timezone="America/New_York")
    try:
        member = await new_member(client, admin)
        headers = member_token(app, demo, member)
        empty = await both_views(client, admin, headers, member)
        assert empty == await oracle(merchant, member)
        assert empty == b'{"balance":0,"expiring_soon":{"points":0,"expires_on":null},"items":[],"next_before_id":null}'

        instants = (
            datetime(2025, 3, 10, 4, 0, tzinfo=UTC),
            datetime(2025, 3, 10, 4, 0, 1, 120000, tzinfo=UTC),
            datetime(2025, 3, 11, 3, 59, 59, 999999, tzinfo=UTC),
        )
        for index, at in enumerate(instants):
            pin(at)
            await adjust(client, admin, member, 10 * (index + 1), f"a{index}")
            await adjust(client, admin, member, 5, f"b{index}")
        assert (await spend(client, admin, member, 7, "s1")).status_code == 200
        # created_at is the wall clock's: stamp two rows with a whole second (isoformat drops the fraction) and
        # a fraction with trailing zeros
        for key, at in (("a0", instants[0]), ("a1", instants[1])):
            await PointsEntry.filter(member_id=member, idempotency_key=key).update(created_at=at)

        pin(datetime(2026, 2, 20, 2, 0, tzinfo=UTC))  # the lots of 2025-03-10/11 expire within 30 days
        full = await both_views(client, admin, headers, member)
        assert full == await oracle(merchant, member)
        page = PointsOut.model_validate_json(full)
        assert page.balance == 68 and len(page.items) == 7 and page.next_before_id is None
        assert page.expiring_soon.points == 68
        assert page.expiring_soon.expires_on is not None
        assert page.expiring_soon.expires_on.isoformat() == "2026-03-10"  # New York's last day, not Shanghai's
        assert b'"created_at":"2025-03-10T04:00:00Z"' in full
        assert b'"created_at":"2025-03-10T04:00:01.120000Z"' in full

        # paging: limit, before_id, the last short page, a before_id below every row
        before = None
        seen: list[int] = []
        while True:
            params = {"limit": 3, **({"before_id": before} if before else {})}
            body = await both_views(client, admin, headers, member, **params)
            assert body == await oracle(merchant, member, before_id=before, limit=3)
            chunk = PointsOut.model_validate_json(body)
            seen += [item.id for item in chunk.items]
            if chunk.next_before_id is None:
                break
            assert chunk.next_before_id == chunk.items[-1].id and len(chunk.items) == 3
            before = chunk.next_before_id
        assert seen == [item.id for item in page.items]
        bottom = await both_views(client, admin, headers, member, before_id=min(seen))
        assert bottom == await oracle(merchant, member, before_id=min(seen))
        assert PointsOut.model_validate_json(bottom).items == []
        exact = await both_views(client, admin, headers, member, limit=7)
        assert PointsOut.model_validate_json(exact).next_before_id == min(seen)  # a full page points further
        assert exact == await oracle(merchant, member, limit=7)
    finally:
        clock.set_clock(None)


def test_the_statements_name_the_models_tables():
    tables = (
        PointsAccount._meta.db_table,
        PointsExpiry._meta.db_table,
        PointsLot._meta.db_table,
        PointsEntry._meta.db_table,
    )
    assert tables == ("points_account", "points_expiry", "points_lot", "points_ledger")
    for statement in (reads._SUMMARY_SQL, reads._PAGE_SQL, reads._PAGE_BEFORE_SQL):
        assert "points_ledger" in statement or "points_lot" in statement


async def test_the_page_reads_only_the_callers_merchant_and_open_lots_due_soon(client, app, admin, demo):
    pin(datetime(2025, 1, 1, 12, 0, tzinfo=UTC))
    try:
        member = await new_member(client, admin)
        await adjust(client, admin, member, 40, "a")
        other = await new_member(client, admin)
        await adjust(client, admin, other, 9, "o")
        foreign = await points_page(merchant_id=demo.merchant.id + 1000, member_id=member)
        assert foreign.entries == [] and foreign.expires_on is None  # the ledger page is the merchant's
        pin(datetime(2025, 1, 1, 12, 0, tzinfo=UTC) + timedelta(days=340))  # inside the 30 days before expiry
        read = await points_page(merchant_id=demo.merchant.id, member_id=member)
        assert (read.balance, read.expiring_points, [e[1] for e in read.entries]) == (40, 40, [40])
        orm = await PointsEntry.get(member_id=member)
        assert read.entries[0] == (orm.id, 40, "adjust", "test", orm.created_at, 40)  # aware UTC, as the ORM reads it
        assert read.entries[0][4].utcoffset() == timedelta(0)
        assert (await spend(client, admin, member, 40, "s")).status_code == 200
        spent = await points_page(merchant_id=demo.merchant.id, member_id=member)
        assert (spent.balance, spent.expiring_points, spent.expires_on) == (0, 0, None)  # spent lots are not open
    finally:
        clock.set_clock(None)


async def test_expiring_soon_is_exact_at_the_boundary_and_counts_overdue_lots_until_the_job(client, app, admin, demo):
    """The per-instant totals answer exactly what the lots do: a lot due later on the boundary's own UTC day than
    now + 30 days is not counted, one already past due is until the expiry job takes it."""
    start = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    read_at = start + timedelta(days=5, hours=-2)  # 10:00 UTC: the boundary's UTC day goes on to midnight
    boundary = read_at + timedelta(days=30)
    pin(start)
    try:
        member = await new_member(client, admin)
        headers = member_token(app, demo, member)
        dues = {
            "overdue": (1, start + timedelta(days=1)),
            "before": (2, boundary - timedelta(microseconds=1)),
            "at": (4, boundary),
            "same-day-later": (8, boundary + timedelta(seconds=1)),
            "also-at": (16, boundary),
            "next-day": (32, boundary + timedelta(days=1)),
        }
        for key, (points, due) in dues.items():
            await earn_points(
                merchant_id=demo.merchant.id,
                member_id=member,
                points=points,
                reason="test",
                idempotency_key=key,
                kind="adjust",
                expires_at=due,
            )
        await adjust(client, admin, member, 64, "policy")  # the merchant's policy: a year ahead
        await assert_lots_agree(member)
        assert await PointsExpiry.filter(member_id=member).count() == 6  # "at" and "also-at" share a row

        pin(read_at)
        body = await both_views(client, admin, headers, member)
        assert body == await oracle(demo.merchant.id, member)
        soon = PointsOut.model_validate_json(body).expiring_soon
        assert soon.points == 1 + 2 + 4 + 16 and soon.expires_on == date(2025, 1, 2)  # Shanghai's last day

        assert await expire_due_lots(now=read_at) == 1  # the job takes the overdue lot: its row goes
        await assert_lots_agree(member)
        body = await both_views(client, admin, headers, member)
        assert body == await oracle(demo.merchant.id, member)
        soon = PointsOut.model_validate_json(body).expiring_soon
        assert soon.points == 2 + 4 + 16 and soon.expires_on == last_valid_day(boundary, ZoneInfo("Asia/Shanghai"))

        assert (await spend(client, admin, member, 2 + 4 + 3, "across")).status_code == 200  # three lots, two rows
        await assert_lots_agree(member)
        body = await both_views(client, admin, headers, member)
        assert body == await oracle(demo.merchant.id, member)
        assert PointsOut.model_validate_json(body).expiring_soon.points == 13
        assert await PointsExpiry.filter(member_id=member, expires_at=dues["before"][1]).count() == 0
    finally:
        clock.set_clock(None)
