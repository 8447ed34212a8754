"""Paid plan terms: renewals stack, a refunded term ends now, reminders go out once, renewal rate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobs.scheduler import run_job
from models.kernel import clock
from models.kernel.outbox import OutboxMessage
from models.payments.orders import PayOrder
from models.plans.terms import MemberPlan
from tests.cards.helpers import deliver
from tests.helpers import error_of
from tests.payments.helpers import EMU, add_plan, buy_plan, pay, paying_member, use_pay_version
from tests.payments.wallet_helpers import refund

T0 = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai


def at(moment: datetime) -> None:
    clock.set_clock(lambda: moment)


async def _buy(client, headers, plan_id: int) -> PayOrder:
    """Buy and pay through the checkout; API v2, whose notify carries no timestamp, so the clock can be pinned."""
    await use_pay_version("v2")
    order = (await buy_plan(client, headers, plan_id))["order"]
    fired = await pay(client, order["out_trade_no"])
    paid = await PayOrder.get(out_trade_no=order["out_trade_no"])
    assert paid.status == "PAID", fired
    return paid


async def _my_plan(client, headers) -> dict:
    response = await client.get("/api/mp/me/plan", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_two_year_terms_stack_and_a_refunded_term_ends_now(app, client, admin, demo):
    plan = await add_plan(client, admin, code="PLUS-Y", name="PLUS 年卡", period="year", price=36_500)
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="o_mp_plan")
    try:
        at(T0)
        first = await _buy(client, headers, plan["id"])
        second = await _buy(client, headers, plan["id"])
        terms = await MemberPlan.filter(member_id=member_id).order_by("id")
        assert [(t.order_id, t.starts_at, t.ends_at) for t in terms] == [
            (first.id, T0, datetime(2027, 3, 10, 4, 0, tzinfo=UTC)),
            (second.id, datetime(2027, 3, 10, 4, 0, tzinfo=UTC), datetime(2028, 3, 10, 4, 0, tzinfo=UTC)),
        ]
        mine = await _my_plan(client, headers)
        assert (mine["plan_id"], mine["ends_on"], mine["lifetime"], len(mine["terms"])) == (
            plan["id"],
            "2028-03-10",
            False,
            2,
        )

        # 73 of the first term's 365 days used: 292 / 365 of 365.00 back, the second term moves up
        at(T0 + timedelta(days=73))
        response = await refund(client, admin, first.id)
        assert response.status_code == 201, response.text
        assert (response.json()["refund"]["amount"], response.json()["refund"]["forfeited_bonus"]) == (29_200, 0)
        terms = await MemberPlan.filter(member_id=member_id).order_by("id")
        now = T0 + timedelta(days=73)
        assert [(t.status, t.starts_at, t.ends_at) for t in terms] == [
            ("refunded", T0, now),
            ("active", now, now + timedelta(days=366)),  # 2027-03-10 -> 2028-03-10 spans a leap day
        ]
        mine = await _my_plan(client, headers)
        assert (mine["ends_on"], [t["order_id"] for t in mine["terms"]]) == ("2027-05-23", [second.id])
        await deliver(app)
        settled = await client.post(
            f"{EMU}/control/refund-success", json={"out_refund_no": response.json()["refund"]["out_refund_no"]}
        )
        assert settled.status_code == 200
        assert (await PayOrder.get(id=first.id)).status == "REFUNDED"
    finally:
        clock.set_clock(None)


async def test_a_plan_without_refunds_and_lifetime_plans_refuse(app, client, admin, demo):
    plan = await add_plan(client, admin, code="NOREF", period="month", refund_rule="none")
    life = await add_plan(client, admin, code="LIFE", name="终身", period="lifetime", price=99_900)
    _, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="o_mp_noref")
    month = await _buy(client, headers, plan["id"])
    forever = await _buy(client, headers, life["id"])
    for order in (month, forever):
        response = await refund(client, admin, order.id)
        assert (response.status_code, error_of(response)["code"]) == (409, "refund.not_refundable")
        assert (await PayOrder.get(id=order.id)).status == "PAID"
    mine = await _my_plan(client, headers)
    assert (mine["lifetime"], mine["ends_at"]) == (True, None)


async def test_reminders_go_out_once_per_last_term(app, client, admin, demo):
    plan = await add_plan(client, admin, code="PLUS-M", period="month")
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="o_mp_remind")
    try:
        at(T0)
        await _buy(client, headers, plan["id"])
        await _buy(client, headers, plan["id"])  # ends 2026-05-10
        at(datetime(2026, 4, 5, 4, 0, tzinfo=UTC))  # the first term ends within 7 days, but a renewal follows
        assert await run_job("plans.remind", app.ctx.jobs) == "0 plan expiry reminders queued"
        at(datetime(2026, 5, 4, 4, 0, tzinfo=UTC))
        assert await run_job("plans.remind", app.ctx.jobs) == "1 plan expiry reminders queued"
        assert await run_job("plans.remind", app.ctx.jobs) == "0 plan expiry reminders queued"
        notices = await OutboxMessage.filter(topic="member.notice").values_list("payload", flat=True)
        assert notices == [{"member_id": member_id, "kind": "plan_expiring", "ends_on": "2026-05-10"}]
    finally:
        clock.set_clock(None)


async def test_renewal_rate_counts_members_whose_term_ended(app, client, admin, demo):
    plan = await add_plan(client, admin, code="PLUS-M", period="month")
    buyers = [await paying_member(app, merchant_id=demo.merchant.id, mp_openid=f"o_mp_rate{n}") for n in range(3)]
    try:
        at(T0)
        for _, headers in buyers:
            await _buy(client, headers, plan["id"])
        at(T0 + timedelta(days=35))  # every first term ended 4 days ago; one member renews late
        await _buy(client, buyers[0][1], plan["id"])
        response = await client.get("/api/paid-plans/stats", headers=admin)
        assert response.status_code == 200, response.text
        assert response.json() == {"days": 30, "ended": 3, "renewed": 1, "renewal_rate_permille": 333}
    finally:
        clock.set_clock(None)


async def test_cancelling_a_failed_plan_refund_restores_the_terms_exactly(app, client, admin, demo):
    plan = await add_plan(client, admin, code="PLUS-Y", name="PLUS 年卡", period="year", price=36_500)
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="o_mp_cancel")
    try:
        at(T0)
        first = await _buy(client, headers, plan["id"])
        await _buy(client, headers, plan["id"])
        before = (
            await MemberPlan.filter(member_id=member_id).order_by("id").values_list("status", "starts_at", "ends_at")
        )
        at(T0 + timedelta(days=10))
        refund_id = (await refund(client, admin, first.id)).json()["refund"]["id"]
        fault = {"path": "/secapi/pay/refund", "errcode": "NOTENOUGH", "errmsg": "基本账户余额不足"}
        assert (await client.post(f"{EMU}/control/fail-next", json=fault)).status_code == 200
        await deliver(app)
        cancelled = await client.post(f"/api/pay-refunds/{refund_id}/cancel", headers=admin)
        assert (cancelled.status_code, cancelled.json()["status"]) == (200, "CANCELLED"), cancelled.text
        after = (
            await MemberPlan.filter(member_id=member_id).order_by("id").values_list("status", "starts_at", "ends_at")
        )
        assert after == before
        assert (await PayOrder.get(id=first.id)).status == "PAID"
    finally:
        clock.set_clock(None)
