"""Concurrent visits and refunds of one package (MariaDB: SQLite serialises writers and proves nothing)."""

from __future__ import annotations

import asyncio
import os

import pytest

from models.ledger.books import BalanceAccount, BalanceEntry
from models.packages.tables import MemberPackage, PackageUse
from tests.helpers import error_of
from tests.packages.helpers import member_with_balance, sell, template, use

pytestmark = pytest.mark.skipif(
    not os.environ.get("HUIYUAN_DATABASE__URL", "").startswith("mysql://"), reason="row locks need MariaDB"
)


async def test_twenty_concurrent_visits_of_five_uses_left_take_exactly_five(client, admin, demo):
    tpl = await template(client, admin, uses=5, price=5_000)
    member_id = await member_with_balance(client, admin, merchant_id=demo.merchant.id, phone="13900000201", fen=0)
    sold = await sell(client, admin, member_id, tpl["id"], key="c", payments=[{"method": "cash", "amount": 5_000}])
    package_id = sold.json()["id"]
    responses = await asyncio.gather(*(use(client, admin, member_id, package_id, f"visit-{n}") for n in range(20)))
    assert sorted(r.status_code for r in responses) == [201] * 5 + [409] * 15, [r.text for r in responses]
    assert {error_of(r)["code"] for r in responses if r.status_code == 409} == {"package.used_up"}
    package = await MemberPackage.get(id=package_id)
    assert (package.uses_left, package.uses_count, package.status) == (0, 5, "used_up")
    assert await PackageUse.filter(member_package_id=package_id).count() == 5


async def test_the_same_visit_sent_ten_times_at_once_takes_one_use(client, admin, demo):
    tpl = await template(client, admin, uses=5, price=5_000)
    member_id = await member_with_balance(client, admin, merchant_id=demo.merchant.id, phone="13900000202", fen=0)
    sold = await sell(client, admin, member_id, tpl["id"], key="d", payments=[{"method": "cash", "amount": 5_000}])
    package_id = sold.json()["id"]
    responses = await asyncio.gather(*(use(client, admin, member_id, package_id, "one-visit") for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201], [r.text for r in responses]
    assert len({r.json()["use"]["id"] for r in responses}) == 1
    assert (await MemberPackage.get(id=package_id)).uses_left == 4


async def test_concurrent_refunds_refund_once(client, admin, demo):
    tpl = await template(client, admin, uses=4, price=8_000)
    member_id = await member_with_balance(client, admin, merchant_id=demo.merchant.id, phone="13900000203", fen=8_000)
    sold = await sell(client, admin, member_id, tpl["id"], key="e", payments=[{"method": "balance", "amount": 8_000}])
    package_id = sold.json()["id"]
    assert (await use(client, admin, member_id, package_id, "v1")).status_code == 201
    url = f"/api/members/{member_id}/packages/{package_id}/refund"
    responses = await asyncio.gather(
        *(client.post(url, json={"idempotency_key": f"refund-{n % 2}"}, headers=admin) for n in range(10))
    )
    ok = [r for r in responses if r.status_code == 200]
    assert ok and all(r.json()["refund_amount"] == 6_000 for r in ok), [r.text for r in responses]
    assert {r.status_code for r in responses} <= {200, 409}
    assert (await BalanceAccount.get(member_id=member_id)).balance == 6_000
    assert await BalanceEntry.filter(member_id=member_id, kind="reverse").count() == 1


async def test_concurrent_visits_of_a_time_pass_on_one_day_record_one(app, client, admin, demo):
    tpl = await template(client, admin, name="月卡", kind="time", uses=None, days=30, valid_days=None, price=3_000)
    member_id = await member_with_balance(client, admin, merchant_id=demo.merchant.id, phone="13900000204", fen=0)
    sold = await sell(client, admin, member_id, tpl["id"], key="t", payments=[{"method": "cash", "amount": 3_000}])
    package_id = sold.json()["id"]
    responses = await asyncio.gather(*(use(client, admin, member_id, package_id, f"day-{n}") for n in range(8)))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 7, [r.text for r in responses]
    assert {error_of(r)["code"] for r in responses if r.status_code == 409} == {"package.used_today"}
    assert (await MemberPackage.get(id=package_id)).uses_count == 1
    assert await PackageUse.filter(member_package_id=package_id).count() == 1
