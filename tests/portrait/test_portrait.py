"""The member portrait through HTTP: every figure against a hand computation, RFM after the nightly job, scope."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from jobs.scheduler import run_job
from models.kernel import clock
from server.seed import DEV_ADMIN_PASSWORD
from tests.conftest import login
from tests.coupons.helpers import add_template
from tests.helpers import add_member, add_staff, add_store, error_of
from tests.packages.helpers import template as package_template
from tests.packages.helpers import use


@pytest.fixture
def pinned() -> Iterator[list[datetime]]:
    now = [datetime.now(UTC).replace(microsecond=0)]
    clock.set_clock(lambda: now[0])
    try:
        yield now
    finally:
        clock.set_clock(None)


async def buy(client, headers, member_id: int, order_no: str, amount: int, at: datetime, **body) -> None:
    payload = {"order_no": order_no, "amount": amount, "occurred_at": at.isoformat(), **body}
    response = await client.post(f"/api/members/{member_id}/purchases", json=payload, headers=headers)
    assert response.status_code in (200, 201), response.text


async def portrait(client, headers, member_id: int) -> dict:
    response = await client.get(f"/api/members/{member_id}/portrait", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_every_figure_of_the_portrait_is_the_hand_computation(app, client, admin, demo, pinned):
    other_store = await add_store(client, admin, code="S902")
    member_id = (await add_member(client, admin, phone="13900007001", store_id=demo.store.id))["id"]
    start = pinned[0]
    coffee2_bagel = [
        {"sku": "latte", "category": "coffee", "amount": 8000, "quantity": 2},
        {"sku": "bagel", "category": "food", "amount": 4000, "quantity": 1},
    ]
    # 1 point per 1000 fen (the default rule); these lots expire a year after `start`
    await buy(client, admin, member_id, "P0", 1000, start - timedelta(days=60), store_id=demo.store.id,
              items=[{"sku": "tea", "category": "tea", "amount": 1000, "quantity": 1}])  # fmt: skip
    await buy(client, admin, member_id, "P1", 12000, start - timedelta(hours=1), store_id=demo.store.id,
              items=coffee2_bagel)  # fmt: skip
    await buy(client, admin, member_id, "P2", 5000, start - timedelta(hours=2), store_id=other_store,
              items=[{"sku": "latte", "category": "coffee", "amount": 5000, "quantity": 1}])  # fmt: skip
    pinned[0] = now = start + timedelta(days=340)  # P0-P2's points now expire within 30 days; P0 is 400 days old
    admin = await login(client, demo.admin_username, DEV_ADMIN_PASSWORD)  # the first token expired meanwhile
    await buy(client, admin, member_id, "P3", 30000, now - timedelta(days=3), store_id=demo.store.id,
              items=[{"sku": "beans", "category": "coffee", "amount": 30000, "quantity": 3}])  # fmt: skip
    await buy(client, admin, member_id, "P4", 2000, now - timedelta(days=1), store_id=other_store, items=[])
    reversed_ = await client.post(f"/api/members/{member_id}/purchases/P4/reverse", headers=admin)
    assert reversed_.status_code == 200, reversed_.text
    for kind, fen, key in (("recharge", 10000, "sv-1"), ("gift", 2000, "sv-2")):
        body = {"delta": fen, "reason": kind, "idempotency_key": key, "kind": kind}
        assert (await client.post(f"/api/members/{member_id}/balance", json=body, headers=admin)).status_code == 200
    coupon_template = await add_template(client, admin)
    grant = {"template_id": coupon_template["id"], "idempotency_key": "c-1"}
    coupon = (await client.post(f"/api/members/{member_id}/coupons", json=grant, headers=admin)).json()
    package_tpl = await package_template(client, admin)
    sale = {
        "template_id": package_tpl["id"],
        "idempotency_key": "pk-1",
        "payments": [{"method": "cash", "amount": 30000}],
    }
    package = await client.post(f"/api/members/{member_id}/packages", json=sale, headers=admin)
    assert package.status_code == 201, package.text
    assert (await use(client, admin, member_id, package.json()["id"], "visit-1")).status_code == 201

    body = await portrait(client, admin, member_id)

    attributes = body["attributes"]
    assert (attributes["id"], attributes["phone"], attributes["source"]) == (member_id, "13900007001", "staff")
    assert attributes["origin_store"] == {"id": demo.store.id, "name": demo.store.name}
    assert (attributes["subscribed"], attributes["card"]) == (False, None)
    assert attributes["points"] == 1 + 12 + 5 + 30 and attributes["balance"] == 12000
    assets = body["assets"]
    assert assets["points"]["balance"] == 48
    assert assets["points"]["expiring_30d"] == 1 + 12 + 5  # P3's lot is a year away, P4's taken back
    assert assets["stored_value"] == {"balance": 12000, "principal": 10000, "bonus": 2000}
    assert assets["coupons"]["usable"] == 1
    assert [(c["coupon_id"], c["name"]) for c in assets["coupons"]["soonest"]] == [(coupon["id"], "100-20")]
    assert assets["tier"] == (await client.get(f"/api/members/{member_id}/tier", headers=admin)).json()
    assert assets["plan"] is None
    assert [(p["name"], p["uses_total"], p["uses_left"]) for p in assets["packages"]] == [("10 haircuts", 10, 9)]

    rfm = body["rfm"]  # P1-P3 in the 12 months (P0 is older, P4 reversed); no job run yet: no scores
    assert (rfm["recency_days"], rfm["frequency"], rfm["monetary"]) == (3, 3, 12000 + 5000 + 30000)
    assert [rfm[k] for k in ("recency_score", "frequency_score", "monetary_score", "segment", "computed_at")] == [
        None, None, None, None, None,
    ]  # fmt: skip

    prefs = body["preferences"]
    assert prefs["purchases_read"] == 4
    assert [(s["store_id"], s["visits"], s["amount"]) for s in prefs["stores"]] == [
        (demo.store.id, 3, 1000 + 12000 + 30000),
        (other_store, 1, 5000),
    ]
    assert [(c["key"], c["quantity"], c["amount"]) for c in prefs["categories"]] == [
        ("coffee", 6, 43000), ("food", 1, 4000), ("tea", 1, 1000),
    ]  # fmt: skip
    assert [(s["key"], s["quantity"], s["amount"]) for s in prefs["skus"]] == [
        ("beans", 3, 30000), ("latte", 3, 13000), ("bagel", 1, 4000), ("tea", 1, 1000),
    ]  # fmt: skip
    zone = ZoneInfo(demo.merchant.timezone or "Asia/Shanghai")
    moments = [
        start - timedelta(days=60),
        start - timedelta(hours=1),
        start - timedelta(hours=2),
        now - timedelta(days=3),
    ]
    weekdays, hours = [0] * 7, [0] * 24
    for moment in moments:
        weekdays[moment.astimezone(zone).weekday()] += 1
        hours[moment.astimezone(zone).hour] += 1
    assert (prefs["weekdays"], prefs["hours"]) == (weekdays, hours)

    timeline = await client.get(f"/api/members/{member_id}/timeline", params={"limit": 20}, headers=admin)
    assert body["timeline"] == timeline.json()["items"] and body["timeline"][-1]["kind"] == "registered"
    assert body["tags"] == []

    # a manual tag shows on the portrait with who added it (the timeline gains its tag_added event)
    vip = await client.post("/api/tags", json={"code": "vip", "name": "VIP", "kind": "manual"}, headers=admin)
    assert vip.status_code == 201, vip.text
    added = await client.post(f"/api/members/{member_id}/tags", json={"tag_id": vip.json()["id"]}, headers=admin)
    assert added.status_code in (200, 201), added.text
    tagged = (await client.get(f"/api/members/{member_id}/portrait", headers=admin)).json()
    assert [(t["code"], t["source"], t["rule"], t["added_by"] is not None) for t in tagged["tags"]] == [
        ("vip", "manual", None, True)
    ]
    assert tagged["timeline"][0]["kind"] == "tag_added"


# member i of 10 buys i times 1000*i fen, the last purchase i days ago: nearest-rank cuts at ranks 2, 4, 6, 8
# recency days [2, 4, 6, 8], frequency [2, 4, 6, 8], monetary [4000, 16000, 36000, 64000]
EXPECTED = {
    1: (5, 1, 1, "general_develop", "一般发展客户"),
    2: (5, 1, 1, "general_develop", "一般发展客户"),
    3: (4, 2, 2, "general_develop", "一般发展客户"),
    4: (4, 2, 2, "general_develop", "一般发展客户"),
    5: (3, 3, 3, "important_value", "重要价值客户"),
    6: (3, 3, 3, "important_value", "重要价值客户"),
    7: (2, 4, 4, "important_keep", "重要保持客户"),
    8: (2, 4, 4, "important_keep", "重要保持客户"),
    9: (1, 5, 5, "important_keep", "重要保持客户"),
    10: (1, 5, 5, "important_keep", "重要保持客户"),
}


async def test_rfm_scores_and_segments_after_the_nightly_job(app, client, admin, demo, pinned):
    now = pinned[0]
    members = {}
    for i in range(1, 11):
        members[i] = (await add_member(client, admin, phone=f"1390000800{i - 1}" if i < 10 else "13900008010"))["id"]
        for k in range(i):
            await buy(client, admin, members[i], f"R{i}-{k}", 1000 * i, now - timedelta(days=i, hours=k))
    idle = (await add_member(client, admin, phone="13900008099"))["id"]
    before = (await portrait(client, admin, members[5]))["rfm"]
    assert (before["recency_score"], before["computed_at"]) == (None, None)

    assert await run_job("portrait.rfm_cuts", app.ctx.jobs) == "rfm cuts of 1 merchants"

    for i, (r, f, m, code, name) in EXPECTED.items():
        rfm = (await portrait(client, admin, members[i]))["rfm"]
        assert (rfm["recency_days"], rfm["frequency"], rfm["monetary"]) == (i, i, 1000 * i * i)
        got = (rfm["recency_score"], rfm["frequency_score"], rfm["monetary_score"], rfm["segment"])
        assert got == (r, f, m, {"code": code, "name": name}), i
        assert rfm["member_count"] == 10
        assert datetime.fromisoformat(rfm["computed_at"]) == now
    lazy = (await portrait(client, admin, idle))["rfm"]
    assert (lazy["recency_days"], lazy["frequency"], lazy["monetary"]) == (None, 0, 0)
    assert (lazy["recency_score"], lazy["frequency_score"], lazy["monetary_score"]) == (1, 1, 1)
    assert lazy["segment"] == {"code": "general_retain", "name": "一般挽留客户"}


async def test_store_roles_read_only_their_stores_members(client, admin, demo):
    other_store = await add_store(client, admin, code="S903")
    member_id = (await add_member(client, admin, phone="13900009001", store_id=demo.store.id))["id"]
    theirs = await add_staff(client, admin, username="cash-theirs", role="cashier", store_id=other_store)
    ours = await add_staff(client, admin, username="cash-ours", role="cashier", store_id=demo.store.id)
    hidden = await client.get(f"/api/members/{member_id}/portrait", headers=theirs)
    assert (hidden.status_code, error_of(hidden)["code"]) == (404, "member.not_found")
    assert (await portrait(client, ours, member_id))["attributes"]["id"] == member_id
    missing = await client.get("/api/members/999999/portrait", headers=admin)
    assert missing.status_code == 404
    assert (await client.get(f"/api/members/{member_id}/portrait")).status_code == 401


async def test_a_run_over_no_purchases_stores_no_cuts_and_the_scores_stay_null(app, client, admin, demo, pinned):
    member_id = (await add_member(client, admin, phone="13900009101"))["id"]
    await buy(client, admin, member_id, "OLD-1", 5000, pinned[0] - timedelta(days=366))  # outside the 12 months
    assert await run_job("portrait.rfm_cuts", app.ctx.jobs) == "rfm cuts of 1 merchants"
    rfm = (await portrait(client, admin, member_id))["rfm"]
    assert (rfm["recency_days"], rfm["frequency"], rfm["monetary"], rfm["member_count"]) == (None, 0, 0, 0)
    assert (rfm["recency_score"], rfm["segment"]) == (None, None)
    assert datetime.fromisoformat(rfm["computed_at"]) == pinned[0]
