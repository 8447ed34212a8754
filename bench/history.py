"""Cost per request against a member's history: 10, 10,000 and 100,000 ledger rows and lots.

Run: .venv/bin/python bench/history.py [--requests 200] [--max-seconds 20] [--sizes 10,10000,100000] [--quick]
Starts Huiyuan like bench/ceiling.py (MariaDB scratch database, local Redis, scheduler off), creates
ceiling.BENCH_TIERS and one member per history size through the API, gives each member one purchase (so its
tier row exists), then builds the history with bulk SQL in build_history(). Then, one client, one request at
a time, for each size: points read (a page of PAGE = 10 ledger rows for every member), spend 1 point,
purchase, and a pay notify crediting a fresh recharge order of that member.
Printed: requests, median and p90 latency (ms), the server's CPU per request (utime+stime of its process
group from /proc), and the ratio of the largest history to the smallest against issue 12's target (<= 1.5x).
Then check-ledgers, which must be clean: every balance the builder touched equals its ledger's sum.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pymysql

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import ceiling  # noqa: E402
from ceiling import ADMIN, DB_PREFIX, HOST, group_cpu_seconds, sql  # noqa: E402
from loyalty import signed_notifies  # noqa: E402

DB = f"{DB_PREFIX}history"
ROWS_PER_INSERT = 5000
TARGET = 1.5
TWO_YEARS_S = 2 * 365 * 86400
PAGE = 10  # ledger rows per points read, whatever the member's history
SPEND_RESERVE = 10_000  # points every member holds at least, so no spend cell runs out (a 409 costs less)
WARM_UP = 3  # unmeasured requests per cell: connection pool, caches, the one tier change a big history causes


@dataclass
class Cell:
    latencies_ms: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0

    @property
    def p90(self) -> float:
        if len(self.latencies_ms) < 2:
            return self.median
        return statistics.quantiles(self.latencies_ms, n=10)[-1]

    @property
    def cpu_ms(self) -> float:
        return self.cpu_s * 1000 / len(self.latencies_ms) if self.latencies_ms else 0.0


def insert_rows(cur: pymysql.cursors.Cursor, table: str, columns: str, rows: list[str]) -> None:
    for start in range(0, len(rows), ROWS_PER_INSERT):
        cur.execute(f"INSERT INTO {table} ({columns}) VALUES {','.join(rows[start : start + ROWS_PER_INSERT])}")


# ---- the history builder: extend HERE when a change adds tables a member's history lives in (like the growth
# ---- buckets, the recharge total and the points expiry totals below): whatever is written must keep
# ---- check-ledgers clean and the lots covering balances.
def build_history(*, merchant_id: int, member_id: int, rows: int) -> None:
    """`rows` points ledger rows (at least SPEND_RESERVE points in all) with an open lot each (expiries from 1 day
    to ~2 years, every 20th within 30 days), `rows` balance recharges with an open balance lot each, `rows` growth
    rows over the past 2 years; the accounts and the tier's lifetime growth move by exactly what was added."""
    conn = pymysql.connect(host=HOST, port=3306, user="root", password="", database=DB, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT balance FROM points_account WHERE member_id = {member_id} FOR UPDATE")
            points = int(cur.fetchone()[0])
            cur.execute(f"SELECT balance FROM balance_account WHERE member_id = {member_id} FOR UPDATE")
            balance = int(cur.fetchone()[0])
            tag = f"hist:{member_id}"
            ledger_cols = (
                "merchant_id, member_id, delta, balance_after, kind, reason, ref_type, ref_id, idempotency_key,"
                " operator_staff_id, created_at"
            )
            points_rows, balance_rows, growth_rows = [], [], []
            per_row = max(10, -(-SPEND_RESERVE // rows))
            for i in range(rows):
                # created over the past two years, oldest first
                ago = f"NOW(6) - INTERVAL {TWO_YEARS_S - i * TWO_YEARS_S // rows} SECOND"
                points += per_row
                points_rows.append(
                    f"({merchant_id},{member_id},{per_row},{points},'earn','history','bench','{i}','{tag}:p{i}',"
                    f"NULL,{ago})"
                )
                balance += 100
                balance_rows.append(
                    f"({merchant_id},{member_id},100,{balance},'recharge','history','bench','{i}','{tag}:b{i}',"
                    f"NULL,{ago})"
                )
                growth_rows.append(
                    f"({merchant_id},{member_id},10,'purchase','history','{tag}:g{i}','bench','{i}',{ago},{ago})"
                )
            insert_rows(cur, "points_ledger", ledger_cols, points_rows)
            insert_rows(cur, "balance_ledger", ledger_cols, balance_rows)
            insert_rows(
                cur,
                "growth_ledger",
                "merchant_id, member_id, delta, kind, reason, idempotency_key, ref_type, ref_id, occurred_at,"
                " created_at",
                growth_rows,
            )
            # a lot per ledger row: every 20th expires within 30 days, the rest from 31 days to ~2 years ahead
            cur.execute(
                "INSERT INTO points_lot (merchant_id, member_id, entry_id, amount, remaining, expired, expires_at,"
                " status, created_at) SELECT merchant_id, member_id, id, delta, delta, 0,"
                " NOW(6) + INTERVAL IF(CAST(ref_id AS UNSIGNED) % 20 = 0, 1 + CAST(ref_id AS UNSIGNED) % 29,"
                " 31 + CAST(ref_id AS UNSIGNED) % 700) DAY, 'open', created_at"
                f" FROM points_ledger WHERE merchant_id = {merchant_id} AND member_id = {member_id}"
                f" AND idempotency_key LIKE '{tag}:p%'"
            )
            cur.execute(
                "INSERT INTO balance_lot (merchant_id, member_id, entry_id, source, order_id, principal, bonus,"
                " principal_remaining, bonus_remaining, status, created_at) SELECT merchant_id, member_id, id,"
                " 'recharge', NULL, delta, 0, delta, 0, 'open', created_at"
                f" FROM balance_ledger WHERE merchant_id = {merchant_id} AND member_id = {member_id}"
                f" AND idempotency_key LIKE '{tag}:b%'"
            )
            cur.execute(f"UPDATE points_account SET balance = {points} WHERE member_id = {member_id}")
            cur.execute(f"UPDATE balance_account SET balance = {balance} WHERE member_id = {member_id}")
            cur.execute(
                f"UPDATE member_tier SET growth_total = growth_total + {10 * rows} WHERE member_id = {member_id}"
            )
            # what the server keeps beside those ledgers: daily growth buckets and the running recharge total
            day = "YEAR(occurred_at) * 10000 + MONTH(occurred_at) * 100 + DAYOFMONTH(occurred_at)"
            cur.execute(f"DELETE FROM growth_bucket WHERE member_id = {member_id}")
            cur.execute(
                "INSERT INTO growth_bucket (merchant_id, member_id, day, total)"
                f" SELECT {merchant_id}, member_id, {day}, SUM(delta) FROM growth_ledger"
                f" WHERE member_id = {member_id} GROUP BY member_id, {day}"
            )
            # the open points per expiry instant the points page reads (models/points/lots.py PointsExpiry)
            cur.execute(f"DELETE FROM points_expiry WHERE member_id = {member_id}")
            cur.execute(
                "INSERT INTO points_expiry (merchant_id, member_id, expires_at, points)"
                f" SELECT {merchant_id}, member_id, expires_at, SUM(remaining) FROM points_lot"
                f" WHERE member_id = {member_id} AND status = 'open' AND expires_at IS NOT NULL"
                " GROUP BY member_id, expires_at HAVING SUM(remaining) > 0"
            )
            cur.execute(f"DELETE FROM recharge_total WHERE member_id = {member_id}")
            cur.execute(
                "INSERT INTO recharge_total (merchant_id, member_id, total)"
                f" SELECT {merchant_id}, member_id, SUM(delta) FROM balance_ledger WHERE member_id = {member_id}"
                " AND (kind = 'recharge' OR (kind = 'refund' AND delta < 0)) GROUP BY member_id"
            )
        conn.commit()
    finally:
        conn.close()


def timed(server_pgid: int, send: Callable[[int], httpx.Response], requests: int, max_seconds: float) -> Cell:
    """Up to `requests` calls of send(i), one at a time, stopping early after max_seconds."""
    for i in range(WARM_UP):
        send(-1 - i)
    cell = Cell()
    cpu = group_cpu_seconds(server_pgid)
    started = time.monotonic()
    for i in range(requests):
        t0 = time.perf_counter()
        response = send(i)
        cell.latencies_ms.append((time.perf_counter() - t0) * 1000)
        cell.statuses[response.status_code] = cell.statuses.get(response.status_code, 0) + 1
        if time.monotonic() - started > max_seconds:
            break
    cell.cpu_s = group_cpu_seconds(server_pgid) - cpu
    return cell


OPS = ("points read", "spend 1 point", "purchase", "notify credit")


def measure_member(
    client: httpx.Client, staff: dict[str, str], pgid: int, member: int, args: argparse.Namespace
) -> dict[str, Cell]:
    run = time.time_ns() % 10**10
    count = args.requests + WARM_UP + 1
    bodies, notify_path = signed_notifies([member], count, f"H{member}x{run}", db=DB)
    xml = {"Content-Type": "text/xml"}

    def spend(i: int) -> httpx.Response:
        body = {"points": 1, "reason": "bench", "idempotency_key": f"hs-{run}-{i}"}
        return client.post(f"/api/members/{member}/points/spend", json=body, headers=staff)

    def purchase(i: int) -> httpx.Response:
        body = {"order_no": f"hp-{member}-{run}-{i}", "amount": 12345}
        return client.post(f"/api/members/{member}/purchases", json=body, headers=staff)

    sends: dict[str, Callable[[int], httpx.Response]] = {
        # the same page size for every member (the smallest has 10 rows): the cell measures history, not the page
        "points read": lambda i: client.get(f"/api/members/{member}/points?limit={PAGE}", headers=staff),
        "spend 1 point": spend,
        "purchase": purchase,
        "notify credit": lambda i: client.post(notify_path, content=bodies[i + WARM_UP], headers=xml),
    }
    cells = {}
    for op in OPS:
        cells[op] = timed(pgid, sends[op], args.requests, args.max_seconds)
        cell = cells[op]
        print(f"  {op:<14} n={len(cell.latencies_ms):<4} median {cell.median:8.2f} ms", flush=True)
    return cells


def report(results: dict[int, dict[str, Cell]]) -> None:
    sizes = sorted(results)
    print(f"\n{'history rows':>12}  {'op':<14}{'n':>5}{'median ms':>11}{'p90 ms':>10}{'cpu ms/req':>12}  statuses")
    for size in sizes:
        for op in OPS:
            cell = results[size][op]
            statuses = " ".join(f"{code}x{n}" for code, n in sorted(cell.statuses.items()))
            print(
                f"{size:>12,}  {op:<14}{len(cell.latencies_ms):>5}{cell.median:>11.2f}{cell.p90:>10.2f}"
                f"{cell.cpu_ms:>12.2f}  {statuses}"
            )
    small, large = sizes[0], sizes[-1]
    print(f"\n{large:,} rows / {small:,} rows (target <= {TARGET}x on the median; server CPU ratio beside it):")
    for op in OPS:
        a, b = results[small][op], results[large][op]
        ratio = b.median / a.median if a.median else 0.0
        cpu = b.cpu_ms / a.cpu_ms if a.cpu_ms else 0.0
        print(f"  {op:<14} {ratio:8.2f}x   cpu {cpu:7.2f}x   {'PASS' if ratio <= TARGET else 'FAIL'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per size and operation (default 200)")
    parser.add_argument("--max-seconds", type=float, default=15.0, help="stop a cell early after this (default 15)")
    parser.add_argument("--sizes", default="10,10000,100000", help="history sizes (default 10,10000,100000)")
    parser.add_argument("--quick", action="store_true", help="50 requests, 8 s per cell at most")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.max_seconds = 50, 8.0
    sizes = [int(s) for s in args.sizes.split(",")]
    sql(f"DROP DATABASE IF EXISTS {DB}", f"CREATE DATABASE {DB} CHARACTER SET utf8mb4")
    service = None
    with tempfile.TemporaryDirectory(prefix="history-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            env = ceiling.huiyuan_env(tmp, db=DB)
            env["HUIYUAN_JOBS__SCHEDULER"] = "false"
            services: list[ceiling.Service] = []
            service, base = ceiling.start_huiyuan(1, env, tmp, services)
            with httpx.Client(base_url=base, timeout=120.0) as client:
                login = client.post("/api/auth/login", json=ADMIN)
                login.raise_for_status()
                staff = {"Authorization": f"Bearer {login.json()['access_token']}"}
                ceiling.define_tiers(base, login.json()["access_token"])
                members = {}
                for size in sizes:
                    created = client.post("/api/members/", json={"name": f"History {size}"}, headers=staff)
                    created.raise_for_status()
                    member = int(created.json()["id"])
                    first = {"order_no": f"hist-first-{member}", "amount": 100}
                    client.post(f"/api/members/{member}/purchases", json=first, headers=staff).raise_for_status()
                    merchant_id = int(sql(f"SELECT merchant_id FROM member WHERE id = {member}", db=DB)[0][0])
                    t0 = time.monotonic()
                    build_history(merchant_id=merchant_id, member_id=member, rows=size)
                    print(f"built member {member}: {size:,} rows per ledger in {time.monotonic() - t0:.1f} s")
                    members[size] = member
                results = {}
                for size in sizes:
                    print(f"history {size:,} (member {members[size]}):", flush=True)
                    results[size] = measure_member(client, staff, service.proc.pid, members[size], args)
            report(results)
            ceiling.check_ledgers(env)
        finally:
            if service is not None:
                service.stop()
            ceiling.cleanup((DB,))
    return 0


if __name__ == "__main__":
    sys.exit(main())
