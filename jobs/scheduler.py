"""Scheduled jobs: a registry of named, idempotent jobs, a Redis lock per run, and the APScheduler process.

Every job is safe to run twice at once (its database guards make a second run change nothing); the lock only
saves the work. Run the scheduler beside the web workers with `python -m jobs.scheduler`, or in-process
(`jobs.scheduler: true`, the embedded default). `python -m jobs.scheduler run <job id>` runs one job now.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("huiyuan.jobs")

JOB_MODULES = ("jobs.points", "jobs.tiers", "jobs.payments", "jobs.refunds")


@dataclass(frozen=True)
class JobContext:
    settings: Any  # server.config.Settings
    redis: Any  # redis.asyncio.Redis
    keys: Any  # server.redis.Keys
    gateway: Any  # wechat.gateway.WeChatGateway


JobFunc = Callable[[JobContext], Awaitable[str]]


@dataclass(frozen=True)
class JobSpec:
    id: str
    func: JobFunc
    every_seconds: int
    lock_seconds: int
    description: str


JOBS: dict[str, JobSpec] = {}


def job(job_id: str, *, every_seconds: int, lock_seconds: int = 600) -> Callable[[JobFunc], JobFunc]:
    """Register an idempotent job under a stable dotted id; it returns a one-line summary of what it did."""

    def register(func: JobFunc) -> JobFunc:
        if job_id in JOBS and JOBS[job_id].func is not func:
            raise ValueError(f"job {job_id} is registered twice")
        doc = (func.__doc__ or "").strip().splitlines()
        JOBS[job_id] = JobSpec(job_id, func, every_seconds, lock_seconds, doc[0] if doc else "")
        return func

    return register


def load_jobs() -> dict[str, JobSpec]:
    """Import the job modules (which register their jobs) and return the registry."""
    import importlib

    for name in JOB_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return JOBS


_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


async def run_job(job_id: str, ctx: JobContext) -> str | None:
    """Run one job now unless another process holds its lock; None when skipped."""
    spec = load_jobs()[job_id]
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


async def _run_safely(job_id: str, ctx: JobContext) -> None:
    try:
        await run_job(job_id, ctx)
    except Exception:  # a failed run is logged and retried at the next tick
        log.exception("job %s failed", job_id)


def build_scheduler(ctx: JobContext):  # -> AsyncIOScheduler
    """An APScheduler with every registered job on its interval (one instance at a time, missed runs coalesced)."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    scheduler = AsyncIOScheduler(timezone="UTC")
    for spec in load_jobs().values():
        scheduler.add_job(
            _run_safely,
            "interval",
            seconds=spec.every_seconds,
            args=(spec.id, ctx),
            id=spec.id,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=spec.every_seconds,
        )
    return scheduler


async def _main(argv: list[str]) -> int:
    from server import db
    from server.config import load_settings
    from server.crypto import DataCipher, set_cipher
    from server.redis import Keys, create_redis
    from wechat.gateway import WeChatGateway

    parser = argparse.ArgumentParser(prog="python -m jobs.scheduler", description="Huiyuan scheduled jobs")
    parser.add_argument("--config", help="YAML config file (default: ./config.yaml if present)")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run every job on its schedule (default)")
    sub.add_parser("list", help="list the jobs")
    one = sub.add_parser("run", help="run one job now and print its summary")
    one.add_argument("job_id")
    args = parser.parse_args(argv)
    if args.command == "list":
        for spec in load_jobs().values():
            print(f"{spec.id:32} every {spec.every_seconds:>6}s  {spec.description}")
        return 0
    settings = load_settings(args.config)
    set_cipher(DataCipher(settings.security.data_key))
    await db.init_db(settings)
    if not settings.is_production:
        await db.migrate(settings)  # as `python -m server` does in development; production migrates explicitly
    redis = create_redis(settings.redis.url)
    keys = Keys(settings.redis.key_prefix)
    self_url = settings.server.public_url or f"http://127.0.0.1:{settings.server.port}"
    gateway = WeChatGateway(settings=settings, redis=redis, keys=keys, self_url=self_url)
    ctx = JobContext(settings=settings, redis=redis, keys=keys, gateway=gateway)
    try:
        if args.command == "run":
            if args.job_id not in load_jobs():
                print(f"unknown job {args.job_id!r}; see: python -m jobs.scheduler list", file=sys.stderr)
                return 2
            summary = await run_job(args.job_id, ctx)
            print(summary if summary is not None else "skipped: the job is running elsewhere")
            return 0
        scheduler = build_scheduler(ctx)
        scheduler.start()
        log.info("scheduler running %d jobs", len(JOBS))
        await asyncio.Event().wait()
        return 0
    finally:
        await gateway.aclose()
        await redis.aclose()
        await db.close_db()


if __name__ == "__main__":
    # run the importable module, not this __main__ copy: job modules register into jobs.scheduler.JOBS
    from jobs import scheduler

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(scheduler._main(sys.argv[1:])))
