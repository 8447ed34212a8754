"""Bulk member import: rows/s and memory for a large CSV with 1 % bad rows, run in-process.

Run: .venv/bin/python bench/import.py [--rows 1000000] [--sqlite] [--no-tracemalloc]
Against the local MariaDB (scratch database bench_import, dropped and created) or a SQLite file in a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import pymysql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.members.import_csv import LEVEL_OPTIONS, ImportFile, generate  # noqa: E402

HOST = "127.0.0.1"
DB_NAME = "bench_import"


def mysql(*statements: str) -> None:
    conn = pymysql.connect(host=HOST, port=3306, user="root", password="", autocommit=True)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_csv(path: Path, rows: int, store_code: str) -> ImportFile:
    with path.open("w", encoding="utf-8", newline="") as out:
        return generate(rows, store_code=store_code, write=out.write)


async def run(args: argparse.Namespace, env: dict[str, str], work: Path) -> tuple[bool, dict[str, float]]:
    from models.kernel.cipher import DataCipher, set_cipher
    from models.members import custom_fields, import_worker, imports
    from models.members.import_upload import file_chunks
    from server import db, wiring
    from server.config import load_settings
    from server.seed import seed_default_merchant

    settings = load_settings(environ=env)
    wiring.install()
    set_cipher(DataCipher(settings.security.data_key))
    await db.init_db(settings)
    try:
        await db.migrate(settings)
        seed = await seed_default_merchant(settings)
        merchant_id = seed.merchant.id
        await custom_fields.define_field(
            merchant_id=merchant_id, key="level", label="Level", type="enum", options=list(LEVEL_OPTIONS)
        )
        path = work / "members.csv"
        started = time.monotonic()
        expected = await asyncio.to_thread(write_csv, path, args.rows, seed.store.code)
        size_mb = path.stat().st_size / 2**20
        print(f"generated {args.rows:,} rows ({size_mb:.1f} MB) in {time.monotonic() - started:.1f} s")
        with path.open("rb") as upload:
            job = await imports.create_import_job(
                merchant_id=merchant_id, staff_id=None, body=file_chunks(upload), filename=path.name
            )
        rss_before = rss_mb()
        if args.tracemalloc:
            tracemalloc.start()
        started = time.monotonic()

        def progress(job: imports.ImportJob) -> None:
            rate = job.processed_rows / (time.monotonic() - started)
            line = f"\r  {job.processed_rows:,}/{job.total_rows:,} rows, {rate:,.0f} rows/s"
            print(line, end="", file=sys.stderr, flush=True)

        ran = await import_worker.run_import_job(job_id=job.id, on_batch=progress)
        assert ran is not None, "no other worker runs in the bench"
        job = ran
        seconds = time.monotonic() - started
        traced_peak = tracemalloc.get_traced_memory()[1] / 2**20 if args.tracemalloc else float("nan")
        tracemalloc.stop()
        print(file=sys.stderr)
        rejects: list[tuple[int, str]] = []
        while page := await imports.list_rejects(
            merchant_id=merchant_id, job_id=job.id, offset=len(rejects), limit=5000
        ):
            rejects += [(r.line, r.reason) for r in page]
        figures = {
            "rows": args.rows,
            "seconds": seconds,
            "rows/s": args.rows / seconds,
            "created": job.created_rows,
            "rejected": job.rejected_rows,
            "bad rows": len(expected.rejects),
            "ledger rows": expected.points_rows + expected.balance_rows,
            "RSS before import MB": rss_before,
            "peak RSS MB": rss_mb(),
            "tracemalloc peak MB": traced_peak,
        }
        ok = job.status == "done" and rejects == expected.rejects and job.created_rows == expected.good_rows
        if job.status != "done":
            print(f"import {job.status}: {job.error}")
        return ok, figures
    finally:
        await db.close_db()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file in a temp dir instead of MariaDB")
    parser.add_argument("--no-tracemalloc", dest="tracemalloc", action="store_false", help="time without tracing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="huiyuan-bench-import-") as tmp:
        work = Path(tmp)
        (work / "empty.yaml").write_text("{}\n")
        url = f"sqlite://{work / 'bench.sqlite3'}" if args.sqlite else f"mysql://root:@{HOST}:3306/{DB_NAME}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUIYUAN_")}
        env.update(
            HUIYUAN_CONFIG=str(work / "empty.yaml"),  # ignore any local config.yaml
            HUIYUAN_ENVIRONMENT="development",
            HUIYUAN_DATABASE__URL=url,
            HUIYUAN_REDIS__URL="memory://",
        )
        if not args.sqlite:
            mysql(f"DROP DATABASE IF EXISTS {DB_NAME}", f"CREATE DATABASE {DB_NAME} CHARACTER SET utf8mb4")
        try:
            ok, figures = asyncio.run(run(args, env, work))
            check = subprocess.run(
                [sys.executable, "-m", "server", "check-ledgers"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            if not args.sqlite:
                mysql(f"DROP DATABASE IF EXISTS {DB_NAME}")
    backend = "SQLite" if args.sqlite else "MariaDB"
    traced = "on (Python runs ~3x slower; --no-tracemalloc for throughput)" if args.tracemalloc else "off"
    print(f"\nmember import, {backend}, batches of 500, tracemalloc {traced}")
    for name, value in figures.items():
        print(f"  {name:<22} {value:>14,.1f}" if isinstance(value, float) else f"  {name:<22} {value:>14,}")
    print(f"  rejects == bad rows     {'yes' if ok else 'NO'}")
    print(f"  check-ledgers           exit {check.returncode}: {check.stdout.strip().splitlines()[-1]}")
    return 0 if ok and check.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
