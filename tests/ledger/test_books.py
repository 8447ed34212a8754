"""Points and balance changes over HTTP: guards, idempotency, concurrency and the ledger check."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from models.ledger.books import BalanceAccount, BalanceEntry, PointsAccount, PointsEntry
from models.points.lots import PointsExpiry, PointsLot
from models.tiers.tables import GrowthBucket, MemberTier, RechargeTotal


async def _member(client, admin, **profile) -> int:
    response = await client.post("/api/members/", json={"name": "Li Lei", **profile}, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def _points(client, admin, member_id, delta, key, **extra):
    body = {"delta": delta, "reason": "test", "idempotency_key": key, **extra}
    return await client.post(f"/api/members/{member_id}/points", json=body, headers=admin)


async def test_earn_and_spend_points_write_one_row_each(client, admin):
    member_id = await _member(client, admin)
    earn = await _points(client, admin, member_id, 120, "earn-1", kind="earn")
    assert earn.status_code == 200, earn.text
    assert earn.json()["balance"] == 120
    assert earn.json()["entry"]["balance_after"] == 120
    assert earn.json()["replayed"] is False
    spend = await _points(client, admin, member_id, -20, "spend-1", kind="spend")
    assert spend.json()["balance"] == 100
    ledger = (await client.get(f"/api/members/{member_id}/points/ledger", headers=admin)).json()["items"]
    assert [e["delta"] for e in ledger] == [-20, 120]
    assert [e["kind"] for e in ledger] == ["spend", "earn"]
    member = (await client.get(f"/api/members/{member_id}", headers=admin)).json()
    assert member["points"] == 100


async def test_overdraw_is_refused_and_writes_nothing(client, admin):
    member_id = await _member(client, admin)
    await _points(client, admin, member_id, 10, "p-1")
    response = await _points(client, admin, member_id, -11, "p-2")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "points.insufficient"
    assert await PointsEntry.filter(member_id=member_id).count() == 1
    assert (await PointsAccount.get(member_id=member_id)).balance == 10


async def test_repeated_idempotency_key_returns_first_result(client, admin):
    member_id = await _member(client, admin)
    first = await _points(client, admin, member_id, 50, "same-key")
    second = await _points(client, admin, member_id, 50, "same-key")
    assert second.status_code == 200
    assert second.json()["replayed"] is True
    assert second.json()["entry"]["id"] == first.json()["entry"]["id"]
    assert second.json()["balance"] == 50
    reused = await _points(client, admin, member_id, 70, "same-key")
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency.key_reused"
    assert await PointsEntry.filter(member_id=member_id).count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"delta": 0, "reason": "x", "idempotency_key": "k"}, "delta"),
        ({"delta": 1.5, "reason": "x", "idempotency_key": "k"}, "delta"),
        ({"delta": "10", "reason": "x", "idempotency_key": "k"}, "delta"),
        ({"delta": 10, "reason": "", "idempotency_key": "k"}, "reason"),
        ({"delta": 10, "reason": "x", "idempotency_key": ""}, "idempotency_key"),
        ({"delta": 10, "reason": "x", "idempotency_key": "k", "kind": "magic"}, "kind"),
        ({"delta": 10**12, "reason": "x", "idempotency_key": "k"}, "delta"),
        ({"delta": 10, "reason": "x"}, "idempotency_key"),
    ],
)
async def test_bad_changes_are_422_with_the_field(client, admin, body, field):
    member_id = await _member(client, admin)
    response = await client.post(f"/api/members/{member_id}/points", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    assert await PointsEntry.filter(member_id=member_id).count() == 0


async def test_balance_in_fen_has_its_own_ledger(client, admin):
    member_id = await _member(client, admin)
    body = {"delta": 5000, "reason": "opening balance", "idempotency_key": "b-1", "kind": "adjust"}
    response = await client.post(f"/api/members/{member_id}/balance", json=body, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["balance"] == 5000
    over = {"delta": -5001, "reason": "pay", "idempotency_key": "b-2", "kind": "pay"}
    response = await client.post(f"/api/members/{member_id}/balance", json=over, headers=admin)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "balance.insufficient"
    assert (await client.get(f"/api/members/{member_id}", headers=admin)).json()["balance"] == 5000
    assert await PointsEntry.filter(member_id=member_id).count() == 0
    assert await BalanceEntry.filter(member_id=member_id).count() == 1


async def test_keys_are_per_merchant_and_members_of_other_merchants_are_404(client, admin):
    member_id = await _member(client, admin)
    response = await _points(client, admin, member_id + 1000, 10, "k")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "member.not_found"


async def test_fifty_concurrent_debits_against_twenty(client, admin):
    member_id = await _member(client, admin)
    await client.post(
        f"/api/members/{member_id}/balance",
        headers=admin,
        json={"delta": 20, "reason": "seed", "idempotency_key": "seed"},
    )
    responses = await asyncio.gather(
        *[
            client.post(
                f"/api/members/{member_id}/balance",
                headers=admin,
                json={"delta": -1, "reason": "pay", "idempotency_key": f"debit-{i}", "kind": "pay"},
            )
            for i in range(50)
        ]
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 20, statuses
    assert statuses.count(409) == 30, statuses
    assert all(r.json()["error"]["code"] == "balance.insufficient" for r in responses if r.status_code == 409)
    account = await BalanceAccount.get(member_id=member_id)
    assert account.balance == 0
    entries = await BalanceEntry.filter(member_id=member_id).values_list("delta", flat=True)
    assert sum(entries) == account.balance
    assert len(entries) == 21


async def test_twenty_concurrent_requests_with_one_key_write_one_row(client, admin):
    member_id = await _member(client, admin)
    responses = await asyncio.gather(*[_points(client, admin, member_id, 30, "one-key") for _ in range(20)])
    assert [r.status_code for r in responses] == [200] * 20
    assert sum(1 for r in responses if not r.json()["replayed"]) == 1
    assert len({r.json()["entry"]["id"] for r in responses}) == 1
    assert await PointsEntry.filter(member_id=member_id).count() == 1
    assert (await PointsAccount.get(member_id=member_id)).balance == 30


def _check_ledgers(settings) -> subprocess.CompletedProcess:
    env = {**os.environ, "HUIYUAN_DATABASE__URL": settings.database.url, "HUIYUAN_REDIS__URL": "memory://"}
    return subprocess.run(
        [sys.executable, "-m", "server", "check-ledgers"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_check_ledgers_passes_then_reports_a_tampered_balance(client, admin, settings):
    member_id = await _member(client, admin)
    await _points(client, admin, member_id, 40, "c-1")
    await _points(client, admin, member_id, -15, "c-2")
    clean = await asyncio.to_thread(_check_ledgers, settings)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "0 mismatches" in clean.stdout
    await PointsAccount.filter(member_id=member_id).update(balance=999)
    broken = await asyncio.to_thread(_check_ledgers, settings)
    assert broken.returncode == 1
    assert f"MISMATCH points member={member_id} balance=999 ledger_sum=25" in broken.stdout


async def test_check_ledgers_also_recomputes_growth_buckets_and_recharge_totals(client, admin, settings):
    member_id = await _member(client, admin)
    bought = {"order_no": "CL-1", "amount": 12_345}
    assert (await client.post(f"/api/members/{member_id}/purchases", json=bought, headers=admin)).status_code == 201
    recharge = {"delta": 500, "kind": "recharge", "reason": "储值", "idempotency_key": "cl-r"}
    assert (await client.post(f"/api/members/{member_id}/balance", json=recharge, headers=admin)).status_code == 200
    clean = await asyncio.to_thread(_check_ledgers, settings)
    assert clean.returncode == 0 and "0 mismatches" in clean.stdout, clean.stdout + clean.stderr
    assert "running totals checked" in clean.stdout

    await MemberTier.filter(member_id=member_id).update(growth_total=1)
    await GrowthBucket.filter(member_id=member_id).update(total=7)
    await RechargeTotal.filter(member_id=member_id).update(total=3)
    broken = await asyncio.to_thread(_check_ledgers, settings)
    assert broken.returncode == 1
    day = (await GrowthBucket.get(member_id=member_id)).day
    assert f"MISMATCH growth_total member={member_id} kept=1 ledger_sum=123" in broken.stdout
    assert f"MISMATCH growth_bucket:{day} member={member_id} kept=7 ledger_sum=123" in broken.stdout
    assert f"MISMATCH recharge_total member={member_id} kept=3 ledger_sum=500" in broken.stdout


async def test_check_ledgers_also_recomputes_the_points_expiry_totals(client, admin, settings):
    member_id = await _member(client, admin)
    await _points(client, admin, member_id, 40, "ex-1")
    await _points(client, admin, member_id, -15, "ex-2")
    clean = await asyncio.to_thread(_check_ledgers, settings)
    assert clean.returncode == 0 and "0 mismatches" in clean.stdout, clean.stdout + clean.stderr
    assert "points expiry totals checked" in clean.stdout

    lot = await PointsLot.get(member_id=member_id)
    row = await PointsExpiry.get(member_id=member_id)
    assert row.expires_at == lot.expires_at and row.points == lot.remaining == 25
    await PointsExpiry.filter(member_id=member_id).update(points=7)
    broken = await asyncio.to_thread(_check_ledgers, settings)
    assert broken.returncode == 1
    assert lot.expires_at is not None
    assert (
        f"MISMATCH points_expiry:{lot.expires_at.isoformat()} member={member_id} kept=7 ledger_sum=25" in broken.stdout
    )
    await PointsExpiry.filter(member_id=member_id).delete()  # a missing row is a mismatch too
    gone = await asyncio.to_thread(_check_ledgers, settings)
    assert f"MISMATCH points_expiry:{lot.expires_at.isoformat()} member={member_id} kept=0 ledger_sum=25" in gone.stdout
