"""Points expiry: policies at merchant-local midnight, the job exactly once under concurrency, reminders once."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest

from jobs.outbox import deliver_due
from jobs.scheduler import run_job
from models.kernel import clock
from models.kernel.config_cache import config_change
from models.kernel.outbox import OutboxMessage
from models.ledger.books import PointsEntry
from models.points.expiry import expire_due_lots, send_expiry_reminders
from models.points.lots import PointsLot, PointsLotUse, PointsReminder
from models.tenancy.merchants import Merchant
from server import wiring
from tests.points.helpers import (
    adjust,
    assert_lots_agree,
    member_points,
    new_member,
    pin,
    put_rules,
    spend,
    timeless_owner,
)


@pytest.fixture
async def admin(app, demo, client):
    return await timeless_owner(app, demo)


async def test_rolling_year_expires_at_the_merchant_local_midnight_after_a_year(client, admin):
    pin(datetime(2025, 3, 10, 17, 30, tzinfo=UTC))  # 2025-03-11 01:30 in Shanghai
    try:
        member = await new_member(client, admin)
        await adjust(client, admin, member, 80, "a")
        lot = await PointsLot.get(member_id=member)
        assert lot.expires_at == datetime(2026, 3, 11, 16, 0, tzinfo=UTC)  # 2026-03-12 00:00 Shanghai

        pin(datetime(2026, 2, 20, 2, 0, tzinfo=UTC))
        shown = await member_points(client, admin, member)
        assert shown["balance"] == 80
        assert shown["expiring_soon"] == {"points": 80, "expires_on": "2026-03-11"}  # last day it can be used

        pin(datetime(2026, 3, 11, 15, 59, 59, tzinfo=UTC))
        assert await expire_due_lots(now=clock.now()) == 0
        pin(datetime(2026, 3, 11, 16, 0, tzinfo=UTC))
        assert await expire_due_lots(now=clock.now()) == 1
        rows = [(e.delta, e.kind, e.idempotency_key) for e in await PointsEntry.filter(member_id=member).order_by("id")]
        assert rows == [(80, "adjust", "a"), (-80, "expire", f"expire:{lot.id}")]
        assert await assert_lots_agree(member) == 0
    finally:
        clock.set_clock(None)


async def test_end_of_next_year_follows_the_merchant_time_zone(client, admin, demo):
    async with config_change(merchant_id=demo.merchant.id):  # as a writer of configuration would
        await Merchant.filter(id=demo.merchant.id).update(timezone="America/New_York")
    await put_rules(client, admin, expiry="end_of_next_year")
    pin(datetime(2026, 1, 1, 4, 30, tzinfo=UTC))  # still 2025-12-31 in New York (already 2026 in Shanghai)
    try:
        member = await new_member(client, admin)
        await adjust(client, admin, member, 10, "a")
        lot = await PointsLot.get(member_id=member)
        assert lot.expires_at == datetime(2027, 1, 1, 5, 0, tzinfo=UTC)  # 2027-01-01 00:00 New York
        assert (await member_points(client, admin, member))["expiring_soon"] == {"points": 0, "expires_on": None}
        pin(datetime(2026, 12, 20, tzinfo=UTC))
        assert (await member_points(client, admin, member))["expiring_soon"] == {
            "points": 10,
            "expires_on": "2026-12-31",
        }
        pin(datetime(2027, 1, 1, 4, 59, tzinfo=UTC))
        assert await expire_due_lots(now=clock.now()) == 0
        pin(datetime(2027, 1, 1, 5, 0, tzinfo=UTC))
        assert await expire_due_lots(now=clock.now()) == 1
    finally:
        clock.set_clock(None)


async def test_never_expiring_points_stay(client, admin):
    await put_rules(client, admin, expiry="never")
    member = await new_member(client, admin)
    await adjust(client, admin, member, 10, "a")
    assert (await PointsLot.get(member_id=member)).expires_at is None
    pin(datetime(2100, 1, 1, tzinfo=UTC))
    try:
        assert await expire_due_lots(now=clock.now()) == 0
        assert await assert_lots_agree(member) == 10
    finally:
        clock.set_clock(None)


async def test_expiry_run_twice_at_once_expires_each_lot_once_and_only_the_unspent_part(client, app, admin):
    t0 = datetime(2025, 6, 1, 2, 0, tzinfo=UTC)
    pin(t0)
    try:
        members = [await new_member(client, admin) for _ in range(3)]
        for index, member in enumerate(members):
            await adjust(client, admin, member, 100, f"a{index}")
            await adjust(client, admin, member, 5, f"b{index}")
        assert (await spend(client, admin, members[0], 40, "half")).status_code == 200  # 40 of the first lot
        pin(t0 + timedelta(days=400))
        first = await asyncio.gather(expire_due_lots(now=clock.now(), batch=2), expire_due_lots(now=clock.now()))
        assert sum(first) == 6
        expired = await PointsEntry.filter(kind="expire").order_by("member_id", "id").values_list("member_id", "delta")
        # one row per member for its due lots (the same lots give the same key, so the other run replays)
        assert expired == [(members[0], -65), (members[1], -105), (members[2], -105)]
        for member in members:
            assert await assert_lots_agree(member) == 0

        # the scheduled job, twice at once (the lock may skip one; the lot guards make a second run harmless)
        for index, member in enumerate(members):
            await adjust(client, admin, member, 7, f"c{index}")
        pin(t0 + timedelta(days=800))
        summaries = await asyncio.gather(run_job("points.expire", app.ctx.jobs), run_job("points.expire", app.ctx.jobs))
        assert sorted(s or "" for s in summaries)[-1] == "3 points lots expired"
        assert await PointsEntry.filter(kind="expire").count() == 6
        assert await run_job("points.expire", app.ctx.jobs) == "0 points lots expired"
        for member in members:
            assert await assert_lots_agree(member) == 0
    finally:
        clock.set_clock(None)


async def test_spends_racing_the_expiry_never_take_the_account_below_zero(client, admin):
    t0 = datetime(2025, 6, 1, 2, 0, tzinfo=UTC)
    pin(t0)
    try:
        member = await new_member(client, admin)
        await adjust(client, admin, member, 20, "a")
        pin(t0 + timedelta(days=400))
        await adjust(client, admin, member, 10, "b")
        results = await asyncio.gather(
            expire_due_lots(now=clock.now()),
            *(spend(client, admin, member, 3, f"s{i}") for i in range(8)),
        )
        spent = 3 * sum(1 for r in results[1:] if r.status_code == 200)  # type: ignore[union-attr]
        assert results[0] in (0, 1)
        balance = await assert_lots_agree(member)
        expired = -sum(await PointsEntry.filter(member_id=member, kind="expire").values_list("delta", flat=True))
        assert balance == 30 - spent - expired >= 0
        lot_a, lot_b = await PointsLot.filter(member_id=member).order_by("id")
        taken_from_a = sum(await PointsLotUse.filter(lot_id=lot_a.id).values_list("amount", flat=True))
        assert taken_from_a + expired == 20  # the expiry took exactly what the spends had left of the due lot
        assert lot_b.status == "open" and lot_b.remaining == balance
    finally:
        clock.set_clock(None)


async def test_reminders_go_once_per_member_day_and_lead_time(client, app, admin, demo):
    pin(datetime(2025, 3, 10, 4, 0, tzinfo=UTC))  # earned 2025-03-10 Shanghai: usable through 2026-03-10
    try:
        member = await new_member(client, admin)
        other = await new_member(client, admin)
        await adjust(client, admin, member, 30, "a")
        await adjust(client, admin, member, 12, "b")
        await adjust(client, admin, other, 5, "c")
        assert (await spend(client, admin, other, 5, "d")).status_code == 200  # nothing left to remind about

        pin(datetime(2026, 2, 7, 16, 30, tzinfo=UTC))  # 2026-02-08 00:30 Shanghai: 30 days before the 10 March
        assert await asyncio.gather(send_expiry_reminders(now=clock.now()), send_expiry_reminders(now=clock.now()))
        assert await run_job("points.remind", app.ctx.jobs) == "0 expiry reminders queued"
        pin(datetime(2026, 3, 3, 1, 0, tzinfo=UTC))  # 7 days before
        assert await run_job("points.remind", app.ctx.jobs) == "1 expiry reminders queued"
        assert await run_job("points.remind", app.ctx.jobs) == "0 expiry reminders queued"
        pin(datetime(2026, 3, 4, 1, 0, tzinfo=UTC))  # no lead time matches
        assert await send_expiry_reminders(now=clock.now()) == 0

        reminders = await PointsReminder.all().order_by("id").values_list("member_id", "expires_on", "days_before")
        assert reminders == [(member, date(2026, 3, 10), 30), (member, date(2026, 3, 10), 7)]
        messages = await OutboxMessage.filter(topic="member.notice").order_by("id")
        assert [m.payload for m in messages] == [
            {"member_id": member, "kind": "points_expiring", "points": 42, "expires_on": "2026-03-10"}
        ] * 2
        assert await deliver_due(gateway=app.ctx.wechat, topics=wiring.OUTBOX_TOPICS) >= 2
        assert await OutboxMessage.filter(topic="member.notice", status="delivered").count() == 2
    finally:
        clock.set_clock(None)


async def test_reminder_lead_days_are_configurable(client, admin):
    await put_rules(client, admin, reminder_days=[3])
    pin(datetime(2025, 3, 10, 4, 0, tzinfo=UTC))
    try:
        member = await new_member(client, admin)
        await adjust(client, admin, member, 9, "a")
        pin(datetime(2026, 2, 7, 16, 30, tzinfo=UTC))
        assert await send_expiry_reminders(now=clock.now()) == 0
        pin(datetime(2026, 3, 7, 1, 0, tzinfo=UTC))
        assert await send_expiry_reminders(now=clock.now()) == 1
        assert await PointsReminder.filter(member_id=member, days_before=3).count() == 1
    finally:
        clock.set_clock(None)
