"""The job scheduler: named jobs, one run at a time across processes (Redis lock), the APScheduler wiring."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.context import JobSpec
from jobs.scheduler import build_scheduler, run_job
from server import wiring

ROOT = Path(__file__).resolve().parents[2]
runs: list[str] = []
release = asyncio.Event()


async def _slow(ctx) -> str:
    """A job that waits until the test lets it finish."""
    runs.append("slow")
    await release.wait()
    return "slow done"


async def _boom(ctx) -> str:
    """A job that fails."""
    raise RuntimeError("boom")


TEST_JOBS = {
    "test.slow": JobSpec("test.slow", _slow, every_seconds=3600, lock_seconds=30),
    "test.boom": JobSpec("test.boom", _boom, every_seconds=3600),
}


@pytest.fixture(autouse=True)
def _reset():
    runs.clear()
    release.clear()


async def test_a_job_runs_once_at_a_time_and_its_lock_is_released(app, demo):
    first = asyncio.create_task(run_job("test.slow", app.ctx.jobs, TEST_JOBS))
    await asyncio.sleep(0.05)
    assert await run_job("test.slow", app.ctx.jobs, TEST_JOBS) is None  # held by the first run
    release.set()
    assert await first == "slow done"
    assert runs == ["slow"]
    assert await run_job("test.slow", app.ctx.jobs, TEST_JOBS) == "slow done"  # the lock went with the first run
    assert runs == ["slow", "slow"]


async def test_a_failing_job_releases_its_lock(app, demo):
    with pytest.raises(RuntimeError):
        await run_job("test.boom", app.ctx.jobs, TEST_JOBS)
    assert await app.ctx.redis.get(app.ctx.keys("lock", "job", "test.boom")) is None


async def test_every_wired_job_is_scheduled_once_with_its_interval(app):
    scheduler = build_scheduler(app.ctx.jobs)
    scheduled = {j.id: j for j in scheduler.get_jobs()}
    assert set(scheduled) == set(wiring.SCHEDULED_JOBS)
    for spec in wiring.SCHEDULED_JOBS.values():
        assert scheduled[spec.id].trigger.interval.total_seconds() == spec.every_seconds
        assert scheduled[spec.id].max_instances == 1


def test_the_cli_lists_the_jobs_and_rejects_an_unknown_one(tmp_path):
    listed = subprocess.run(
        [sys.executable, "-m", "jobs.scheduler", "list"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    listed_ids = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    assert {"points.expire", "tiers.settle", "payments.reconcile", "refunds.reconcile"} <= listed_ids, listed.stdout
    env = {"HUIYUAN_DATABASE__URL": f"sqlite://{tmp_path}/db.sqlite3", "HUIYUAN_REDIS__URL": "memory://", "PATH": ""}
    unknown = subprocess.run(
        [sys.executable, "-m", "jobs.scheduler", "run", "no.such.job"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert unknown.returncode == 2
    assert "unknown job 'no.such.job'" in unknown.stderr
