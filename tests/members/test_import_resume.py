"""Member imports survive their worker: the lease, the resume point, giving up, and a real server killed with -9."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import aiomysql
import httpx
import pytest

from models.kernel import clock
from models.members import import_worker, imports
from models.members.import_upload import CHUNK_BYTES, ImportChunk
from models.members.imports import ImportJob, ImportReject
from models.members.members import Member
from tests.conftest import _fresh_mysql_database
from tests.members.import_csv import ImportFile, build, phone_of
from tests.members.test_import import LEVEL, define, ledger_totals
from tests.server.live import ROOT, free_port, wait_healthy


class Crash(BaseException):
    """Stands for the process dying: nothing catches it, so the worker's lease is left to expire."""


async def _body(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 100_000):
        yield data[start : start + 100_000]


async def _new_job(demo, data: ImportFile) -> ImportJob:
    return await imports.create_import_job(
        merchant_id=demo.merchant.id, staff_id=None, body=_body(data.body), filename="members.csv"
    )


def _crash_after(batches: int):
    seen: list[int] = []

    def on_batch(job: ImportJob) -> None:
        seen.append(job.processed_rows)
        if len(seen) == batches:
            raise Crash

    return on_batch


async def _run_until_crash(job_id: int, batches: int) -> None:
    with pytest.raises(Crash):
        await import_worker.run_import_job(job_id=job_id, on_batch=_crash_after(batches))


def _pin(moment: datetime) -> None:
    clock.set_clock(lambda: moment)


async def _rejects(job_id: int) -> list[tuple[int, str]]:
    return [(r.line, r.reason) for r in await ImportReject.filter(job_id=job_id).order_by("line")]


async def test_upload_is_kept_in_chunks_and_dropped_when_the_job_ends(client, admin, demo):
    await define(client, admin, **LEVEL)
    data = build(12_000, store_code=demo.store.code)
    job = await _new_job(demo, data)
    chunks = await ImportChunk.filter(upload_key=job.upload_key).order_by("seq").values_list("seq", flat=True)
    assert len(data.body) > 2 * CHUNK_BYTES and chunks == list(range(-(-len(data.body) // CHUNK_BYTES)))
    assert (job.status, job.lease_owner, job.attempts) == ("pending", None, 0)
    done = await import_worker.run_import_job(job_id=job.id)
    assert done is not None and (done.status, done.created_rows, done.rejected_rows) == ("done", 11_880, 120)
    assert (done.lease_owner, done.reached_line, done.reached_byte) == (None, 12_001, len(data.body))
    assert await ImportChunk.all().count() == 0
    assert await _rejects(job.id) == data.rejects


async def test_concurrent_claims_of_one_job_have_exactly_one_winner(client, admin, demo):
    await define(client, admin, **LEVEL)
    data = build(3000, store_code=demo.store.code)
    job = await _new_job(demo, data)
    now = clock.now()
    claims = await asyncio.gather(
        *(imports.claim_import(job_id=job.id, owner=f"worker-{i}", now=now) for i in range(8))
    )
    assert claims.count(True) == 1
    held = await ImportJob.get(id=job.id)
    assert (held.lease_owner, held.attempts) == (f"worker-{claims.index(True)}", 1)
    assert not await imports.claim_import(job_id=job.id, owner="late", now=now + imports.LEASE / 2)

    other = await _new_job(demo, data)
    runs = await asyncio.gather(*(import_worker.run_import_job(job_id=other.id) for _ in range(2)))
    assert sorted(run is None for run in runs) == [False, True]
    finished = await ImportJob.get(id=other.id)
    assert (finished.status, finished.attempts, finished.created_rows, finished.unchanged_rows) == ("done", 1, 2970, 0)
    assert await Member.filter(merchant_id=demo.merchant.id).count() == 2970
    assert await ledger_totals() == (data.points_rows, data.points_total, data.balance_rows, data.balance_total)


async def test_a_stopped_worker_is_resumed_at_its_last_batch_once_the_lease_expires(client, admin, demo):
    await define(client, admin, **LEVEL)
    data = build(3000, store_code=demo.store.code)
    data.body += f"{phone_of(10)},Again,,,,,,,\r\n".encode()  # repeats line 12, from before the resume point
    data.rejects.append((3002, "duplicate phone (first on line 12)"))
    job = await _new_job(demo, data)
    start = clock.now()
    try:
        _pin(start)
        await _run_until_crash(job.id, batches=3)
        stopped = await ImportJob.get(id=job.id)
        stopped_at = (stopped.status, stopped.processed_rows, stopped.reached_line, stopped.attempts)
        assert stopped_at == ("running", 1500, 1501, 1)
        assert await import_worker.run_pending_imports() == 0  # the lease still holds
        _pin(start + imports.LEASE + timedelta(seconds=1))
        assert await import_worker.run_pending_imports() == 1
    finally:
        clock.set_clock(None)
    done = await ImportJob.get(id=job.id)
    assert (done.status, done.attempts, done.total_rows, done.processed_rows) == ("done", 2, 3001, 3001)
    assert (done.created_rows, done.unchanged_rows, done.rejected_rows) == (2970, 0, 31)
    assert await _rejects(job.id) == data.rejects
    assert await Member.filter(merchant_id=demo.merchant.id).count() == 2970
    assert await ledger_totals() == (data.points_rows, data.points_total, data.balance_rows, data.balance_total)
    assert await ImportChunk.all().count() == 0


async def test_after_three_stopped_attempts_the_job_fails_with_the_line_reached(client, admin, demo):
    await define(client, admin, **LEVEL)
    data = build(3000, store_code=demo.store.code)
    job = await _new_job(demo, data)
    start = clock.now()
    try:
        for attempt in range(imports.MAX_ATTEMPTS):
            _pin(start + attempt * (imports.LEASE + timedelta(seconds=1)))
            await _run_until_crash(job.id, batches=1)
        _pin(start + imports.MAX_ATTEMPTS * (imports.LEASE + timedelta(seconds=1)))
        assert await import_worker.run_pending_imports() == 1
    finally:
        clock.set_clock(None)
    failed = await ImportJob.get(id=job.id)
    assert (failed.status, failed.attempts, failed.processed_rows, failed.reached_line) == ("failed", 3, 1500, 1501)
    assert failed.error == ("stopped 3 times before finishing (the worker stopped); rows up to line 1501 are imported")
    assert await ImportChunk.all().count() == 0
    assert await import_worker.run_import_job(job_id=job.id) is None


# --- a real server process killed in the middle of a large import, then started again on the same database ---


def _launch(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:  # a file, not a pipe: a full pipe would stall the server's logging
        command = [sys.executable, "-m", "server", "--port", str(port), "--workers", "1"]
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


async def _scalars(url: str, query: str) -> tuple:
    if url.startswith("sqlite://"):
        with sqlite3.connect(url[len("sqlite://") :]) as conn:
            return tuple(conn.execute(query).fetchone())
    parts = urlsplit(url)
    conn = await aiomysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        db=parts.path.lstrip("/"),
    )
    try:
        async with conn.cursor() as cur:
            await cur.execute(query)
            return tuple(await cur.fetchone())
    finally:
        conn.close()


@pytest.fixture
async def server_env(settings, tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUIYUAN_")}
    env["HUIYUAN_CONFIG"] = str(tmp_path / "none.yaml")
    if settings.database.url.startswith("mysql://"):
        url = settings.database.url + "_kill"
        await _fresh_mysql_database(url)
        env.update(HUIYUAN_REDIS__URL=settings.redis.url, HUIYUAN_REDIS__KEY_PREFIX=f"hykill:{os.getpid()}:")
    else:
        url = f"sqlite://{tmp_path / 'data' / 'huiyuan.sqlite3'}"
    env["HUIYUAN_DATABASE__URL"] = url
    return env


def _get_job(http: httpx.Client, job_id: int) -> dict:
    response = http.get(f"/api/members/imports/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def _killed_and_restarted(env: dict[str, str], log: Path, data: ImportFile) -> tuple[dict, float, int]:
    port = free_port()
    proc = _launch(env, port, log)
    try:
        wait_healthy(proc, port)
        base = f"http://127.0.0.1:{port}"
        login = httpx.post(f"{base}/api/auth/login", json={"username": "admin", "password": "huiyuan-demo"})
        token = {"Authorization": f"Bearer {login.json()['access_token']}"}
        with httpx.Client(base_url=base, headers=token, timeout=30) as http:
            assert http.post("/api/member-fields", json=LEVEL).status_code == 201
            upload = http.post("/api/members/imports", content=data.body, headers={"content-type": "text/csv"})
            assert upload.status_code == 202, upload.text
            job_id = upload.json()["job_id"]
            deadline = time.monotonic() + 120
            while (job := _get_job(http, job_id))["processed"] < 3000 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert job["status"] == "running" and 3000 <= job["processed"] < job["total"], job
    killed_at = job["processed"]

    port = free_port()
    proc = _launch(env, port, log)
    try:
        wait_healthy(proc, port)
        restarted = time.monotonic()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=token, timeout=30) as http:
            while (job := _get_job(http, job_id))["status"] not in ("done", "failed"):
                # a liveness bound, not a speed target (bench/ measures speed): generous for a loaded 2-core box
                assert time.monotonic() - restarted < 240, f"not finished 240 s after the restart: {job}"
                time.sleep(0.5)
            seconds = time.monotonic() - restarted
            rejects: list[tuple[int, str]] = []
            while True:
                page = http.get(f"/api/members/imports/{job_id}/rejects?offset={len(rejects)}&limit=1000")
                if not (items := page.json()["items"]):
                    break
                rejects += [(r["line"], r["reason"]) for r in items]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert rejects == data.rejects
    return job, seconds, killed_at


async def test_killed_server_resumes_the_import_after_a_restart_and_imports_each_row_once(server_env, tmp_path):
    data = build(20_000, store_code="S001")
    log = tmp_path / "server.log"
    run = asyncio.to_thread(_killed_and_restarted, server_env, log, data)
    try:
        job, seconds, killed_at = await run
    except AssertionError:
        print(log.read_text(errors="replace")[-6000:])
        raise
    print(f"\nkilled at {killed_at} rows; done {seconds:.1f} s after the restart")
    assert {k: job[k] for k in ("status", "total", "processed", "created", "unchanged", "rejected", "error")} == {
        "status": "done",
        "total": 20_000,
        "processed": 20_000,
        "created": 19_800,
        "unchanged": 0,
        "rejected": 200,
        "error": "",
    }
    url = server_env["HUIYUAN_DATABASE__URL"]
    members = "SELECT COUNT(*), COUNT(DISTINCT phone) FROM member WHERE source = 'import'"
    assert await _scalars(url, members) == (19_800, 19_800)
    points = "SELECT COUNT(*), COALESCE(SUM(delta), 0) FROM points_ledger WHERE kind = 'import'"
    balance = "SELECT COUNT(*), COALESCE(SUM(delta), 0) FROM balance_ledger WHERE kind = 'import'"
    assert tuple(map(int, await _scalars(url, points))) == (data.points_rows, data.points_total)
    assert tuple(map(int, await _scalars(url, balance))) == (data.balance_rows, data.balance_total)
    assert await _scalars(url, "SELECT COUNT(*) FROM import_chunk") == (0,)
    assert await _scalars(url, "SELECT attempts, lease_owner FROM import_job") == (2, None)
