"""Consumption analytics on a large merchant: the roll-up rebuild's time and each report endpoint's latency.

Run: .venv/bin/python bench/analytics.py [--members 20000] [--purchases 200000] [--calls 20] [--full]
--full is the issue's target size: 200,000 members and 1,000,000 purchases over 18 months, two lines each.
Starts Huiyuan (development: it migrates and seeds the demo merchant) on MariaDB `<HY_BENCH_DB_PREFIX>analytics`,
seeds members and purchases with INSERT ... SELECT from MariaDB's sequence engine (no rows built in Python),
rebuilds the daily roll-ups for the 18 months (in this process, as `python -m server analytics-rebuild` does),
then prints each endpoint's p50 / max over --calls sequential calls for the 18-month range grouped by month,
merchant-wide and for one store. Requests go to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import ceiling  # noqa: E402
from ceiling import ADMIN, DB_PREFIX, HOST, Service, huiyuan_env, sql, start_huiyuan  # noqa: E402

APP_DB = f"{DB_PREFIX}analytics"
DAYS = 548  # 18 months
STORES = 4


def seed(members: int, purchases: int) -> int:
    """Stores, members and purchases for the demo merchant; returns the id of one of its stores."""
    merchant_id, store_id = sql("SELECT merchant_id, id FROM store ORDER BY id LIMIT 1", db=APP_DB)[0]
    sql(
        "INSERT INTO store (merchant_id, code, name, address, is_active, created_at)"
        f" SELECT {merchant_id}, CONCAT('B', seq), CONCAT('Bench ', seq), '', 1, UTC_TIMESTAMP(6)"
        f" FROM seq_1_to_{STORES - 1}",
        db=APP_DB,
    )
    stores = [int(r[0]) for r in sql(f"SELECT id FROM store WHERE merchant_id = {merchant_id} ORDER BY id", db=APP_DB)]
    sql(
        "INSERT INTO member (merchant_id, origin_store_id, name, gender, custom_fields, source, subscribed,"
        " created_at, updated_at)"
        f" SELECT {merchant_id}, {store_id}, CONCAT('Bench ', seq), 'unknown', '{{}}', 'import', 0,"
        f" UTC_TIMESTAMP(6) - INTERVAL (seq MOD {DAYS}) DAY, UTC_TIMESTAMP(6) FROM seq_1_to_{members}",
        db=APP_DB,
    )
    first = sql(f"SELECT MIN(id) FROM member WHERE merchant_id = {merchant_id}", db=APP_DB)[0][0]
    store_expr = f"ELT(1 + seq MOD {STORES}, {', '.join(map(str, stores))})"
    line = (
        '\'{{"sku":"SKU\', {sku}, \'","category":"C\', {sku} MOD 12, \'","amount":\', {amount},'
        " ',\"quantity\":', 1 + seq MOD 3, '}}'"
    )
    items = (
        "CONCAT('[', "
        + line.format(sku="seq MOD 300", amount="300 + seq MOD 10000")
        + ", ',', "
        + line.format(sku="(seq * 31) MOD 300", amount="200 + seq MOD 10000")
        + ", ']')"
    )
    for start in range(0, purchases, 200_000):
        end = min(purchases, start + 200_000)
        sql(
            "INSERT INTO purchase (merchant_id, member_id, store_id, order_no, amount, items, points, growth, status,"
            " occurred_at, created_at)"
            f" SELECT {merchant_id}, {first} + (seq * 7919) MOD {members}, {store_expr}, CONCAT('B', seq),"
            f" 500 + 2 * (seq MOD 10000), {items}, 0, 0, IF(seq MOD 50 = 0, 'reversed', 'settled'),"
            f" UTC_TIMESTAMP(6) - INTERVAL ((seq * 2654435761) MOD ({DAYS} * 86400)) SECOND, UTC_TIMESTAMP(6)"
            f" FROM seq_{start + 1}_to_{end}",
            db=APP_DB,
        )
    sql("ANALYZE TABLE purchase, member", db=APP_DB)
    return stores[1]


async def rebuild(url: str, first: object, last: object) -> float:
    from models.analytics.rollup import rebuild as rebuild_rollups
    from server import db
    from server.config import load_settings

    env = {"HUIYUAN_DATABASE__URL": url, "HUIYUAN_REDIS__URL": "memory://", "HUIYUAN_ENVIRONMENT": "development"}
    settings = load_settings(None, environ=env)
    await db.init_db(settings)
    try:
        merchant_id = sql("SELECT merchant_id FROM store ORDER BY id LIMIT 1", db=APP_DB)[0][0]
        started = time.perf_counter()
        await rebuild_rollups(merchant_id=int(merchant_id), first=first, last=last)  # type: ignore[arg-type]
        return time.perf_counter() - started
    finally:
        await db.close_db()


def timed(client: httpx.Client, path: str, params: dict, calls: int) -> list[float]:
    client.get(path, params=params).raise_for_status()  # warm
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        response = client.get(path, params=params)
        seconds.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
    return seconds


def run(args: argparse.Namespace, tmp: Path, services: list[Service]) -> int:
    sql(f"DROP DATABASE IF EXISTS {APP_DB}", f"CREATE DATABASE {APP_DB} CHARACTER SET utf8mb4")
    # no scheduler in the server: its analytics.rollup would rebuild the same days beside the timed rebuild
    env = {**huiyuan_env(tmp, APP_DB), "HUIYUAN_JOBS__SCHEDULER": "false"}
    _, base = start_huiyuan(1, env, tmp, services)
    started = time.monotonic()
    store = seed(args.members, args.purchases)
    print(f"seeded {args.members:,} members, {args.purchases:,} purchases in {time.monotonic() - started:.1f} s")
    today = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).date()
    first = today - timedelta(days=DAYS)
    seconds = asyncio.run(rebuild(f"mysql://root:@{HOST}:3306/{APP_DB}", first, today))
    counts = [sql(f"SELECT COUNT(*) FROM {table}", db=APP_DB)[0][0] for table in ("sales_day", "sku_day")]
    print(f"rebuild of {DAYS + 1} days: {seconds:.1f} s ({counts[0]:,} sales_day rows, {counts[1]:,} sku_day rows)")
    token = httpx.post(f"{base}/api/auth/login", json=ADMIN, timeout=10.0).json()["access_token"]
    period = {"from": first.isoformat(), "to": today.isoformat()}
    cases = [
        ("sales", "/api/analytics/sales", {**period, "group": "month"}),
        ("top-items by sku", "/api/analytics/top-items", {**period, "by": "sku", "limit": 20}),
        ("top-items by category", "/api/analytics/top-items", {**period, "by": "category"}),
        ("frequency", "/api/analytics/frequency", period),
        ("liabilities", "/api/analytics/liabilities", {}),
        ("members", "/api/analytics/members", period),
        ("sales, one store", "/api/analytics/sales", {**period, "group": "month", "store_id": store}),
        ("frequency, one store", "/api/analytics/frequency", {**period, "store_id": store}),
    ]
    print(f"\n{'endpoint (18 months, sequential, 1 worker)':<44} {'n':>4} {'p50 ms':>8} {'max ms':>8}")
    with httpx.Client(base_url=base, timeout=60.0, headers={"Authorization": f"Bearer {token}"}) as client:
        for label, path, params in cases:
            found = timed(client, path, params, args.calls)
            print(f"{label:<44} {len(found):>4} {statistics.median(found) * 1000:>8.1f} {max(found) * 1000:>8.1f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--purchases", type=int, default=200_000)
    parser.add_argument("--calls", type=int, default=20, help="calls per endpoint (default 20)")
    parser.add_argument("--full", action="store_true", help="the issue's size: 200,000 members, 1,000,000 purchases")
    args = parser.parse_args()
    if args.full:
        args.members, args.purchases = 200_000, 1_000_000
    return ceiling.run_in_scratch(args, run, name="analytics", dbs=(APP_DB,))


if __name__ == "__main__":
    sys.exit(main())
