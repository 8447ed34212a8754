"""Consumption analytics through HTTP: every figure against the test's own computation over the purchases it made,
after the roll-up job; a later purchase and a reversal after the next run; period validation; store scope."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from jobs.scheduler import run_job
from models.kernel import clock
from tests.helpers import add_member, add_staff, add_store, error_of, other_merchant
from tests.payments.helpers import add_plan, buy_plan, pay, paying_member, use_pay_version

ZONE = ZoneInfo("Asia/Shanghai")


@dataclass
class Bought:
    order_no: str
    member: int
    store: int | None
    day: date  # merchant-local
    amount: int
    items: list[dict] = field(default_factory=list)


class World:
    def __init__(self, client, headers, today: date) -> None:
        self.client, self.headers, self.today = client, headers, today
        self.bought: list[Bought] = []

    async def buy(self, member: int, store: int | None, days_ago: int, hour: int, amount: int, items=()) -> Bought:
        day = self.today - timedelta(days=days_ago)
        at = datetime.combine(day, time(hour, 30), tzinfo=ZONE).astimezone(UTC)
        row = Bought(f"A{len(self.bought)}", member, store, day, amount, list(items))
        body = {"order_no": row.order_no, "amount": amount, "occurred_at": at.isoformat(), "items": row.items}
        if store is not None:
            body["store_id"] = store
        response = await self.client.post(f"/api/members/{member}/purchases", json=body, headers=self.headers)
        assert response.status_code in (200, 201), response.text
        self.bought.append(row)
        return row

    def rows(self, first: date, last: date, store: int | None = None) -> list[Bought]:
        return [b for b in self.bought if first <= b.day <= last and (store is None or b.store == store)]


def item(sku: str, category: str, quantity: int, amount: int) -> dict:
    return {"sku": sku, "category": category, "quantity": quantity, "amount": amount}


def month_periods(first: date, last: date) -> list[tuple[date, date]]:
    found, day = [], first
    while day <= last:
        following = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
        found.append((day, min(last, following - timedelta(days=1))))
        day = following
    return found


def expected_sales(rows: list[Bought], periods: list[tuple[date, date]]) -> list[dict]:
    out = []
    for start, end in periods:
        inside = [b for b in rows if start <= b.day <= end]
        orders, revenue = len(inside), sum(b.amount for b in inside)
        out.append(
            {
                "start": start.isoformat(),
                "end": end.isoformat(),
                "orders": orders,
                "revenue": revenue,
                "member_revenue": revenue,
                "quantity": sum(i["quantity"] for b in inside for i in b.items),
                "members": len({b.member for b in inside}),
                "average_order_value": revenue // orders if orders else 0,
            }
        )
    return out


def expected_top(rows: list[Bought], key: str) -> list[dict]:
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for b in rows:
        for name in {i[key] for i in b.items}:
            totals[name][2] += 1
        for i in b.items:
            totals[i[key]][0] += i["quantity"]
            totals[i[key]][1] += i["amount"]
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
    return [{"key": k, "quantity": q, "revenue": a, "orders": o} for k, (q, a, o) in ranked]


def expected_frequency(rows: list[Bought]) -> tuple[list[int], list[int]]:
    visits: dict[int, int] = defaultdict(int)
    for b in rows:
        visits[b.member] += 1
    edges = [(1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, 10**9)]
    by_visits = [sum(1 for n in visits.values() if lo <= n <= hi) for lo, hi in edges]
    fen = [0, 2000, 5000, 10000, 20000, 50000, 100000, 10**15]
    by_amount = [sum(1 for b in rows if fen[i] <= b.amount < fen[i + 1]) for i in range(7)]
    return by_visits, by_amount


async def get(client, headers, path: str, **params) -> dict:
    response = await client.get(f"/api/analytics/{path}", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def check_all(world: World, client, headers, first: date, last: date, store: int | None = None) -> None:
    params = {"from": first.isoformat(), "to": last.isoformat(), **({"store_id": store} if store else {})}
    rows = world.rows(first, last, store)
    sales = await get(client, headers, "sales", group="month", **params)
    assert sales["periods"] == expected_sales(rows, month_periods(first, last))
    daily = await get(client, headers, "sales", group="day", **params)
    days = [(first + timedelta(days=n),) * 2 for n in range((last - first).days + 1)]
    assert daily["periods"] == expected_sales(rows, days)
    for by in ("sku", "category"):
        top = await get(client, headers, "top-items", by=by, limit=50, **params)
        assert top["items"] == expected_top(rows, by), by
    frequency = await get(client, headers, "frequency", **params)
    by_visits, by_amount = expected_frequency(rows)
    assert [b["count"] for b in frequency["visits"]] == by_visits
    assert [b["count"] for b in frequency["amounts"]] == by_amount
    assert (frequency["members"], frequency["orders"]) == (len({b.member for b in rows}), len(rows))


async def test_every_endpoint_equals_the_direct_computation(app, client, admin, demo, pinned):
    now = pinned[0]
    today = now.astimezone(ZONE).date()
    second = await add_store(client, admin, code="S801")
    members = [
        (await add_member(client, admin, phone=f"1390000810{n}", store_id=demo.store.id))["id"] for n in range(5)
    ]
    world = World(client, admin, today)
    coffee, bagel, beans = (
        item("latte", "coffee", 2, 6000),
        item("bagel", "food", 1, 1500),
        item("beans", "coffee", 1, 9000),
    )
    await world.buy(members[0], demo.store.id, 1, 0, 7500, [coffee, bagel])  # 00:30 local: the UTC day before
    await world.buy(members[0], demo.store.id, 1, 23, 9000, [beans])
    await world.buy(members[0], second, 3, 12, 1500, [bagel])
    await world.buy(members[0], None, 10, 9, 60000, [item("gift-box", "gifts", 1, 60000)])
    await world.buy(members[1], second, 2, 15, 15000, [coffee, bagel, item("latte", "coffee", 1, 3000)])
    await world.buy(members[1], demo.store.id, 45, 18, 3000, [])
    await world.buy(members[2], demo.store.id, 60, 8, 250000, [item("machine", "gear", 1, 250000)])
    await world.buy(members[3], second, 100, 20, 800, [item("tea", "tea", 1, 800)])  # lost: over 90 days
    for n in range(4):
        await world.buy(members[4], second, 5 + n, 10, 4000 + n, [item("tea", "tea", 2, 4000 + n)])
    span = (max(b.day for b in world.bought) - min(b.day for b in world.bought)).days + 1
    # the first run rebuilds every day from the first purchase to the last
    assert await run_job("analytics.rollup", app.ctx.jobs) == f"rolled up {span} days of 1 merchants"
    touched = len({b.day for b in world.bought})  # the next run: the days of the purchases inside the overlap
    assert await run_job("analytics.rollup", app.ctx.jobs) == f"rolled up {touched} days of 1 merchants"

    first, last = today - timedelta(days=70), today
    await check_all(world, client, admin, first, last)
    await check_all(world, client, admin, first, last, store=second)
    await check_all(world, client, admin, today - timedelta(days=9), today - timedelta(days=2))

    activity = await get(client, admin, "members", **{"from": first.isoformat(), "to": last.isoformat()})
    assert (activity["active"], activity["dormant"], activity["lost"], activity["never"]) == (3, 1, 1, 0)

    later = await world.buy(members[3], demo.store.id, 2, 11, 5200, [item("bagel", "food", 4, 5200)])
    stale = await get(
        client, admin, "sales", group="day", **{"from": later.day.isoformat(), "to": later.day.isoformat()}
    )
    assert stale["periods"][0]["orders"] == len(world.rows(later.day, later.day)) - 1  # not rolled up yet
    await run_job("analytics.rollup", app.ctx.jobs)
    await check_all(world, client, admin, first, last)

    reversed_ = await client.post(f"/api/members/{members[1]}/purchases/A4/reverse", headers=admin)
    assert reversed_.status_code == 200, reversed_.text
    world.bought = [b for b in world.bought if b.order_no != "A4"]
    await run_job("analytics.rollup", app.ctx.jobs)
    await check_all(world, client, admin, first, last)
    await check_all(world, client, admin, first, last, store=second)


async def test_liabilities_are_the_lots_outstanding(app, client, admin, demo, pinned):
    member_id = (await add_member(client, admin, phone="13900008201", store_id=demo.store.id))["id"]
    world = World(client, admin, pinned[0].astimezone(ZONE).date())
    await world.buy(member_id, demo.store.id, 3, 12, 12000)
    await world.buy(member_id, demo.store.id, 2, 12, 5000)
    for kind, fen, key in (("recharge", 10000, "sv-1"), ("gift", 2000, "sv-2")):
        body = {"delta": fen, "reason": kind, "idempotency_key": key, "kind": kind}
        assert (await client.post(f"/api/members/{member_id}/balance", json=body, headers=admin)).status_code == 200
    found = await get(client, admin, "liabilities")
    assert (found["stored_value_principal"], found["stored_value_bonus"], found["points"]) == (10000, 2000, 17)
    assert len(found["expiring"]) == 12
    assert sum(e["points"] for e in found["expiring"]) in (0, 17)  # a year ahead: the 12th month or just past it
    assert all(e["points"] == 0 for e in found["expiring"][:10])


async def test_periods_are_validated(client, admin):
    for first, last in (("2026-03-02", "2026-03-01"), ("2024-01-01", "2026-01-01")):
        response = await client.get("/api/analytics/sales", params={"from": first, "to": last}, headers=admin)
        assert response.status_code == 422, response.text
        assert error_of(response)["code"].startswith("analytics.range")
    ok = await client.get(
        "/api/analytics/sales", params={"from": "2024-01-01", "to": "2025-12-31", "group": "month"}, headers=admin
    )
    assert ok.status_code == 200 and len(ok.json()["periods"]) == 24
    week = await client.get(
        "/api/analytics/sales", params={"from": "2026-11-25", "to": "2026-12-03", "group": "week"}, headers=admin
    )
    assert [(p["start"], p["end"]) for p in week.json()["periods"]] == [
        ("2026-11-25", "2026-11-29"), ("2026-11-30", "2026-12-03"),
    ]  # fmt: skip
    bad = await client.get(
        "/api/analytics/sales", params={"from": "2026-11-25", "to": "2026-12-03", "group": "year"}, headers=admin
    )
    assert bad.status_code == 422


async def test_a_store_role_sees_only_its_store(app, client, admin, demo, pinned):
    second = await add_store(client, admin, code="S802")
    manager = await add_staff(client, admin, username="mgr-802", role="store_manager", store_id=second)
    member_id = (await add_member(client, admin, phone="13900008301", store_id=demo.store.id))["id"]
    world = World(client, admin, pinned[0].astimezone(ZONE).date())
    await world.buy(member_id, demo.store.id, 1, 12, 12000, [item("latte", "coffee", 1, 12000)])
    await world.buy(member_id, second, 1, 13, 3000, [item("tea", "tea", 1, 3000)])
    await run_job("analytics.rollup", app.ctx.jobs)
    first, last = world.today - timedelta(days=3), world.today
    params = {"from": first.isoformat(), "to": last.isoformat()}
    mine = await get(client, manager, "sales", group="month", **params)
    assert (mine["store_id"], sum(p["revenue"] for p in mine["periods"])) == (second, 3000)
    await check_all(world, client, manager, first, last, store=second)
    assert [i["key"] for i in (await get(client, manager, "top-items", **params))["items"]] == ["tea"]
    assert (
        await client.get("/api/analytics/sales", params={**params, "store_id": demo.store.id}, headers=manager)
    ).status_code == 403
    assert (await client.get("/api/analytics/liabilities", headers=manager)).status_code == 403
    foreign = await other_merchant()
    response = await client.get(
        "/api/analytics/frequency", params={**params, "store_id": foreign.store.id}, headers=admin
    )
    assert response.status_code == 404, response.text


async def test_renewal_counts_the_terms_that_ended_in_the_range(app, client, admin, demo):
    plan = await add_plan(client, admin, code="PLUS-M", period="month")
    buyers = [await paying_member(app, merchant_id=demo.merchant.id, mp_openid=f"o_mp_an{n}") for n in range(3)]
    start = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai; month terms end on 2026-04-10

    async def buy_term(headers: dict) -> None:
        await use_pay_version("v2")  # its notify carries no timestamp, so the clock can be pinned
        order = (await buy_plan(client, headers, plan["id"]))["order"]
        await pay(client, order["out_trade_no"])

    try:
        clock.set_clock(lambda: start)
        for _, headers in buyers:
            await buy_term(headers)
        later = start + timedelta(days=35)
        clock.set_clock(lambda: later)
        await buy_term(buyers[0][1])  # one member renews late
        found = await get(client, admin, "members", **{"from": "2026-04-01", "to": "2026-04-30"})
        assert (found["plan_terms_ended"], found["plan_renewed"], found["renewal_rate_permille"]) == (3, 1, 333)
        assert (found["never"], found["active"]) == (3, 0)
        before = await get(client, admin, "members", **{"from": "2026-03-01", "to": "2026-04-09"})
        assert (before["plan_terms_ended"], before["renewal_rate_permille"]) == (0, None)
    finally:
        clock.set_clock(None)


async def test_the_job_finds_rows_by_time_late_stamps_and_silent_reversals(app, client, admin, demo, pinned):
    """No id order: a purchase stamped before the last run is still read, and a reversal that left no ledger row
    (nothing earned) is read by purchase.reversed_at."""
    now = pinned[0]
    member_id = (await add_member(client, admin, phone="13900008401", store_id=demo.store.id))["id"]
    world = World(client, admin, now.astimezone(ZONE).date())
    await world.buy(member_id, demo.store.id, 3, 12, 9000, [item("latte", "coffee", 1, 9000)])
    await run_job("analytics.rollup", app.ctx.jobs)
    first, last = world.today - timedelta(days=5), world.today
    await check_all(world, client, admin, first, last)

    pinned[0] = now - timedelta(minutes=2)  # its transaction took the time before that run and committed after
    at = datetime.combine(world.today - timedelta(days=1), time(12, 0), tzinfo=ZONE).astimezone(UTC)
    body = {"order_no": "SMALL", "amount": 50, "occurred_at": at.isoformat(), "items": []}
    response = await client.post(f"/api/members/{member_id}/purchases", json=body, headers=admin)
    assert response.status_code == 201, response.text
    assert (response.json()["points"], response.json()["growth"]) == (0, 0)  # no ledger row to see it by
    world.bought.append(Bought("SMALL", member_id, demo.store.id, world.today - timedelta(days=1), 50))
    pinned[0] = now + timedelta(seconds=30)
    await run_job("analytics.rollup", app.ctx.jobs)
    await check_all(world, client, admin, first, last)

    reversed_ = await client.post(f"/api/members/{member_id}/purchases/SMALL/reverse", headers=admin)
    assert reversed_.status_code == 200, reversed_.text
    world.bought = [b for b in world.bought if b.order_no != "SMALL"]
    pinned[0] = now + timedelta(seconds=60)
    await run_job("analytics.rollup", app.ctx.jobs)
    await check_all(world, client, admin, first, last)
