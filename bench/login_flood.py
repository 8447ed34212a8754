"""Login flood: does argon2 (in its thread pool) leave the event loop free for everyone else?

Run: .venv/bin/python bench/login_flood.py [--duration 10] [--connections 32] [--workers 1]
Starts Huiyuan like bench/ceiling.py does (MariaDB scratch database `bench_login`, local Redis, development
environment, defaults for security.hash_workers / hash_queue), then for --duration seconds each:
  idle   one client GETs /healthz back to back: the same-run ceiling for the health check's latency
  flood  --connections clients POST /api/auth/login for unknown usernames (a new one each time, so no lockout
         stops them and every login costs one argon2 check) while the same single client probes /healthz
Prints /healthz p50/p99 for both phases, the flood/idle p99 ratio, and the logins' answers and rate
(401 = checked, 503 auth.busy = refused by the bounded queue). The load is generated in this process with
httpx (asyncio), on 127.0.0.1 only. Figures are relative: read the ratios, measured in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import httpx  # noqa: E402
from ceiling import HOST, Service, huiyuan_env, loadavg, sql, start_huiyuan  # noqa: E402

DB = "bench_login"


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _probe(client: httpx.AsyncClient, until: float) -> list[float]:
    latencies = []
    while time.monotonic() < until:
        started = time.monotonic()
        response = await client.get("/healthz")
        response.raise_for_status()
        latencies.append(time.monotonic() - started)
    return latencies


async def _flooder(client: httpx.AsyncClient, until: float, tag: str, answers: Counter) -> None:
    n = 0
    while time.monotonic() < until:
        n += 1
        response = await client.post("/api/auth/login", json={"username": f"{tag}-{n}", "password": "not-a-password"})
        answers[response.status_code] += 1


async def _run(base: str, args: argparse.Namespace) -> int:
    limits = httpx.Limits(max_connections=args.connections + 4, max_keepalive_connections=args.connections + 4)
    async with httpx.AsyncClient(base_url=base, timeout=30.0, limits=limits) as client:
        await _probe(client, time.monotonic() + 1)  # warm-up
        idle = await _probe(client, time.monotonic() + args.duration)
        answers: Counter = Counter()
        until = time.monotonic() + args.duration
        started = time.monotonic()
        floods = [
            asyncio.create_task(_flooder(client, until, f"ghost{c}x{time.time_ns()}", answers))
            for c in range(args.connections)
        ]
        loaded = await _probe(client, until)
        await asyncio.gather(*floods)
        elapsed = time.monotonic() - started
    print(f"\n{'phase':<8} {'healthz n':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for name, samples in (("idle", idle), ("flood", loaded)):
        print(f"{name:<8} {len(samples):>9} {_pct(samples, 0.5):>8.1f} {_pct(samples, 0.99):>8.1f}")
    logins = sum(answers.values())
    print(
        f"\nlogins: {logins} in {elapsed:.1f} s ({logins / elapsed:.0f}/s) with {args.connections} connections; "
        f"answers {dict(sorted(answers.items()))}"
    )
    print(
        f"healthz mean idle {statistics.mean(idle) * 1000:.1f} ms, under flood {statistics.mean(loaded) * 1000:.1f} ms"
    )
    print(f"ratio flood p99 / idle p99: {_pct(loaded, 0.99) / _pct(idle, 0.99):.1f}x")
    print(f"ratio flood p50 / idle p50: {_pct(loaded, 0.5) / _pct(idle, 0.5):.1f}x")
    return 0 if set(answers) <= {401, 503} else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per phase (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent login clients (default 32)")
    parser.add_argument("--workers", type=int, default=1, help="Huiyuan worker processes (default 1)")
    args = parser.parse_args()
    print(
        f"machine: nproc={len(os.sched_getaffinity(0))}, {loadavg()}; python {platform.python_version()}, "
        f"mariadb {sql('SELECT VERSION()')[0][0]}"
    )
    services: list[Service] = []
    with tempfile.TemporaryDirectory(prefix="login-flood-") as tmp:
        try:
            sql(f"DROP DATABASE IF EXISTS {DB}", f"CREATE DATABASE {DB} CHARACTER SET utf8mb4")
            env = huiyuan_env(Path(tmp))
            env["HUIYUAN_DATABASE__URL"] = f"mysql://root:@{HOST}:3306/{DB}"
            _service, base = start_huiyuan(args.workers, env, Path(tmp), services)
            return asyncio.run(_run(base, args))
        finally:
            for service in reversed(services):
                service.stop()
            sql(f"DROP DATABASE IF EXISTS {DB}")


if __name__ == "__main__":
    sys.exit(main())
