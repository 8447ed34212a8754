"""Tiers over HTTP: the ladder's validation, policy, explanations, manual holds, notices, plans and the card name."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jobs.scheduler import run_job
from models.kernel import clock
from models.kernel.outbox import OutboxMessage
from models.plans.terms import MemberPlan, PaidPlan
from models.tiers.earning import add_growth
from models.tiers.growth import growth_for_amount
from models.tiers.standing import points_multiplier_permille, reevaluate, tier_name
from models.tiers.tables import MemberTier, Tier, TierChange
from tests.cards.helpers import calls, deliver
from tests.helpers import add_staff, error_of
from tests.tiers.helpers import (
    lasting,
    member_token,
    new_member,
    pending_tier_syncs,
    pin,
    put_policy,
    standard_tiers,
    tier_body,
)


@pytest.fixture(autouse=True)
def _unpin():
    yield
    clock.set_clock(None)


@pytest.fixture
def admin(app, admin):
    return lasting(app, admin)


async def _grow(merchant_id: int, member_id: int, delta: int, key: str) -> bool:
    return await add_growth(
        merchant_id=merchant_id, member_id=member_id, delta=delta, kind="activity", reason="test", idempotency_key=key
    )


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (tier_body("silver2", 3, 1000), 422, "tier.threshold_overlap", "threshold"),  # same as silver
        (tier_body("between", 3, 800), 422, "tier.threshold_overlap", "threshold"),  # rank above gold, lower
        (tier_body("entry", 0, 0), 409, "tier.rank_taken", "rank"),
        (tier_body("silver", 5, 9000), 409, "tier.code_taken", "code"),
        (
            tier_body("zero", 4, 9000, points_multiplier_permille=0),
            422,
            "validation.failed",
            "points_multiplier_permille",
        ),
        (
            tier_body("neg", 4, 9000, points_multiplier_permille=-5),
            422,
            "validation.failed",
            "points_multiplier_permille",
        ),
        (tier_body("free", 4, 9000, discount_permille=0), 422, "validation.failed", "discount_permille"),
        (tier_body("bad code!", 4, 9000), 422, "validation.failed", "code"),
    ],
)
async def test_bad_tiers_are_refused_and_nothing_is_written(client, admin, body, status, code, field):
    await standard_tiers(client, admin)
    response = await client.post("/api/tiers", json=body, headers=admin)
    assert response.status_code == status, response.text
    assert (error_of(response)["code"], error_of(response)["field"]) == (code, field)
    assert await Tier.all().count() == 3


async def test_entry_tier_starts_at_zero_and_updates_keep_the_ladder(client, admin):
    response = await client.post("/api/tiers", json=tier_body("normal", 0, 10), headers=admin)
    assert response.status_code == 422
    assert error_of(response)["code"] == "tier.threshold_overlap"
    tiers = await standard_tiers(client, admin)
    squeeze = await client.put(f"/api/tiers/{tiers['gold']['id']}", json=tier_body("gold", 2, 900), headers=admin)
    assert squeeze.status_code == 422
    assert (await Tier.get(id=tiers["gold"]["id"])).threshold == 5000
    moved = await client.put(
        f"/api/tiers/{tiers['gold']['id']}", json=tier_body("gold", 2, 6000, discount_permille=880), headers=admin
    )
    assert moved.status_code == 200, moved.text
    assert (moved.json()["threshold"], moved.json()["discount_permille"]) == (6000, 880)
    listed = await client.get("/api/tiers", headers=admin)
    assert [t["code"] for t in listed.json()["items"]] == ["normal", "silver", "gold"]
    missing = await client.put("/api/tiers/999999", json=tier_body("x", 9, 99999), headers=admin)
    assert missing.status_code == 404


async def test_only_admins_edit_tiers_and_policy(client, admin, demo):
    cashier = await add_staff(client, admin, username="cashier1", role="cashier", store_id=demo.store.id)
    assert (await client.post("/api/tiers", json=tier_body("normal", 0, 0), headers=cashier)).status_code == 403
    assert (await client.put("/api/loyalty/tier-policy", json={}, headers=cashier)).status_code == 403
    assert (await client.get("/api/loyalty/tier-policy", headers=cashier)).status_code == 200


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"basis": "vibes"}, "basis"),
        ({"fen_per_growth": 0}, "fen_per_growth"),
        ({"gift_period": "forever"}, "gift_period"),
        ({"grace_months": -1}, "grace_months"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_policy_is_422_with_the_field(client, admin, policy, field):
    response = await client.put("/api/loyalty/tier-policy", json=policy, headers=admin)
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field
    assert (await client.get("/api/loyalty/tier-policy", headers=admin)).json()["basis"] == "rolling_12m_growth"


async def test_growth_per_amount_follows_the_policy_and_replays_are_false(client, admin, demo):
    assert await growth_for_amount(merchant_id=demo.merchant.id, amount=12_345) == 123
    await put_policy(client, admin, fen_per_growth=1000)
    assert await growth_for_amount(merchant_id=demo.merchant.id, amount=12_345) == 12
    assert await growth_for_amount(merchant_id=demo.merchant.id, amount=0) == 0
    member_id = await new_member(client, admin, merchant_id=demo.merchant.id, phone="13900000200")
    assert await _grow(demo.merchant.id, member_id, 7, "g1") is True
    assert await _grow(demo.merchant.id, member_id, 7, "g1") is False
    assert (await MemberTier.get(member_id=member_id)).growth_total == 7


async def test_merchant_without_tiers_behaves_as_before(client, admin, demo):
    member_id = await new_member(client, admin, merchant_id=demo.merchant.id, phone="13900000201", card=True)
    assert await _grow(demo.merchant.id, member_id, 5000, "g-none") is True
    assert await TierChange.all().count() == 0
    assert await tier_name(merchant_id=demo.merchant.id, member_id=member_id) == "普通会员"
    assert await points_multiplier_permille(merchant_id=demo.merchant.id, member_id=member_id) == 1000
    view = (await client.get(f"/api/members/{member_id}/tier", headers=admin)).json()
    assert (view["tier"], view["next_tier"], view["growth_lifetime"]) == (None, None, 5000)


async def test_member_sees_their_tier_and_the_card_shows_its_name(app, client, admin, demo):
    await standard_tiers(client, admin)
    member_id = await new_member(client, admin, merchant_id=demo.merchant.id, phone="13900000202", card=True)
    pin("2027-06-30 20:00")
    assert await tier_name(merchant_id=demo.merchant.id, member_id=member_id) == "Normal"
    await _grow(demo.merchant.id, member_id, 1200, "g-202")
    assert await pending_tier_syncs(member_id) == 1
    assert await tier_name(merchant_id=demo.merchant.id, member_id=member_id) == "Silver"
    assert await points_multiplier_permille(merchant_id=demo.merchant.id, member_id=member_id) == 1200
    mine = await client.get(
        "/api/mp/me/tier", headers=member_token(app, member_id=member_id, merchant_id=demo.merchant.id)
    )
    assert mine.status_code == 200, mine.text
    body = mine.json()
    assert (body["tier"]["code"], body["tier"]["discount_permille"], body["basis"]) == (
        "silver",
        950,
        "rolling_12m_growth",
    )
    assert (body["growth_12m"], body["next_tier"]["code"], body["needed"], body["next_settlement"]) == (
        1200,
        "gold",
        3800,
        "2027-07-01",
    )
    assert body["tier"]["benefits"] == {"birthday_gift_points": 0, "free_items": [], "priority_support": False}
    history = await client.get(f"/api/members/{member_id}/tier/history", headers=admin)
    item = history.json()["items"][0]
    assert (item["reason"], item["from_tier"], item["to_tier"]) == ("upgrade", "normal", "silver")
    assert item["rule_snapshot"]["basis_value"] == 1200
    assert [t["threshold"] for t in item["rule_snapshot"]["tiers"]] == [0, 1000, 5000]


async def test_paid_plan_lifts_the_multiplier_and_the_tier(client, admin, demo):
    tiers = await standard_tiers(client, admin)
    member_id = await new_member(client, admin, merchant_id=demo.merchant.id, phone="13900000203")
    plan = await PaidPlan.create(
        merchant_id=demo.merchant.id,
        code="plus",
        name="PLUS",
        period="month",
        price=1900,
        tier_id=tiers["gold"]["id"],
        points_multiplier_permille=2000,
    )
    now = clock.now()
    await MemberPlan.create(
        merchant_id=demo.merchant.id,
        member_id=member_id,
        plan_id=plan.id,
        order_id=1,
        starts_at=now - timedelta(minutes=1),
        ends_at=now + timedelta(days=30),
    )
    assert await points_multiplier_permille(merchant_id=demo.merchant.id, member_id=member_id) == 2000
    await reevaluate(merchant_id=demo.merchant.id, member_id=member_id, reason="plan started")
    change = await TierChange.get(member_id=member_id)
    assert (change.reason, change.to_tier_id, change.detail) == ("plan", tiers["gold"]["id"], "plan started")
    await reevaluate(merchant_id=demo.merchant.id, member_id=member_id, reason="again")
    assert await TierChange.filter(member_id=member_id).count() == 1


async def test_manual_hold_until_a_day_then_back_to_the_basis(app, client, admin, demo):
    tiers = await standard_tiers(client, admin)
    manager = lasting(app, await add_staff(client, admin, username="mgr1", role="hq_admin", store_id=None))
    member_id = await new_member(client, admin, merchant_id=demo.merchant.id, phone="13900000204")
    pin("2027-03-10 10:00")
    await _grow(demo.merchant.id, member_id, 1500, "g-204")  # silver
    bad = await client.post(
        f"/api/members/{member_id}/tier",
        json={"tier_code": "diamond", "reason": "x", "until": "2027-06-30"},
        headers=manager,
    )
    assert (bad.status_code, error_of(bad)["field"]) == (422, "tier_code")
    past = await client.post(
        f"/api/members/{member_id}/tier",
        json={"tier_code": "gold", "reason": "x", "until": "2027-03-09"},
        headers=manager,
    )
    assert (past.status_code, error_of(past)["field"]) == (422, "until")
    held = await client.post(
        f"/api/members/{member_id}/tier",
        json={"tier_code": "gold", "reason": "VIP guest", "until": "2027-04-30"},
        headers=manager,
    )
    assert held.status_code == 201, held.text
    assert (held.json()["reason"], held.json()["from_tier"], held.json()["to_tier"]) == ("manual", "silver", "gold")
    for day in ("2027-04-01", "2027-04-30"):
        pin(f"{day} 00:30")
        await run_job("tiers.settle", app.ctx.jobs)
        await run_job("tiers.manual_expire", app.ctx.jobs)
        assert (await MemberTier.get(member_id=member_id)).tier_id == tiers["gold"]["id"], day
    pin("2027-04-30 23:59")
    assert await run_job("tiers.manual_expire", app.ctx.jobs) == "0 manual holds ended"
    pin("2027-05-01 00:00")
    assert await run_job("tiers.manual_expire", app.ctx.jobs) == "1 manual holds ended"
    assert await run_job("tiers.manual_expire", app.ctx.jobs) == "0 manual holds ended"
    row = await MemberTier.get(member_id=member_id)
    assert (row.tier_id, row.manual_until) == (tiers["silver"]["id"], None)
    reasons = await TierChange.filter(member_id=member_id).order_by("id").values_list("reason", flat=True)
    assert list(reasons) == ["upgrade", "manual", "manual_expired"]


async def test_grace_months_keep_the_tier_longer(app, client, admin, demo):
    tiers = await standard_tiers(client, admin)
    await put_policy(client, admin, basis="lifetime_growth", grace_months=2)
    member_id = await new_member(client, admin, merchant_id=demo.merchant.id, phone="13900000205")
    pin("2027-03-10 10:00")
    await _grow(demo.merchant.id, member_id, 1500, "g-205a")
    await _grow(demo.merchant.id, member_id, -1000, "g-205b")  # e.g. a reversed purchase
    for day, expected in (("2027-04-01", "silver"), ("2027-05-01", "silver"), ("2027-06-01", "normal")):
        pin(f"{day} 01:00")
        await run_job("tiers.settle", app.ctx.jobs)
        row = await MemberTier.get(member_id=member_id)
        assert row.tier_id == tiers[expected]["id"], day


async def test_downgrade_notice_once_per_member_and_period(app, client, admin, demo):
    await standard_tiers(client, admin)
    await put_policy(client, admin, basis="lifetime_growth", notice_days=7)
    falling = await new_member(client, admin, merchant_id=demo.merchant.id, phone="13900000206")
    staying = await new_member(client, admin, merchant_id=demo.merchant.id, phone="13900000207")
    pin("2027-03-10 10:00")
    await _grow(demo.merchant.id, falling, 1200, "g-206a")
    await _grow(demo.merchant.id, staying, 1200, "g-207")
    await _grow(demo.merchant.id, falling, -500, "g-206b")
    pin("2027-03-24 10:00")  # 8 days before 1 April: too early
    assert await run_job("tiers.notice", app.ctx.jobs) == "0 downgrade notices queued"
    pin("2027-03-25 10:00")
    assert await run_job("tiers.notice", app.ctx.jobs) == "1 downgrade notices queued"
    pin("2027-03-28 10:00")
    assert await run_job("tiers.notice", app.ctx.jobs) == "0 downgrade notices queued"
    notices = await OutboxMessage.filter(topic="member.notice").values_list("payload", flat=True)
    assert list(notices) == [
        {
            "member_id": falling,
            "kind": "tier_downgrade_notice",
            "tier": "silver",
            "to_tier": "normal",
            "settles_on": "2027-04-01",
        }
    ]


async def test_the_card_the_mini_program_and_the_tier_page_name_the_same_tier(app, client, admin, demo):
    await standard_tiers(client, admin)
    member_id = await new_member(client, admin, merchant_id=demo.merchant.id, phone="13900000203", card=True)
    pin("2027-06-30 20:00")
    await _grow(demo.merchant.id, member_id, 1200, "g-203")
    headers = member_token(app, member_id=member_id, merchant_id=demo.merchant.id)
    me = await client.get("/api/mp/me", headers=headers)
    tier_page = await client.get("/api/mp/me/tier", headers=headers)
    assert me.status_code == tier_page.status_code == 200, (me.text, tier_page.text)
    await OutboxMessage.filter(topic="card.sync", status="pending").update(next_attempt_at=clock.now())
    await deliver(app)
    synced = [c["body"] for c in await calls(client, "/card/membercard/updateuser")]
    assert synced, "the tier move queued a card sync"
    assert (me.json()["tier_name"], tier_page.json()["tier"]["name"], synced[-1]["custom_field_value1"]) == (
        "Silver",
        "Silver",
        "Silver",
    )
