"""Rule tags: checked at creation (422 with the path), kept current after purchases and tier moves, nightly."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from jobs.outbox import deliver_due
from jobs.scheduler import run_job
from models.kernel.outbox import OutboxMessage
from models.segments.tables import MemberTag, Tag
from server import wiring
from server.seed import DEV_ADMIN_PASSWORD
from tests.conftest import login
from tests.helpers import add_member, error_of

SHANGHAI = ZoneInfo("Asia/Shanghai")
GOLD_SPENDERS = {
    "all": [
        {"field": "tier", "op": "in", "value": ["gold"]},
        {"field": "purchase_amount", "op": "gte", "value": 50000, "window_days": 30},
    ]
}


async def deliver(app) -> int:
    return await deliver_due(gateway=app.ctx.wechat, topics=wiring.OUTBOX_TOPICS)


async def add_tiers(client, headers) -> None:
    for tier in (
        {"code": "silver", "name": "银卡", "rank": 0, "threshold": 0},
        {"code": "gold", "name": "金卡", "rank": 1, "threshold": 600},
    ):
        response = await client.post("/api/tiers", json=tier, headers=headers)
        assert response.status_code == 201, response.text


async def rule_tag(client, headers, rule, code: str = "gold500") -> dict:
    body = {"code": code, "name": code, "kind": "rule", "rule": rule}
    response = await client.post("/api/tags", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def tagged(tag_id: int) -> set[int]:
    return set(await MemberTag.filter(tag_id=tag_id).values_list("member_id", flat=True))


async def buy(client, headers, member_id: int, order_no: str, amount: int) -> None:
    response = await client.post(
        f"/api/members/{member_id}/purchases", json={"order_no": order_no, "amount": amount}, headers=headers
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("rule", "field", "code"),
    [
        (
            {"all": [{"field": "gender", "op": "eq", "value": "male"}, {"field": "shoe"}]},
            "rule.all.1.field",
            "rule.unknown_field",
        ),
        (
            {"all": [{"field": "age", "op": "gte", "value": 18}, {"field": "age", "op": "eq", "value": 3}]},
            "rule.all.1.op",
            "rule.unknown_op",
        ),
        ({"any": [{"field": "balance", "op": "gte", "value": "100"}]}, "rule.any.0.value", "rule.invalid"),
        ({"none": [{"field": "tier", "op": "in", "value": ["platinum"]}]}, "rule.none.0.value.0", "rule.unknown_tier"),
        ({"field": "origin_store", "op": "in", "value": [987654]}, "rule.value.0", "rule.unknown_store"),
        ({"field": "custom.shoe_size", "op": "eq", "value": 42}, "rule.field", "rule.unknown_field"),
        ({"field": "custom.level", "op": "eq", "value": "diamond"}, "rule.value", "rule.invalid"),
        ({"field": "custom.level", "op": "gte", "value": "gold"}, "rule.op", "rule.unknown_op"),
        ({"field": "balance", "op": "gte", "value": 1, "window_days": 30}, "rule.window_days", "rule.invalid"),
        ({"field": "age", "op": "between", "value": [40, 20]}, "rule.value", "rule.invalid"),
        ({"all": []}, "rule.all", "rule.invalid"),
        (
            {"all": [{"any": [{"field": "subscribed", "op": "eq", "value": 1}]}]},
            "rule.all.0.any.0.value",
            "rule.invalid",
        ),
        ({"field": "age", "op": "gte", "value": 18, "and": 1}, "rule.and", "rule.invalid"),
    ],
)
async def test_a_bad_rule_is_422_with_its_path_and_nothing_is_written(client, admin, rule, field, code):
    await add_tiers(client, admin)
    level = {"key": "level", "label": "Level", "type": "enum", "options": ["gold", "silver"]}
    assert (await client.post("/api/member-fields", json=level, headers=admin)).status_code == 201
    response = await client.post(
        "/api/tags", json={"code": "t", "name": "t", "kind": "rule", "rule": rule}, headers=admin
    )
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert (error["code"], error["field"]) == (code, field)
    assert await Tag.all().count() == 0
    assert await OutboxMessage.filter(topic="segments.evaluate_tag").count() == 0


async def test_gold_members_who_spent_500_yuan_in_30_days_exactly_as_the_rule_says(app, client, admin, demo, pinned):
    await add_tiers(client, admin)
    assigned = await add_member(client, admin, phone="13800000001")
    earner = await add_member(client, admin, phone="13800000002")
    bystander = await add_member(client, admin, phone="13800000003")
    tag = await rule_tag(client, admin, GOLD_SPENDERS)
    assert tag["rule"]["all"][0]["value"] != ["gold"]  # kept by tier id
    await deliver(app)
    assert await tagged(tag["id"]) == set()

    # gold by assignment, then 400 + 100 yuan: tagged only once the 500 are reached, and only after the commit
    until = (pinned[0] + timedelta(days=90)).date().isoformat()
    hold = {"tier_code": "gold", "reason": "vip", "until": until}
    assert (await client.post(f"/api/members/{assigned['id']}/tier", json=hold, headers=admin)).status_code == 201
    await buy(client, admin, assigned["id"], "A1", 40000)
    await deliver(app)
    assert await tagged(tag["id"]) == set()
    await buy(client, admin, assigned["id"], "A2", 10000)
    assert await tagged(tag["id"]) == set()  # queued, not evaluated in the purchase's transaction
    assert await OutboxMessage.filter(topic="segments.member_changed", status="pending").count() == 1
    await deliver(app)
    assert await tagged(tag["id"]) == {assigned["id"]}

    # 600 yuan at once: the growth makes the member gold, and the tag follows
    await buy(client, admin, earner["id"], "E1", 60000)
    await buy(client, admin, bystander["id"], "B1", 50000)  # spent enough, but silver
    await deliver(app)
    assert await tagged(tag["id"]) == {assigned["id"], earner["id"]}

    listed = (await client.get(f"/api/members/{earner['id']}/tags", headers=admin)).json()["items"]
    assert [(t["code"], t["source"], t["added_by"]) for t in listed] == [("gold500", "rule", None)]
    assert listed[0]["rule"] == tag["rule"]
    events = (await client.get(f"/api/members/{earner['id']}/timeline", headers=admin)).json()["items"]
    assert [(e["kind"], e["actor"], e["detail"]["source"]) for e in events if e["kind"].startswith("tag_")] == [
        ("tag_added", "system", "rule")
    ]

    # 30 days later the purchases of day 0 are still in the window (today and the 29 days before: no)
    pinned[0] += timedelta(days=29)
    assert await run_job("segments.refresh", app.ctx.jobs) == ("1 rule tags refreshed: 3 member checks, +0 -0")
    assert await tagged(tag["id"]) == {assigned["id"], earner["id"]}
    pinned[0] += timedelta(days=2)
    assert await run_job("segments.refresh", app.ctx.jobs) == ("1 rule tags refreshed: 3 member checks, +0 -2")
    assert await tagged(tag["id"]) == set()
    admin = await login(client, demo.admin_username, DEV_ADMIN_PASSWORD)
    events = (await client.get(f"/api/members/{assigned['id']}/timeline", headers=admin)).json()["items"]
    assert [e["kind"] for e in events if e["kind"].startswith("tag_")] == ["tag_removed", "tag_added"]

    # a fresh purchase brings the member back at once
    await buy(client, admin, earner["id"], "E2", 50000)
    await deliver(app)
    assert await tagged(tag["id"]) == {earner["id"]}


async def test_every_field_compiles_and_matches_on_this_backend(app, client, admin, demo, pinned):
    await add_tiers(client, admin)
    fields_in = [
        {"key": "level", "label": "Level", "type": "enum", "options": ["gold", "silver"]},
        {"key": "shoe", "label": "Shoe", "type": "int"},
        {"key": "vegan", "label": "Vegan", "type": "bool"},
        {"key": "since", "label": "Since", "type": "date"},
        {"key": "nick", "label": "Nick", "type": "string"},
    ]
    for definition in fields_in:
        assert (await client.post("/api/member-fields", json=definition, headers=admin)).status_code == 201
    custom = {"level": "gold", "shoe": 42, "vegan": True, "since": "2020-05-01", "nick": "小李"}
    today = pinned[0].astimezone(SHANGHAI).date()
    later = today + timedelta(days=3)  # the day the rule is evaluated
    born = later.replace(year=later.year - 36, day=min(later.day, 28))  # 36 on that day
    member = await add_member(
        client,
        admin,
        phone="13800000001",
        gender="female",
        birthday=born.isoformat(),
        store_id=demo.store.id,
        custom_fields=custom,
    )
    other = await add_member(client, admin, phone="13800000002", gender="male", birthday="2010-01-01")
    await buy(client, admin, member["id"], "M1", 30000)
    pinned[0] += timedelta(days=3)
    admin = await login(client, demo.admin_username, DEV_ADMIN_PASSWORD)
    await buy(client, admin, member["id"], "M2", 10000)
    recharge = {"delta": 8800, "kind": "recharge", "reason": "储值", "idempotency_key": "b1"}
    assert (await client.post(f"/api/members/{member['id']}/balance", json=recharge, headers=admin)).status_code == 200
    rule = {
        "all": [
            {"field": "gender", "op": "in", "value": ["female", "unknown"]},
            {"field": "age", "op": "between", "value": [36, 36]},
            {"field": "birthday_month", "op": "eq", "value": born.month},
            {"field": "birthday_month", "op": "in", "value": ["this_month"]},
            {"field": "tier", "op": "in", "value": ["silver", "gold"]},
            {"field": "origin_store", "op": "in", "value": [demo.store.id]},
            {
                "field": "registered_at",
                "op": "between",
                "value": [(today - timedelta(days=1)).isoformat(), today.isoformat()],
            },
            {"field": "registered_days_ago", "op": "between", "value": [3, 3]},
            {"field": "source", "op": "in", "value": ["staff"]},
            {"field": "subscribed", "op": "eq", "value": False},
            {"field": "card_activated", "op": "eq", "value": False},
            {"field": "last_purchase_days_ago", "op": "lte", "value": 0},
            {"field": "purchase_count", "op": "between", "value": [2, 2]},
            {"field": "purchase_count", "op": "lte", "value": 1, "window_days": 1},
            {"field": "purchase_amount", "op": "gte", "value": 40000},
            {"field": "avg_order_value", "op": "between", "value": [20000, 20000]},
            {"field": "points_balance", "op": "gte", "value": 40},
            {"field": "points_expiring_within", "op": "within", "value": {"days": 400, "gte": 40}},
            {"field": "balance", "op": "gte", "value": 8800},
            {"field": "plan_active", "op": "eq", "value": False},
            {"field": "coupons_used_within", "op": "lte", "value": 0, "window_days": 30},
            {"field": "coupons_usable", "op": "lte", "value": 0},
            {"field": "custom.level", "op": "in", "value": ["gold"]},
            {"field": "custom.shoe", "op": "between", "value": [40, 44]},
            {"field": "custom.vegan", "op": "eq", "value": True},
            {"field": "custom.since", "op": "lte", "value": "2021-01-01"},
            {"field": "custom.nick", "op": "eq", "value": "小李"},
            {"none": [{"field": "last_purchase_days_ago", "op": "gte", "value": 1}]},
        ]
    }
    tag = await rule_tag(client, admin, rule, code="everything")
    await deliver(app)
    assert await tagged(tag["id"]) == {member["id"]}
    assert other["id"] not in await tagged(tag["id"])

    # one condition turned around: nobody
    rule["all"][1] = {"field": "age", "op": "gte", "value": 37}
    assert (
        await client.post("/api/tags", json={"code": "older", "name": "o", "kind": "rule", "rule": rule}, headers=admin)
    ).status_code == 201
    await deliver(app)
    assert await tagged((await Tag.get(code="older")).id) == set()

    # a profile edit re-evaluates the member after its commit
    edit = await client.patch(f"/api/members/{member['id']}", json={"gender": "male"}, headers=admin)
    assert edit.status_code == 200, edit.text
    await deliver(app)
    assert await tagged(tag["id"]) == set()


async def test_an_archived_rule_tag_stands_still_and_catches_up_when_restored(app, client, admin):
    member = await add_member(client, admin, phone="13800000001")
    tag = await rule_tag(client, admin, {"field": "balance", "op": "gte", "value": 100}, code="wallet")
    await deliver(app)
    archived = await client.patch(f"/api/tags/{tag['id']}", json={"archived": True}, headers=admin)
    assert archived.json()["status"] == "archived"
    recharge = {"delta": 100, "kind": "recharge", "reason": "储值", "idempotency_key": "b1"}
    assert (await client.post(f"/api/members/{member['id']}/balance", json=recharge, headers=admin)).status_code == 200
    await deliver(app)
    assert await tagged(tag["id"]) == set()
    await client.patch(f"/api/tags/{tag['id']}", json={"archived": False}, headers=admin)
    await deliver(app)
    assert await tagged(tag["id"]) == {member["id"]}
