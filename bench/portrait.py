"""The member portrait on a large merchant: GET /api/members/<id>/portrait latency and the RFM cuts job's time.

Run: .venv/bin/python bench/portrait.py [--members 20000] [--purchases 200000] [--requests 200] [--full]
--full is the issue's target size: 200,000 members and 1,000,000 purchases. Starts Huiyuan (development: it
migrates and seeds the demo merchant) on MariaDB `<HY_BENCH_DB_PREFIX>portrait`, seeds members and purchases over
18 months with INSERT ... SELECT from MariaDB's sequence engine (no rows built in Python), then prints the
portrait's p50/p99 for a heavy member (1,000 purchases) and for average members, before and after the cuts,
and how long the rfm_cuts job takes (in this process, on the same database). Requests are sequential, on
127.0.0.1 only, bounded by --requests.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import ceiling  # noqa: E402
from ceiling import ADMIN, DB_PREFIX, HOST, Service, huiyuan_env, sql, start_huiyuan  # noqa: E402

APP_DB = f"{DB_PREFIX}portrait"
HEAVY = 1000  # purchases of the heavy member
DAYS = 548  # 18 months


def seed(members: int, purchases: int) -> tuple[int, int, int]:
    """Members and purchases for the demo merchant; returns (merchant id, heavy member id, first member id)."""
    merchant_id, store_id = sql("SELECT merchant_id, id FROM store ORDER BY id LIMIT 1", db=APP_DB)[0]
    sql(
        "INSERT INTO member (merchant_id, origin_store_id, name, gender, custom_fields, source, subscribed,"
        " created_at, updated_at)"
        f" SELECT {merchant_id}, {store_id}, CONCAT('Bench ', seq), 'unknown', '{{}}', 'import', 0,"
        f" UTC_TIMESTAMP(6) - INTERVAL (seq MOD {DAYS}) DAY, UTC_TIMESTAMP(6) FROM seq_1_to_{members}",
        db=APP_DB,
    )
    first, last = sql(f"SELECT MIN(id), MAX(id) FROM member WHERE merchant_id = {merchant_id}", db=APP_DB)[0]
    heavy = first  # the first bench member takes HEAVY purchases; the rest are spread over the others
    others = members - 1
    member_expr = f"IF(seq <= {HEAVY}, {heavy}, {first} + 1 + (seq * 7919) MOD {others})"
    items = (
        'CONCAT(\'[{"sku":"SKU\', seq MOD 300, \'","category":"C\', seq MOD 12, \'","amount":\', 500 + seq MOD 20000,'
        " ',\"quantity\":', 1 + seq MOD 3, '}]')"
    )
    for start in range(0, purchases, 200_000):
        end = min(purchases, start + 200_000)
        sql(
            "INSERT INTO purchase (merchant_id, member_id, store_id, order_no, amount, items, points, growth, status,"
            " occurred_at, created_at)"
            f" SELECT {merchant_id}, {member_expr}, {store_id}, CONCAT('B', seq), 500 + seq MOD 20000, {items},"
            f" 0, 0, IF(seq MOD 50 = 0, 'reversed', 'settled'),"
            f" UTC_TIMESTAMP(6) - INTERVAL ((seq * 2654435761) MOD ({DAYS} * 86400)) SECOND, UTC_TIMESTAMP(6)"
            f" FROM seq_{start + 1}_to_{end}",
            db=APP_DB,
        )
    sql("ANALYZE TABLE purchase, member", db=APP_DB)
    return int(merchant_id), int(heavy), int(first)


def latencies(base: str, token: str, member_ids: list[int]) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    seconds = []
    with httpx.Client(base_url=base, timeout=30.0, headers=headers) as client:
        client.get(f"/api/members/{member_ids[0]}/portrait").raise_for_status()  # warm the caches
        for member_id in member_ids:
            started = time.perf_counter()
            response = client.get(f"/api/members/{member_id}/portrait")
            seconds.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"portrait {member_id}: {response.status_code} {response.text[:300]}")
    return seconds


def row(label: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{label:<38} {len(seconds):>5} {statistics.median(ordered) * 1000:>8.1f} {p99 * 1000:>8.1f}"


async def run_cuts(url: str) -> tuple[float, str]:
    from models.kernel import clock
    from models.portrait.rfm import compute_all_cuts
    from server import db
    from server.config import load_settings

    env = {"HUIYUAN_DATABASE__URL": url, "HUIYUAN_REDIS__URL": "memory://", "HUIYUAN_ENVIRONMENT": "development"}
    settings = load_settings(None, environ=env)
    await db.init_db(settings)
    try:
        started = time.perf_counter()
        merchants = await compute_all_cuts(now=clock.now())
        return time.perf_counter() - started, f"{merchants} merchants"
    finally:
        await db.close_db()


def run(args: argparse.Namespace, tmp: Path, services: list[Service]) -> int:
    sql(f"DROP DATABASE IF EXISTS {APP_DB}", f"CREATE DATABASE {APP_DB} CHARACTER SET utf8mb4")
    _, base = start_huiyuan(1, huiyuan_env(tmp, APP_DB), tmp, services)
    started = time.monotonic()
    merchant_id, heavy, first = seed(args.members, args.purchases)
    print(f"seeded {args.members:,} members, {args.purchases:,} purchases in {time.monotonic() - started:.1f} s")
    heavy_count = sql(f"SELECT COUNT(*) FROM purchase WHERE member_id = {heavy}", db=APP_DB)[0][0]
    token = httpx.post(f"{base}/api/auth/login", json=ADMIN, timeout=10.0).json()["access_token"]
    step = max(1, (args.members - 1) // args.requests)
    average = [first + 1 + i * step for i in range(args.requests)]
    print(f"\n{'portrait (sequential, 1 worker)':<38} {'n':>5} {'p50 ms':>8} {'p99 ms':>8}")
    print(row(f"heavy member ({heavy_count} purchases), no cuts", latencies(base, token, [heavy] * args.requests)))
    print(row(f"average members (~{args.purchases // args.members}), no cuts", latencies(base, token, average)))
    seconds, what = asyncio.run(run_cuts(f"mysql://root:@{HOST}:3306/{APP_DB}"))
    cuts = sql(f"SELECT member_count, cuts FROM rfm_cuts WHERE merchant_id = {merchant_id}", db=APP_DB)[0]
    print(f"\nrfm_cuts job: {seconds:.2f} s for {what}; {cuts[0]:,} members with purchases; cuts {cuts[1]}\n")
    print(row("heavy member, scored", latencies(base, token, [heavy] * args.requests)))
    print(row("average members, scored", latencies(base, token, average)))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--purchases", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=200, help="portrait calls per row (default 200)")
    parser.add_argument("--full", action="store_true", help="the issue's size: 200,000 members, 1,000,000 purchases")
    args = parser.parse_args()
    if args.full:
        args.members, args.purchases = 200_000, 1_000_000
    if args.purchases < HEAVY + args.members:
        parser.error("--purchases must exceed 1,000 + --members")
    return ceiling.run_in_scratch(args, run, name="portrait", dbs=(APP_DB,))


if __name__ == "__main__":
    sys.exit(main())
