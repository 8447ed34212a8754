"""Bulk member import over HTTP: 100 k rows with 1 % bad ones, progress, rejects, idempotent re-import, CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import httpx
from tortoise.functions import Sum

from models.ledger.books import BalanceEntry, PointsEntry
from models.members.import_upload import ImportChunk
from models.members.imports import ImportJob
from models.members.members import Member
from tests.conftest import login
from tests.helpers import OTHER_OWNER_PASSWORD, add_member, add_staff, error_of, other_merchant
from tests.members.import_csv import LEVEL_OPTIONS, build, phone_of

CSV = {"content-type": "text/csv"}
LEVEL = {"key": "level", "label": "Level", "type": "enum", "options": list(LEVEL_OPTIONS)}


async def define(client: httpx.AsyncClient, headers: dict[str, str], **field: object) -> None:
    response = await client.post("/api/member-fields", json=field, headers=headers)
    assert response.status_code == 201, response.text


async def start(client: httpx.AsyncClient, headers: dict[str, str], body: bytes) -> int:
    response = await client.post("/api/members/imports", content=body, headers={**headers, **CSV})
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


async def wait_done(
    client: httpx.AsyncClient, headers: dict[str, str], job_id: int, seen: list[dict] | None = None
) -> dict:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        response = await client.get(f"/api/members/imports/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        job = response.json()
        if seen is not None:
            seen.append(job)
        if job["status"] in ("done", "failed"):
            return job
        await asyncio.sleep(0.25)
    raise AssertionError(f"import {job_id} still running")


async def rejects_of(client: httpx.AsyncClient, headers: dict[str, str], job_id: int) -> list[tuple[int, str]]:
    response = await client.get(f"/api/members/imports/{job_id}/rejects?limit=1000", headers=headers)
    assert response.status_code == 200, response.text
    return [(r["line"], r["reason"]) for r in response.json()["items"]]


async def ledger_totals() -> tuple[int, int, int, int]:
    points = await PointsEntry.filter(kind="import").annotate(total=Sum("delta")).first().values("total")
    balance = await BalanceEntry.filter(kind="import").annotate(total=Sum("delta")).first().values("total")
    return (
        await PointsEntry.filter(kind="import").count(),
        int(points["total"] or 0),
        await BalanceEntry.filter(kind="import").count(),
        int(balance["total"] or 0),
    )


async def test_100k_rows_with_1_percent_bad_report_exactly_those_and_reimport_changes_nothing(client, admin, demo):
    await define(client, admin, **LEVEL)
    data = build(100_000, store_code=demo.store.code)
    assert len(data.rejects) == 1000
    started = time.monotonic()
    job_id = await start(client, admin, data.body)
    progress: list[dict] = []
    job = await wait_done(client, admin, job_id, progress)
    first_seconds = time.monotonic() - started
    assert {k: job[k] for k in ("status", "total", "processed", "created", "unchanged", "rejected", "percent")} == {
        "status": "done",
        "total": 100_000,
        "processed": 100_000,
        "created": 99_000,
        "unchanged": 0,
        "rejected": 1000,
        "percent": 100.0,
    }
    assert job["error"] == ""
    running = [p for p in progress if p["status"] == "running"]
    assert running, "no progress was observed while the job ran"
    assert all(p["total"] == 100_000 and p["processed"] % 500 == 0 for p in running)
    assert all(p["percent"] == round(p["processed"] / 1000, 1) for p in running)
    assert [p["processed"] for p in progress] == sorted(p["processed"] for p in progress)

    assert await rejects_of(client, admin, job_id) == data.rejects
    beyond = await client.get(f"/api/members/imports/{job_id}/rejects?offset=1000", headers=admin)
    assert beyond.json() == {"items": []}
    assert await Member.filter(merchant_id=demo.merchant.id, source="import").count() == 99_000
    totals = (data.points_rows, data.points_total, data.balance_rows, data.balance_total)
    assert await ledger_totals() == totals

    found = await client.get(f"/api/members/?phone={phone_of(0)}", headers=admin)
    member = found.json()["items"][0]
    assert (member["name"], member["gender"], member["birthday"]) == ("Member 0", "male", "1950-01-01")
    assert (member["store_id"], member["custom_fields"]) == (demo.store.id, {"level": "gold"})
    assert (member["points"], member["balance"]) == (100, 500)
    entries = (await client.get(f"/api/members/{member['id']}/points/ledger", headers=admin)).json()["items"]
    assert [(e["kind"], e["delta"], e["reason"], e["idempotency_key"]) for e in entries] == [
        ("import", 100, "migrated from the old POS", f"import:points:{phone_of(0)}")
    ]
    twentieth = (await client.get(f"/api/members/?phone={phone_of(20)}", headers=admin)).json()["items"][0]
    entries = (await client.get(f"/api/members/{twentieth['id']}/balance/ledger", headers=admin)).json()["items"]
    assert [(e["delta"], e["reason"]) for e in entries] == [(509, "opening balance (import)")]

    started = time.monotonic()
    again = await wait_done(client, admin, await start(client, admin, data.body))
    second_seconds = time.monotonic() - started
    assert (again["status"], again["created"], again["unchanged"], again["rejected"]) == ("done", 0, 99_000, 1000)
    assert await rejects_of(client, admin, again["id"]) == data.rejects
    assert await ledger_totals() == totals
    assert await Member.filter(merchant_id=demo.merchant.id).count() == 99_000
    print(f"\n100k import: first {first_seconds:.1f} s, re-import {second_seconds:.1f} s")


async def test_existing_member_is_left_unchanged(client, admin):
    member = await add_member(client, admin, phone="13700000001", name="Keep Me")
    body = b"phone,name,points,balance\n13700000001,Other Name,100,200\n13700000002,New One,5,\n"
    job = await wait_done(client, admin, await start(client, admin, body))
    assert (job["created"], job["unchanged"], job["rejected"]) == (1, 1, 0)
    kept = (await client.get(f"/api/members/{member['id']}", headers=admin)).json()
    assert (kept["name"], kept["points"], kept["balance"]) == ("Keep Me", 0, 0)
    assert await PointsEntry.filter(member_id=member["id"]).count() == 0
    new = (await client.get("/api/members/?phone=13700000002", headers=admin)).json()["items"][0]
    assert (new["name"], new["points"], new["balance"]) == ("New One", 5, 0)


async def test_row_rules_and_line_numbers(client, admin, demo):
    await define(client, admin, key="vip", label="VIP", type="bool")
    await define(client, admin, key="visits", label="Visits", type="int")
    filler = "".join(f"1360000{i:04d},Filler {i}\n" for i in range(3000))  # pushes the bad byte past the UTF-8 probe
    body = (
        (
            "\ufeffPhone,Name,Gender,Birthday,VIP,Visits,Reason\n"  # line 1; header names are case-insensitive
            '13500000001,"Two\nLines",女,1990-02-28,是,12,\n'  # lines 2-3
            "13500000002,A,男,2999-01-01,,,\n"  # line 4
            "13500000003,A,,,maybe,,\n"  # line 5
            "13500000004,A,,,,many,\n"  # line 6
            ",A,,,,,\n"  # line 7
            f"13500000005,{'x' * 65},,,,,\n"  # line 8
            f"13500000006,A,,,,,{'r' * 256}\n"  # line 9
            "13500000007,A,,,,,,surplus\n"  # line 10
            "13500000008,A,,,,,,\n"  # line 11: an empty trailing cell is fine
            "\n"  # line 12: blank lines are skipped
            "13500000009,B,unknown,,false,0,\n"  # line 13
        ).encode()
        + filler.encode()
        + b"13500000010,\xc0\xee\n"
    )
    job = await wait_done(client, admin, await start(client, admin, body))
    assert (job["total"], job["processed"], job["created"], job["rejected"]) == (3011, 3011, 3003, 8)
    assert await rejects_of(client, admin, job["id"]) == [
        (4, "birthday is in the future"),
        (5, "vip must be true or false"),
        (6, "visits must be an integer"),
        (7, "phone is required"),
        (8, "name is longer than 64 characters"),
        (9, "reason is longer than 255 characters"),
        (10, "too many columns (8; the header has 7)"),
        (3014, "not valid UTF-8"),
    ]
    two_lines = (await client.get("/api/members/?phone=13500000001", headers=admin)).json()["items"][0]
    assert (two_lines["name"], two_lines["gender"], two_lines["birthday"]) == ("Two\nLines", "female", "1990-02-28")
    assert two_lines["custom_fields"] == {"vip": True, "visits": 12}
    plain = (await client.get("/api/members/?phone=13500000009", headers=admin)).json()["items"][0]
    assert plain["custom_fields"] == {"vip": False, "visits": 0}


async def test_bad_uploads_are_refused_before_any_job(client, admin, app, demo):
    async def upload(body: bytes, content_type: str = "text/csv") -> httpx.Response:
        return await client.post("/api/members/imports", content=body, headers={**admin, "content-type": content_type})

    cases = [
        (await upload(b"phone\n13900000001\n", "application/json"), 415, "import.media_type"),
        (await upload(b""), 422, "import.header_missing"),
        (await upload(b"name,points\nA,1\n"), 422, "import.phone_column_missing"),
        (await upload(b"phone,nickname\n13900000001,A\n"), 422, "import.column_unknown"),
        (await upload(b"phone,name,Phone\n"), 422, "import.column_repeated"),
        (await upload("phone,name\n13900000001,李雷\n".encode("gbk")), 422, "import.not_utf8"),
    ]
    settings = app.ctx.settings
    app.ctx.settings = settings.replace(**{"server.import_max_size": 1024})
    try:
        cases.append((await upload(b"phone\n" + b"13900000001\n" * 100), 413, "request.too_large"))
    finally:
        app.ctx.settings = settings
    assert [(r.status_code, error_of(r)["code"]) for r, _, _ in cases] == [(s, c) for _, s, c in cases]
    assert await ImportJob.all().count() == 0
    assert await ImportChunk.all().count() == 0  # a refused upload keeps nothing, even when cut off part-way
    unauthenticated = await client.post("/api/members/imports", content=b"phone\n", headers=CSV)
    assert unauthenticated.status_code == 401
    manager = await add_staff(client, admin, username="mgr1", role="store_manager", store_id=demo.store.id)
    forbidden = await client.post("/api/members/imports", content=b"phone\n", headers={**manager, **CSV})
    assert (forbidden.status_code, error_of(forbidden)["code"]) == (403, "auth.role_forbidden")
    assert (await client.get("/api/members/imports/1", headers=manager)).status_code == 403


async def test_another_merchants_job_is_not_found(client, admin):
    other = await other_merchant()
    other_admin = await login(client, "other-owner", OTHER_OWNER_PASSWORD)
    job_id = await start(client, other_admin, b"phone\n13900000001\nbad\n")
    assert (await wait_done(client, other_admin, job_id))["rejected"] == 1
    for path in (f"/api/members/imports/{job_id}", f"/api/members/imports/{job_id}/rejects"):
        response = await client.get(path, headers=admin)
        assert (response.status_code, error_of(response)["code"]) == (404, "import.not_found")
    assert await Member.filter(merchant_id=other.merchant.id).count() == 1


async def test_concurrent_imports_of_one_file_create_each_member_once(client, admin, demo):
    await define(client, admin, **LEVEL)
    data = build(3000, store_code=demo.store.code)
    first, second = await asyncio.gather(*(start(client, admin, data.body) for _ in range(2)))
    jobs = await asyncio.gather(wait_done(client, admin, first), wait_done(client, admin, second))
    assert [j["status"] for j in jobs] == ["done", "done"]
    assert sum(j["created"] for j in jobs) == data.good_rows == 2970
    assert [j["created"] + j["unchanged"] for j in jobs] == [2970, 2970]
    assert [j["rejected"] for j in jobs] == [30, 30]
    assert await Member.filter(merchant_id=demo.merchant.id).count() == 2970
    assert await ledger_totals() == (data.points_rows, data.points_total, data.balance_rows, data.balance_total)


def _server(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HUIYUAN_DATABASE__URL": settings.database.url, "HUIYUAN_REDIS__URL": "memory://"}
    command = [sys.executable, "-m", "server", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)


async def test_cli_imports_with_progress_and_summary(client, admin, demo, settings, tmp_path):
    await define(client, admin, **LEVEL)
    data = build(1200, store_code=demo.store.code)
    path = tmp_path / "members.csv"
    path.write_bytes(data.body)
    run = await asyncio.to_thread(_server, settings, "import-members", str(path), "--merchant", demo.merchant.code)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "500/1200 rows (41.7 %)" in run.stderr and "1200/1200 rows (100.0 %)" in run.stderr
    assert "rows/s" in run.stderr
    assert "1200 rows, created 1188, unchanged 0, rejected 12" in run.stdout
    assert "line 52: phone must be 6-20 digits" in run.stdout
    assert "line 152: birthday must be a date YYYY-MM-DD" in run.stdout
    job = await ImportJob.get(merchant_id=demo.merchant.id)
    assert (job.status, job.staff_id, job.filename, job.created_rows) == ("done", None, "members.csv", 1188)
    assert await ledger_totals() == (data.points_rows, data.points_total, data.balance_rows, data.balance_total)
    check = await asyncio.to_thread(_server, settings, "check-ledgers")
    assert check.returncode == 0 and "0 mismatches" in check.stdout, check.stdout + check.stderr
    again = await asyncio.to_thread(_server, settings, "import-members", str(path), "--merchant", demo.merchant.code)
    assert "created 0, unchanged 1188, rejected 12" in again.stdout
    unknown = await asyncio.to_thread(_server, settings, "import-members", str(path), "--merchant", "nope")
    assert (unknown.returncode, unknown.stderr.strip()) == (2, "huiyuan: no merchant with code 'nope'")


async def test_opening_amount_already_imported_under_that_phone_rejects_only_that_row(client, admin):
    body = b"phone,name,points\n13600000001,First,70\n"
    first = await wait_done(client, admin, await start(client, admin, body))
    member_id = (await client.get("/api/members/?phone=13600000001", headers=admin)).json()["items"][0]["id"]
    moved = await client.patch(f"/api/members/{member_id}", json={"phone": "13600000009"}, headers=admin)
    assert moved.status_code == 200, moved.text
    body += b"13600000002,Second,30\n"
    job = await wait_done(client, admin, await start(client, admin, body))
    assert (first["created"], job["created"], job["unchanged"], job["rejected"]) == (1, 1, 0, 1)
    assert await rejects_of(client, admin, job["id"]) == [
        (2, "opening amount already imported for this phone (idempotency.key_reused)")
    ]
    assert await Member.filter(phone="13600000001").count() == 0
    second = (await client.get("/api/members/?phone=13600000002", headers=admin)).json()["items"][0]
    assert second["points"] == 30
    assert await PointsEntry.filter(kind="import").count() == 2
