"""Coupon claims on ONE hot template under contention, against the same run's raw-driver transaction ceiling.

Run: .venv/bin/python bench/coupons.py [--duration 10] [--connections 32] [--threads 1] [--quick]
Rows (wrk on 127.0.0.1): the raw aiomysql transaction of bench/ceiling_apps.py, then
POST /api/members/<id>/coupons (staff grant) spread over 100 members, every request on the same template
(unlimited stock, per-member limit 100): every claim takes that template's row lock for the stock guard.
After the run the issued counter is checked against the coupon rows. Figures are relative: read the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import ceiling  # noqa: E402
from ceiling import APP_DB, SPREAD, Service, sql  # noqa: E402
from loyalty import measure, start_apps  # noqa: E402

CLAIM = "coupon claim, one hot template, 100 members"
RAW_TX = "raw aiomysql tx, 100 rows"


def hot_template(base: str, token: str) -> int:
    body = {
        "kind": "full_reduction",
        "name": "bench 100-20",
        "threshold": 10_000,
        "reduction": 2_000,
        "valid_days": 30,
        "total_stock": None,
        "per_member_limit": 100,
        "channels": ["staff"],
    }
    response = httpx.post(f"{base}/api/coupon-templates", json=body, headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    return int(response.json()["id"])


def run(args: argparse.Namespace, tmp: Path, services: list[Service]) -> int:
    print(ceiling.machine())
    ceiling.prepare_raw_db()
    apps, apps_base = start_apps(ceiling.RAW_DB, tmp, services)
    members = range(1, SPREAD + 1)
    rows = [ceiling.measure(RAW_TX, apps_base, args, tmp, token=None, paths=[f"/tx/{i}" for i in members])]
    apps.stop()
    sql(f"DROP DATABASE IF EXISTS {APP_DB}", f"CREATE DATABASE {APP_DB} CHARACTER SET utf8mb4")
    env = ceiling.huiyuan_env(tmp)
    env["HUIYUAN_JOBS__SCHEDULER"] = "false"
    service, base = ceiling.start_huiyuan(1, env, tmp, services)
    token, member_ids = ceiling.create_members(base)
    template_id = hot_template(base, token)
    body = f"""'{{"template_id":{template_id},"idempotency_key":"' .. tag .. "-" .. tid .. "-" .. counter .. '"}}'"""
    paths = [f"/api/members/{m}/coupons" for m in member_ids]
    row = measure(CLAIM, base, args, tmp, pgid=service.proc.pid, paths=paths, token=token, body=body)
    time.sleep(1.0)
    issued, coupons = sql(
        f"SELECT (SELECT issued FROM coupon_template WHERE id = {template_id}),"
        f" (SELECT COUNT(*) FROM coupon WHERE template_id = {template_id})",
        db=APP_DB,
    )[0]
    row.note = f"issued {issued}, coupon rows {coupons} ({'equal' if int(issued) == int(coupons) else 'DIFFER'})"
    rows.append(row)
    ceiling.report(rows, args, [("coupon claim / raw tx", CLAIM, RAW_TX)], width=46)
    return 0 if int(issued) == int(coupons) else 1


def main() -> int:
    return ceiling.run_bench(__doc__, run, name="coupons")


if __name__ == "__main__":
    sys.exit(main())
