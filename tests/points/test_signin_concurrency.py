"""Concurrent sign-ins of one member on one day give exactly one (run on MariaDB to prove it)."""

from __future__ import annotations

import asyncio

import pytest

from models.kernel import clock
from models.ledger.books import PointsAccount, PointsEntry
from models.points.signin import SignIn
from tests.helpers import error_of
from tests.tiers.helpers import lasting, member_token, new_member, pin


@pytest.fixture(autouse=True)
def _unpin():
    yield
    clock.set_clock(None)


async def test_twenty_concurrent_sign_ins_give_exactly_one(app, client, admin, demo):
    admin = lasting(app, admin)
    member_id = await new_member(client, admin, merchant_id=demo.merchant.id, phone="13900000009")
    headers = member_token(app, member_id=member_id, merchant_id=demo.merchant.id)
    pin("2027-03-05 09:30")
    responses = await asyncio.gather(*(client.post("/api/mp/sign-in", headers=headers) for _ in range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 19, [r.text for r in responses if r.status_code not in (201, 409)]
    assert {error_of(r)["code"] for r in responses if r.status_code == 409} == {"signin.already"}
    assert await SignIn.filter(member_id=member_id).count() == 1
    assert await PointsEntry.filter(member_id=member_id).count() == 1
    assert (await PointsAccount.get(member_id=member_id)).balance == 5


async def test_concurrent_make_ups_respect_the_monthly_limit(app, client, admin, demo):
    admin = lasting(app, admin)
    response = await client.put(
        "/api/loyalty/signin-rules", json={"makeup_cost": 1, "makeup_per_month": 2}, headers=admin
    )
    assert response.status_code == 200
    member_id = await new_member(client, admin, merchant_id=demo.merchant.id, phone="13900000010")
    headers = member_token(app, member_id=member_id, merchant_id=demo.merchant.id)
    pin("2027-03-09 09:30")
    assert (await client.post("/api/mp/sign-in", headers=headers)).status_code == 201
    days = [f"2027-03-0{d}" for d in range(2, 8)]
    responses = await asyncio.gather(
        *(client.post("/api/mp/sign-in/makeup", json={"date": day}, headers=headers) for day in days)
    )
    assert sorted(r.status_code for r in responses) == [201, 201, 409, 409, 409, 409], [r.text for r in responses]
    assert await SignIn.filter(member_id=member_id, makeup=True).count() == 2
    assert await PointsEntry.filter(member_id=member_id, kind="spend").count() == 2
