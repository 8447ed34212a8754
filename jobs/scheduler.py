"""Scheduled jobs: a Redis lock per run, the APScheduler that runs the wiring's jobs, and the scheduler CLI.

Every job is safe to run twice at once (its database guards make a second run change nothing); the lock only
saves the work. Run the scheduler beside the web workers with `python -m jobs.scheduler`, or in-process
(`jobs.scheduler: true`, the embedded default). `python -m jobs.scheduler run <job id>` runs one job now.
The jobs themselves are listed in server/wiring.py (SCHEDULED_JOBS).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
from collections.abc import Mapping

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from jobs.context import JobContext, JobSpec
from models.kernel.cipher import DataCipher, set_cipher
from models.tenancy.merchants import find_wechat_account
from server import db, wiring
from server.config import load_settings
from server.redis import Keys, create_redis
from wechat.gateway import WeChatGateway

log = logging.getLogger("huiyuan.jobs")

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


async def run_job(job_id: str, ctx: JobContext, jobs: Mapping[str, JobSpec] = wiring.SCHEDULED_JOBS) -> str | None:
    """Run one job now unless another process holds its lock; None when skipped."""
    spec = jobs[job_id]
    lock_key, token = ctx.keys("lock", "job", job_id), secrets.token_hex(8)
    if not await ctx.redis.set(lock_key, token, nx=True, ex=spec.lock_seconds):
        log.info("job %s skipped: running elsewhere", job_id)
        return None
    try:
        summary = await spec.func(ctx)
        log.info("job %s: %s", job_id, summary)
        return summary
    finally:
        await ctx.redis.eval(_RELEASE, 1, lock_key, token)


async def _run_safely(job_id: str, ctx: JobContext, jobs: Mapping[str, JobSpec]) -> None:
    try:
        await run_job(job_id, ctx, jobs)
    except Exception:  # a failed run is logged and retried at the next tick
        log.exception("job %s failed", job_id)


def build_scheduler(ctx: JobContext, jobs: Mapping[str, JobSpec] = wiring.SCHEDULED_JOBS) -> AsyncIOScheduler:
    """An APScheduler with every job on its interval (one instance at a time, missed runs coalesced)."""
    scheduler = AsyncIOScheduler(timezone="UTC")
    for spec in jobs.values():
        scheduler.add_job(
            _run_safely,
            "interval",
            seconds=spec.every_seconds,
            args=(spec.id, ctx, jobs),
            id=spec.id,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=spec.every_seconds,
        )
    return scheduler


async def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.scheduler", description="Huiyuan scheduled jobs")
    parser.add_argument("--config", help="YAML config file (default: ./config.yaml if present)")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run every job on its schedule (default)")
    sub.add_parser("list", help="list the jobs")
    one = sub.add_parser("run", help="run one job now and print its summary")
    one.add_argument("job_id")
    args = parser.parse_args(argv)
    jobs = wiring.SCHEDULED_JOBS
    if args.command == "list":
        for spec in jobs.values():
            print(f"{spec.id:32} every {spec.every_seconds:>6}s  {spec.description}")
        return 0
    if args.command == "run" and args.job_id not in jobs:
        print(f"unknown job {args.job_id!r}; see: python -m jobs.scheduler list", file=sys.stderr)
        return 2
    settings = load_settings(args.config)
    wiring.install()
    set_cipher(DataCipher(settings.security.data_key))
    await db.init_db(settings)
    if not settings.is_production:
        await db.migrate(settings)  # as `python -m server` does in development; production migrates explicitly
    redis = create_redis(settings.redis.url)
    keys = Keys(settings.redis.key_prefix)
    self_url = settings.server.public_url or f"http://127.0.0.1:{settings.server.port}"
    gateway = WeChatGateway(
        redis=redis,
        keys=keys,
        find_account=find_wechat_account,
        self_url=self_url,
        emulator_base=self_url.rstrip("/") + settings.wechat.emulator.mount,
        http_timeout=settings.wechat.http_timeout,
    )
    ctx = JobContext(settings=settings, redis=redis, keys=keys, gateway=gateway)
    try:
        if args.command == "run":
            summary = await run_job(args.job_id, ctx, jobs)
            print(summary if summary is not None else "skipped: the job is running elsewhere")
            return 0
        scheduler = build_scheduler(ctx, jobs)
        scheduler.start()
        log.info("scheduler running %d jobs", len(jobs))
        await asyncio.Event().wait()
        return 0
    finally:
        await gateway.aclose()
        await redis.aclose()
        await db.close_db()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(_main(sys.argv[1:])))
