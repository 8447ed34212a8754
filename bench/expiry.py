"""Points expiry job over a large backlog: how long expiring N lots takes, and that it stays exact.

Run: .venv/bin/python bench/expiry.py [--lots 1000000] [--members 100000] [--spent-every 4] [--sqlite]
Builds a scratch database (MariaDB `bench_expiry`, or a SQLite file), migrates it, seeds the demo merchant and
writes --members members whose points are --lots lots (one earn ledger row each), all due. Every
--spent-every-th lot is half spent first (a debit through the lots), so the job must expire only what is left.
Then runs the job's function (models.points.lots.expire_due_lots) until nothing is due and prints lots/s, then
checks: every balance equals its ledger, no open lot is left, and no account went below zero.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DB = "bench_expiry"
BATCH = 5000


def _settings(url: str):
    from server.config import load_settings

    env = {
        "HUIYUAN_DATABASE__URL": url,
        "HUIYUAN_REDIS__URL": "memory://",
        "HUIYUAN_ENVIRONMENT": "development",
    }
    return load_settings(None, environ=env)


async def _build(args: argparse.Namespace, merchant_id: int, earned_at) -> int:
    """Members, accounts, earn rows and lots, bulk-inserted; returns the total points written."""
    from tortoise.transactions import in_transaction

    from models.ledger.books import PointsAccount, PointsEntry
    from models.members.members import Member
    from models.points.lots import PointsExpiry, PointsLot

    per_member, extra = divmod(args.lots, args.members)
    total, lot_no, started = 0, 0, time.monotonic()
    for first in range(0, args.members, 1000):
        count = min(1000, args.members - first)
        async with in_transaction():
            members = [Member(merchant_id=merchant_id, name=f"Bench {first + i}") for i in range(count)]
            await Member.bulk_create(members, batch_size=1000)
            members = await Member.filter(merchant_id=merchant_id).order_by("-id").limit(count)
            entries, balances = [], {}
            for offset, member in enumerate(reversed(members)):
                lots_here = per_member + (1 if first + offset < extra else 0)
                running = 0
                for _ in range(lots_here):
                    lot_no += 1
                    running += 100
                    entries.append(
                        PointsEntry(
                            merchant_id=merchant_id,
                            member_id=member.id,
                            delta=100,
                            balance_after=running,
                            kind="earn",
                            reason="bench earn",
                            idempotency_key=f"bench:{lot_no}",
                        )
                    )
                balances[member.id] = running
            await PointsAccount.bulk_create(
                [PointsAccount(merchant_id=merchant_id, member_id=m, balance=b) for m, b in balances.items()],
                batch_size=1000,
            )
            await PointsEntry.bulk_create(entries, batch_size=2000)
            keys = [e.idempotency_key for e in entries]
            ids = dict(
                await PointsEntry.filter(merchant_id=merchant_id, idempotency_key__in=keys).values_list(
                    "idempotency_key", "id"
                )
            )
            lots = [
                PointsLot(
                    merchant_id=merchant_id,
                    member_id=e.member_id,
                    entry_id=ids[e.idempotency_key],
                    amount=100,
                    remaining=100,
                    expires_at=earned_at + timedelta(days=365),
                )
                for e in entries
            ]
            await PointsLot.bulk_create(lots, batch_size=2000)
            expiry = [  # the points page's per-instant totals: every lot of a member expires at the same instant
                PointsExpiry(merchant_id=merchant_id, member_id=m, expires_at=earned_at + timedelta(days=365), points=b)
                for m, b in balances.items()
                if b
            ]
            await PointsExpiry.bulk_create(expiry, batch_size=2000)
            total += 100 * len(entries)
        if (first // 1000) % 10 == 0:
            rate = lot_no / max(time.monotonic() - started, 1e-9)
            print(f"  built {first + count:>8} members, {lot_no:>9} lots ({rate:,.0f} lots/s)", flush=True)
    return total


async def _half_spend(args: argparse.Namespace, merchant_id: int) -> int:
    """Spend half of every --spent-every-th lot through spend_points (oldest-expiry first takes that lot)."""
    from models.points.lots import PointsLot, spend_points

    if not args.spent_every:
        return 0
    spent = 0
    member_ids = await PointsLot.filter(merchant_id=merchant_id).distinct().values_list("member_id", flat=True)
    for i, member_id in enumerate(sorted(member_ids)):
        if i % args.spent_every:
            continue
        await spend_points(
            merchant_id=merchant_id,
            member_id=member_id,
            points=50,
            reason="bench half spend",
            idempotency_key=f"bench-spend:{member_id}",
        )
        spent += 50
    return spent


async def run(args: argparse.Namespace, url: str) -> int:
    from tortoise.functions import Sum

    from models.kernel import clock
    from models.kernel.cipher import DataCipher, set_cipher
    from models.ledger.books import PointsAccount, find_mismatches
    from models.points.expiry import expire_due_lots
    from models.points.lots import PointsExpiry, PointsLot, find_expiry_mismatches
    from server import db, wiring
    from server.seed import seed_default_merchant

    wiring.install()  # the ledger's listeners (the lots a debit consumes), as every server process does
    settings = _settings(url)
    set_cipher(DataCipher(settings.security.data_key))
    await db.init_db(settings)
    try:
        await db.migrate(settings)
        seed = await seed_default_merchant(settings)
        merchant_id = seed.merchant.id
        earned_at = clock.now() - timedelta(days=400)
        print(f"building {args.lots:,} lots for {args.members:,} members ...", flush=True)
        started = time.monotonic()
        total = await _build(args, merchant_id, earned_at)
        print(f"built in {time.monotonic() - started:.1f} s: {total:,} points")
        spent = await _half_spend(args, merchant_id)
        print(f"half-spent {spent // 50:,} lots first ({spent:,} points)")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        started = time.monotonic()
        expired_lots, rounds = 0, 0
        while True:
            done = await expire_due_lots(now=clock.now())
            rounds += 1
            if not done:
                break
            expired_lots += done
        seconds = time.monotonic() - started
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(
            f"\nexpiry: {expired_lots:,} lots in {seconds:.1f} s = {expired_lots / max(seconds, 1e-9):,.0f} lots/s "
            f"({rounds} calls); peak RSS {rss_before} -> {rss_after} MB"
        )
        failures = 0
        left = await PointsLot.filter(status="open").count()
        remaining = await PointsAccount.annotate(s=Sum("balance")).first().values_list("s", flat=True)
        print(f"open lots left: {left}; sum of balances: {remaining}")
        failures += left != 0 or (remaining or 0) != 0
        mismatches = [m async for m in find_mismatches() if not isinstance(m, int)]
        print(f"ledger check: {len(mismatches)} mismatches")
        failures += bool(mismatches)
        expiry_rows = await PointsExpiry.all().count()
        expiry_off = [m async for m in find_expiry_mismatches() if not isinstance(m, int)]
        print(f"points expiry totals: {expiry_rows} rows left (must be 0), {len(expiry_off)} mismatches")
        failures += expiry_rows != 0 or bool(expiry_off)
        again = await expire_due_lots(now=clock.now())
        print(f"second run expired {again} lots (must be 0)")
        failures += again != 0
        return 1 if failures else 0
    finally:
        await db.close_db()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lots", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--spent-every", type=int, default=4, help="half-spend every Nth member's first lot (0: none)")
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file instead of the local MariaDB")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="  %(message)s")
    logging.getLogger("huiyuan.points").setLevel(logging.INFO)  # the job's progress line per batch
    if args.members > args.lots:
        parser.error("--members must not exceed --lots")
    with tempfile.TemporaryDirectory(prefix="expiry-bench-") as tmp:
        if args.sqlite:
            url = f"sqlite://{tmp}/expiry.sqlite3"
        else:
            import pymysql

            conn = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {DB}")
                cur.execute(f"CREATE DATABASE {DB} CHARACTER SET utf8mb4")
            url = f"mysql://root:@127.0.0.1:3306/{DB}"
        try:
            return asyncio.run(run(args, url))
        finally:
            if not args.sqlite:
                with conn.cursor() as cur:
                    cur.execute(f"DROP DATABASE IF EXISTS {DB}")
                conn.close()


if __name__ == "__main__":
    sys.exit(main())
