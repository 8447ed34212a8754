"""Daily sign-in over HTTP: streaks (cycle and hold), missed days, the merchant-local day, make-ups, calendar."""

from __future__ import annotations

from datetime import UTC

import httpx
import pytest

from models.kernel import clock
from models.ledger.books import PointsEntry
from models.points.signin import SignIn
from tests.helpers import error_of
from tests.tiers.helpers import lasting, member_token, new_member, pin


@pytest.fixture(autouse=True)
def _unpin():
    yield
    clock.set_clock(None)


@pytest.fixture
def admin(app, admin):
    return lasting(app, admin)


async def _member(app, client, admin, demo, phone="13900000001") -> tuple[int, dict[str, str]]:
    member_id = await new_member(client, admin, merchant_id=demo.merchant.id, phone=phone)
    return member_id, member_token(app, member_id=member_id, merchant_id=demo.merchant.id)


async def _sign(client: httpx.AsyncClient, headers: dict[str, str], when: str) -> httpx.Response:
    pin(when)
    return await client.post("/api/mp/sign-in", headers=headers)


async def _rules(client, admin, **rules) -> None:
    response = await client.put("/api/loyalty/signin-rules", json=rules, headers=admin)
    assert response.status_code == 200, response.text


async def test_streak_rewards_follow_the_table_then_cycle(app, client, admin, demo):
    member_id, headers = await _member(app, client, admin, demo)
    rewards = []
    for day in range(1, 10):
        response = await _sign(client, headers, f"2027-03-{day:02d} 09:00")
        assert response.status_code == 201, response.text
        rewards.append((response.json()["streak"], response.json()["points"]))
    assert rewards == [(1, 5), (2, 10), (3, 15), (4, 20), (5, 25), (6, 30), (7, 50), (8, 5), (9, 10)]
    assert response.json()["balance"] == 5 + 10 + 15 + 20 + 25 + 30 + 50 + 5 + 10
    kinds = await PointsEntry.filter(member_id=member_id).values_list("kind", "idempotency_key")
    assert kinds[0] == ("signin", f"signin:{member_id}:2027-03-01")
    assert {k for k, _ in kinds} == {"signin"}


async def test_hold_keeps_the_last_reward_and_a_missed_day_resets(app, client, admin, demo):
    await _rules(client, admin, rewards=[1, 2, 3], after_table="hold")
    _, headers = await _member(app, client, admin, demo)
    got = []
    for day in (1, 2, 3, 4, 5, 7, 8):  # the 6th is missed
        response = await _sign(client, headers, f"2027-03-{day:02d} 12:00")
        assert response.status_code == 201, response.text
        got.append((response.json()["streak"], response.json()["points"]))
    assert got == [(1, 1), (2, 2), (3, 3), (4, 3), (5, 3), (1, 1), (2, 2)]


async def test_second_sign_in_on_one_day_is_409_with_the_record(app, client, admin, demo):
    member_id, headers = await _member(app, client, admin, demo)
    assert (await _sign(client, headers, "2027-03-05 08:00")).status_code == 201
    again = await _sign(client, headers, "2027-03-05 20:00")
    assert again.status_code == 409
    error = error_of(again)
    assert error["code"] == "signin.already"
    assert error["record"] == {"local_date": "2027-03-05", "streak": 1, "points": 5, "makeup": False}
    assert await SignIn.filter(member_id=member_id).count() == 1
    assert await PointsEntry.filter(member_id=member_id).count() == 1


async def test_the_day_is_the_merchants_local_day(app, client, admin, demo):
    member_id, headers = await _member(app, client, admin, demo)
    first = await _sign(client, headers, "2027-03-05 23:59")
    second = await _sign(client, headers, "2027-03-06 00:01")  # two minutes later, but the next Shanghai day
    assert (first.status_code, second.status_code) == (201, 201)
    assert (first.json()["local_date"], second.json()["local_date"]) == ("2027-03-05", "2027-03-06")
    assert second.json()["streak"] == 2
    # 00:01 Shanghai is still the 5th in UTC: the day must not come from UTC
    assert clock.now().astimezone(UTC).date().isoformat() == "2027-03-05"
    assert await SignIn.filter(member_id=member_id).count() == 2


async def test_a_member_cannot_name_another_member(app, client, admin, demo):
    member_id, headers = await _member(app, client, admin, demo)
    other_id, _ = await _member(app, client, admin, demo, phone="13900000002")
    pin("2027-03-05 10:00")
    response = await client.post("/api/mp/sign-in", json={"member_id": other_id}, headers=headers)
    assert response.status_code == 422
    assert error_of(response)["field"] == "member_id"
    staff = await client.post("/api/mp/sign-in", headers=admin)
    assert staff.status_code == 403
    assert await SignIn.all().count() == 0
    assert await PointsEntry.all().count() == 0


async def test_make_up_bridges_a_gap_and_costs_points(app, client, admin, demo):
    await _rules(client, admin, makeup_cost=10)
    member_id, headers = await _member(app, client, admin, demo)
    for day in (1, 2, 4):
        assert (await _sign(client, headers, f"2027-03-{day:02d} 10:00")).status_code == 201
    # balance 5 + 10 + 5 = 20; the 3rd is missing
    pin("2027-03-05 10:00")
    made = await client.post("/api/mp/sign-in/makeup", json={"date": "2027-03-03"}, headers=headers)
    assert made.status_code == 201, made.text
    assert made.json() == {"local_date": "2027-03-03", "streak": 3, "points": 15, "makeup": True, "balance": 25}
    today = await client.post("/api/mp/sign-in", headers=headers)
    assert today.json()["streak"] == 5  # 1, 2, 3 (made up), 4, 5 form one run
    assert today.json()["points"] == 25
    ledger = (
        await PointsEntry.filter(member_id=member_id).order_by("id").values_list("delta", "kind", "idempotency_key")
    )
    assert ledger[3:5] == [
        (-10, "spend", f"signin-makeup:{member_id}:2027-03-03"),
        (15, "signin", f"signin:{member_id}:2027-03-03"),
    ]


@pytest.mark.parametrize(
    ("day", "status", "code"),
    [
        ("2027-03-10", 422, "signin.makeup_not_past"),
        ("2027-03-11", 422, "signin.makeup_not_past"),
        ("2027-03-02", 422, "signin.makeup_too_old"),
        ("2027-03-09", 409, "signin.already"),
    ],
)
async def test_make_up_refusals_write_nothing(app, client, admin, demo, day, status, code):
    member_id, headers = await _member(app, client, admin, demo)
    assert (await _sign(client, headers, "2027-03-09 10:00")).status_code == 201
    pin("2027-03-10 10:00")
    before = await PointsEntry.filter(member_id=member_id).count()
    response = await client.post("/api/mp/sign-in/makeup", json={"date": day}, headers=headers)
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == code
    assert await PointsEntry.filter(member_id=member_id).count() == before
    assert await SignIn.filter(member_id=member_id).count() == 1


async def test_make_up_without_enough_points_or_over_the_limit(app, client, admin, demo):
    await _rules(client, admin, makeup_cost=6, makeup_per_month=1)
    member_id, headers = await _member(app, client, admin, demo)
    pin("2027-03-10 10:00")
    broke = await client.post("/api/mp/sign-in/makeup", json={"date": "2027-03-09"}, headers=headers)
    assert broke.status_code == 409
    assert error_of(broke)["code"] == "points.insufficient"
    assert await SignIn.filter(member_id=member_id).count() == 0
    assert (await client.post("/api/mp/sign-in", headers=headers)).status_code == 201  # +5
    assert (await _sign(client, headers, "2027-03-11 10:00")).status_code == 201  # +10 → 15
    first = await client.post("/api/mp/sign-in/makeup", json={"date": "2027-03-08"}, headers=headers)
    assert first.status_code == 201, first.text
    second = await client.post("/api/mp/sign-in/makeup", json={"date": "2027-03-07"}, headers=headers)
    assert second.status_code == 409
    assert error_of(second)["code"] == "signin.makeup_limit"
    assert await SignIn.filter(member_id=member_id, makeup=True).count() == 1
    assert not await PointsEntry.filter(idempotency_key=f"signin-makeup:{member_id}:2027-03-07").exists()


async def test_make_ups_can_be_switched_off(app, client, admin, demo):
    await _rules(client, admin, makeup_enabled=False)
    _, headers = await _member(app, client, admin, demo)
    pin("2027-03-10 10:00")
    response = await client.post("/api/mp/sign-in/makeup", json={"date": "2027-03-09"}, headers=headers)
    assert response.status_code == 409
    assert error_of(response)["code"] == "signin.makeup_disabled"


async def test_calendar_shows_the_month_streak_and_next_reward(app, client, admin, demo):
    _, headers = await _member(app, client, admin, demo)
    for day in ("2027-02-27", "2027-02-28", "2027-03-01", "2027-03-02"):
        assert (await _sign(client, headers, f"{day} 10:00")).status_code == 201
    pin("2027-03-03 10:00")
    view = await client.get("/api/mp/sign-in/calendar", params={"month": "2027-03"}, headers=headers)
    assert view.status_code == 200, view.text
    body = view.json()
    assert [d["local_date"] for d in body["days"]] == ["2027-03-01", "2027-03-02"]
    assert [d["points"] for d in body["days"]] == [15, 20]
    assert (body["streak"], body["signed_today"], body["next_reward"]) == (4, False, 25)
    await client.post("/api/mp/sign-in", headers=headers)
    body = (await client.get("/api/mp/sign-in/calendar", headers=headers)).json()
    assert (body["month"], body["streak"], body["signed_today"], body["next_reward"]) == ("2027-03", 5, True, 30)
    feb = (await client.get("/api/mp/sign-in/calendar", params={"month": "2027-02"}, headers=headers)).json()
    assert [d["local_date"] for d in feb["days"]] == ["2027-02-27", "2027-02-28"]
    bad = await client.get("/api/mp/sign-in/calendar", params={"month": "2027-13"}, headers=headers)
    assert bad.status_code == 422
    assert error_of(bad)["field"] == "month"


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ({"rewards": []}, "rewards"),
        ({"rewards": [5, 0, 10]}, "rewards"),
        ({"rewards": [5, -1]}, "rewards"),
        ({"after_table": "bounce"}, "after_table"),
        ({"makeup_days_back": 0}, "makeup_days_back"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_bad_rules_are_422_with_the_field_and_change_nothing(client, admin, rules, field):
    response = await client.put("/api/loyalty/signin-rules", json=rules, headers=admin)
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field
    current = await client.get("/api/loyalty/signin-rules", headers=admin)
    assert current.json()["rewards"] == [5, 10, 15, 20, 25, 30, 50]
    assert current.json()["after_table"] == "cycle"
