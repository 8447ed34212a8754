"""A segment's live count on a large merchant: GET /api/segments/<id>/count of a three-condition segment.

Run: .venv/bin/python bench/segments.py [--members 1000000] [--purchases 1000000] [--requests 5]
Starts Huiyuan (development: it migrates and seeds the demo merchant) on MariaDB `<HY_BENCH_DB_PREFIX>segments`,
makes two tiers, four stores and a tag through the API, then seeds by INSERT ... SELECT from MariaDB's sequence
engine (no rows built in Python): members with origin stores and birthdays, their tiers (one in five gold),
points accounts, the tag on one member in seven, and purchases over the last 180 days. Prints the seeding time, the
EXPLAIN of the count and the count's latency (sequential, 127.0.0.1) for "tier gold AND purchase_amount in 90
days >= 500 yuan AND has the tag", and once the same without the tag (then every member is looked at).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import ceiling  # noqa: E402
from ceiling import ADMIN, DB_PREFIX, Service, huiyuan_env, sql, start_huiyuan  # noqa: E402

APP_DB = f"{DB_PREFIX}segments"
DAYS = 180
STORES = 4
CHUNK = 200_000


def post(client: httpx.Client, path: str, body: dict) -> dict:
    response = client.post(path, json=body)
    if response.status_code != 201:
        raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
    return response.json()


def seed(client: httpx.Client, members: int, purchases: int) -> dict[str, int]:
    """Tiers, stores and a tag through the API, then members and their rows by SQL; returns the ids made."""
    merchant_id, first_store = sql("SELECT merchant_id, id FROM store ORDER BY id LIMIT 1", db=APP_DB)[0]
    post(client, "/api/tiers", {"code": "silver", "name": "Silver", "rank": 0, "threshold": 0})
    gold = post(client, "/api/tiers", {"code": "gold", "name": "Gold", "rank": 1, "threshold": 100000})["id"]
    silver = sql(f"SELECT id FROM tier WHERE merchant_id = {merchant_id} AND code = 'silver'", db=APP_DB)[0][0]
    stores = [int(first_store)] + [
        post(client, "/api/stores", {"code": f"B{i}", "name": f"B{i}"})["id"] for i in range(1, STORES)
    ]
    tag = post(client, "/api/tags", {"code": "vip", "name": "VIP", "kind": "manual"})["id"]
    store_expr = f"ELT(1 + seq MOD {STORES}, {', '.join(map(str, stores))})"
    for start in range(0, members, CHUNK):
        end = min(members, start + CHUNK)
        sql(
            "INSERT INTO member (merchant_id, origin_store_id, name, phone, gender, birthday, custom_fields, source,"
            " subscribed, created_at, updated_at)"
            f" SELECT {merchant_id}, {store_expr}, CONCAT('Bench ', seq), CONCAT('139', LPAD(seq, 8, '0')),"
            " IF(seq MOD 2 = 0, 'female', 'male'), DATE('1960-01-01') + INTERVAL (seq MOD 15000) DAY, '{}',"
            f" 'import', 0, UTC_TIMESTAMP(6) - INTERVAL (seq MOD 700) DAY, UTC_TIMESTAMP(6)"
            f" FROM seq_{start + 1}_to_{end}",
            db=APP_DB,
        )
    first = int(sql(f"SELECT MIN(id) FROM member WHERE merchant_id = {merchant_id}", db=APP_DB)[0][0])
    sql(
        "INSERT INTO member_tier (merchant_id, member_id, tier_id, since, manual_reason, growth_total, updated_at)"
        f" SELECT {merchant_id}, id, IF(id MOD 5 = 0, {gold}, {silver}), UTC_TIMESTAMP(6), '', 0, UTC_TIMESTAMP(6)"
        f" FROM member WHERE merchant_id = {merchant_id}",
        "INSERT INTO points_account (merchant_id, member_id, balance, updated_at)"
        f" SELECT {merchant_id}, id, id MOD 5000, UTC_TIMESTAMP(6) FROM member WHERE merchant_id = {merchant_id}",
        "INSERT INTO member_tag (merchant_id, member_id, tag_id, source, added_by, added_at)"
        f" SELECT {merchant_id}, id, {tag}, 'manual', NULL, UTC_TIMESTAMP(6) FROM member"
        f" WHERE merchant_id = {merchant_id} AND id MOD 7 = 3",
        db=APP_DB,
    )
    for start in range(0, purchases, CHUNK):
        end = min(purchases, start + CHUNK)
        sql(
            "INSERT INTO purchase (merchant_id, member_id, store_id, order_no, amount, items, points, growth, status,"
            " occurred_at, created_at)"
            f" SELECT {merchant_id}, {first} + (seq * 7919) MOD {members}, {stores[0]}, CONCAT('S', seq),"
            f" 1000 + (seq * 31) MOD 60000, '[]', 0, 0, IF(seq MOD 50 = 0, 'reversed', 'settled'),"
            f" UTC_TIMESTAMP(6) - INTERVAL ((seq * 2654435761) MOD ({DAYS} * 86400)) SECOND, UTC_TIMESTAMP(6)"
            f" FROM seq_{start + 1}_to_{end}",
            db=APP_DB,
        )
    sql("ANALYZE TABLE member, member_tier, member_tag, purchase, points_account", db=APP_DB)
    return {"merchant": int(merchant_id), "gold": int(gold), "tag": int(tag)}


def timed_counts(client: httpx.Client, segment_id: int, requests: int) -> tuple[int, list[float]]:
    seconds, count = [], 0
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(f"/api/segments/{segment_id}/count", timeout=120.0)
        seconds.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"count: {response.status_code} {response.text[:300]}")
        count = response.json()["count"]
    return count, seconds


def explain(ids: dict[str, int]) -> None:
    """EXPLAIN of the count's SQL, as the API compiles it (the segment's conditions, the demo merchant's)."""
    rows = sql(
        "EXPLAIN SELECT COUNT(*) FROM member m WHERE m.merchant_id = {merchant}"
        " AND (EXISTS (SELECT 1 FROM member_tier t JOIN tier r ON r.id = t.tier_id WHERE t.member_id = m.id"
        " AND r.is_active = 1 AND t.tier_id IN ({gold}))"
        " AND (SELECT COALESCE(SUM(p.amount), 0) FROM purchase p WHERE p.member_id = m.id AND p.status = 'settled'"
        " AND p.occurred_at >= UTC_TIMESTAMP() - INTERVAL 90 DAY) >= 50000"
        " AND EXISTS (SELECT 1 FROM member_tag mt JOIN tag tg ON tg.id = mt.tag_id WHERE mt.tag_id = {tag}"
        " AND mt.member_id = m.id AND tg.status = 'active'))".format(**ids),
        db=APP_DB,
    )
    for row in rows:
        print("  ", " | ".join("" if v is None else str(v) for v in row))


def run(args: argparse.Namespace, tmp: Path, services: list[Service]) -> int:
    sql(f"DROP DATABASE IF EXISTS {APP_DB}", f"CREATE DATABASE {APP_DB} CHARACTER SET utf8mb4")
    _, base = start_huiyuan(1, huiyuan_env(tmp, APP_DB), tmp, services)
    token = httpx.post(f"{base}/api/auth/login", json=ADMIN, timeout=10.0).json()["access_token"]
    with httpx.Client(base_url=base, timeout=30.0, headers={"Authorization": f"Bearer {token}"}) as client:
        started = time.monotonic()
        ids = seed(client, args.members, args.purchases)
        print(f"seeded {args.members:,} members, {args.purchases:,} purchases in {time.monotonic() - started:.1f} s")
        spent = {"field": "purchase_amount", "op": "gte", "value": 50000, "window_days": 90}
        gold = {"field": "tier", "op": "in", "value": ["gold"]}
        three = post(
            client,
            "/api/segments",
            {"code": "three", "name": "3", "definition": {"all": [gold, spent, {"tag": "vip"}]}},
        )
        two = post(client, "/api/segments", {"code": "two", "name": "2", "definition": {"all": [gold, spent]}})
        print("\nEXPLAIN (three conditions):")
        explain(ids)
        print(f"\n{'GET /api/segments/<id>/count (1 worker)':<44} {'count':>8} {'n':>3} {'p50 s':>7} {'max s':>7}")
        for label, segment, requests in (
            ("gold AND 500 yuan in 90 days AND tag vip", three, args.requests),
            ("gold AND 500 yuan in 90 days (no tag)", two, 1),  # every member's subqueries: once is enough
        ):
            count, seconds = timed_counts(client, segment["id"], requests)
            print(f"{label:<44} {count:>8,} {len(seconds):>3} {statistics.median(seconds):>7.2f} {max(seconds):>7.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--purchases", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=5, help="count calls per segment (default 5)")
    args = parser.parse_args()
    return ceiling.run_in_scratch(args, run, name="segments", dbs=(APP_DB,))


if __name__ == "__main__":
    sys.exit(main())
