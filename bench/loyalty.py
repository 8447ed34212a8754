"""Loyalty and payment paths against the foundation's ceilings: earning points, reading them, and the pay notify.

Run: .venv/bin/python bench/loyalty.py [--duration 10] [--connections 32] [--threads 1] [--quick]
Rows measured in one run (wrk on 127.0.0.1): sanic ping and the raw aiomysql transaction (the ceilings, from
bench/ceiling_apps.py), Huiyuan's /healthz, POST /api/members/<id>/purchases (a consumption record that earns
points as an expiring lot and growth value), GET /api/members/<id>/points (balance, expiring soon, ledger page),
and POST /pay/notify/v2/<mch_id> with signed XML for fresh CREATED orders (verify + settle + credit) and for
orders already paid (verify + duplicate detection). Figures are relative: read the ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import ceiling  # noqa: E402
from ceiling import APP_DB, HOST, SPREAD, Service, free_port, sql  # noqa: E402
from ceiling_wrk import Row, lua_script, wrk  # noqa: E402

PURCHASE_BODY = """'{"order_no":"' .. tag .. "-" .. tid .. "-" .. counter .. '","amount":12345}'"""
NOTIFY_AMOUNT = 100


def measure(name: str, base: str, args: argparse.Namespace, tmp: Path, *, warm: bool = True, **script) -> Row:
    """One wrk row (a 1 s warm-up first unless warm=False); script options go to ceiling_wrk.lua_script."""
    stamp = time.time_ns()
    if warm:
        wrk(name, base, args, lua_script(tmp, tag=f"warm{stamp}", **script), seconds=1)
    row = wrk(name, base, args, lua_script(tmp, tag=f"run{stamp}", **script))
    print(f"  {name:<40} {row.rps:>9.0f} req/s", flush=True)
    return row


def baseline(args: argparse.Namespace, tmp: Path, services: list[Service]) -> list[Row]:
    from server.config import Settings

    pool = Settings().database
    ceiling.prepare_raw_db()
    port = free_port()
    cmd = [sys.executable, str(ROOT / "bench" / "ceiling_apps.py"), "--port", str(port), "--db", ceiling.RAW_DB]
    cmd += ["--pool-min", str(pool.pool_min), "--pool-max", str(pool.pool_max)]
    service = Service("ceiling-apps", cmd, dict(os.environ), tmp)
    services.append(service)
    base = f"http://{HOST}:{port}"
    service.wait_ready(f"{base}/ping")
    rows = [
        ceiling.measure("sanic ping", f"{base}/ping", args, tmp),
        ceiling.measure(
            "raw aiomysql tx, 100 rows", base, args, tmp, token=None, paths=[f"/tx/{i}" for i in range(1, SPREAD + 1)]
        ),
    ]
    service.stop()
    return rows


def signed_notifies(member_ids: list[int], count: int, tag: str, db: str = APP_DB) -> tuple[list[str], str]:
    """Insert `count` CREATED v2 orders and return their signed payment notifies and the notify path."""
    from server.config import Settings
    from wechat.paysign import v2_sign
    from wechat.xmlutil import to_xml

    settings = Settings()
    appid, mch_id, key = settings.wechat.miniprogram.appid, settings.wechat.pay.mch_id, settings.wechat.pay.api_key
    merchant_id = sql("SELECT id FROM merchant ORDER BY id LIMIT 1", db=db)[0][0]
    rows, bodies = [], []
    for i in range(count):
        member_id = member_ids[i % len(member_ids)]
        no = f"{tag}{i:07d}"
        rows.append(
            f"({merchant_id},{member_id},'recharge','{no}',{NOTIFY_AMOUNT},0,0,'bench recharge','CREATED','v2',"
            f"'{mch_id}','{appid}','o_bench','','','{{}}',NOW() + INTERVAL 1 HOUR,0,0,NOW(),NOW())"
        )
        fields = {
            "appid": appid,
            "bank_type": "OTHERS",
            "cash_fee": NOTIFY_AMOUNT,
            "fee_type": "CNY",
            "mch_id": mch_id,
            "nonce_str": f"n{i}",
            "openid": "o_bench",
            "out_trade_no": no,
            "result_code": "SUCCESS",
            "return_code": "SUCCESS",
            "time_end": "20261127120000",
            "total_fee": NOTIFY_AMOUNT,
            "trade_type": "JSAPI",
            "transaction_id": f"42000{tag}{i:07d}",
        }
        fields["sign"] = v2_sign(fields, key=key, sign_type="MD5")
        bodies.append(to_xml(fields))
    columns = (
        "merchant_id, member_id, kind, out_trade_no, amount, bonus_balance, bonus_points, description, status, "
        "api_version, mch_id, appid, openid, prepay_id, transaction_id, snapshot, expires_at, refunded_amount, "
        "reconcile_failures, created_at, updated_at"
    )
    for start in range(0, len(rows), 2000):
        sql(f"INSERT INTO pay_order ({columns}) VALUES {','.join(rows[start : start + 2000])}", db=db)
    return bodies, f"/pay/notify/v2/{mch_id}"


def counts() -> tuple[int, int]:
    paid = sql("SELECT COUNT(*) FROM pay_order WHERE status = 'PAID'", db=APP_DB)[0][0]
    credits = sql("SELECT COUNT(*) FROM balance_ledger WHERE kind = 'recharge'", db=APP_DB)[0][0]
    return int(paid), int(credits)


def run(args: argparse.Namespace, tmp: Path, services: list[Service]) -> int:
    print(ceiling.machine())
    rows = baseline(args, tmp, services)
    sql(f"DROP DATABASE IF EXISTS {APP_DB}", f"CREATE DATABASE {APP_DB} CHARACTER SET utf8mb4")
    env = ceiling.huiyuan_env(tmp)
    env["HUIYUAN_JOBS__SCHEDULER"] = "false"  # no background jobs competing with the measured requests
    _, base = ceiling.start_huiyuan(1, env, tmp, services)
    token, member_ids = ceiling.create_members(base)
    print(f"created {len(member_ids)} members via the API\n")
    rows.append(ceiling.measure("huiyuan /healthz", f"{base}/healthz", args, tmp))
    purchases = [f"/api/members/{m}/purchases" for m in member_ids]
    rows.append(
        measure(
            "earn points (purchase), 100 members", base, args, tmp, paths=purchases, token=token, body=PURCHASE_BODY
        )
    )
    reads = [f"/api/members/{m}/points" for m in member_ids]
    rows.append(measure("points query, 100 members", base, args, tmp, paths=reads, token=token, method="GET"))
    per_thread = max(4000, args.duration * 1500)
    fresh, path = signed_notifies(member_ids, per_thread * args.threads, "F")
    before = counts()
    notify = {"paths": [path], "token": None, "bodies": fresh, "per_thread": per_thread, "content_type": "text/xml"}
    row = measure("pay notify v2, fresh orders", base, args, tmp, warm=False, **notify)
    time.sleep(1.0)  # requests in flight when wrk stopped still finish
    after = counts()
    row.note = f"orders PAID +{after[0] - before[0]}, recharge ledger rows +{after[1] - before[1]} of {len(fresh)} sent"
    if row.requests > len(fresh):
        row.note += f" (wrk ran past the fresh bodies: {row.requests - len(fresh)} were replays)"
    rows.append(row)
    # wrk calls request() once per thread before the run, so the first body may never have been sent: replay
    # only bodies whose orders the database shows as paid
    paid = {row[0] for row in sql("SELECT out_trade_no FROM pay_order WHERE status = 'PAID'", db=APP_DB)}
    replays = [body for i, body in enumerate(fresh) if f"F{i:07d}" in paid][:200]
    notify |= {"bodies": replays, "per_thread": 0}
    before = counts()
    row = measure("pay notify v2, replays of paid orders", base, args, tmp, **notify)
    time.sleep(1.0)
    row.note = f"recharge ledger rows +{counts()[1] - before[1]} (must be 0: every body was paid already)"
    rows.append(row)
    ceiling.report(rows, args, RATIOS, width=42)
    return ceiling.check_ledgers(env)


RATIOS = [
    ("earn points / raw tx", "earn points (purchase), 100 members", "raw aiomysql tx, 100 rows"),
    ("points query / healthz", "points query, 100 members", "huiyuan /healthz"),
    ("points query / ping", "points query, 100 members", "sanic ping"),
    ("pay notify (credit) / raw tx", "pay notify v2, fresh orders", "raw aiomysql tx, 100 rows"),
    ("pay notify (replay) / raw tx", "pay notify v2, replays of paid orders", "raw aiomysql tx, 100 rows"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured row (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="3 s per row: a smoke run")
    args = parser.parse_args()
    args.workers = 1
    if args.quick:
        args.duration = 3
    if shutil.which("wrk") is None:
        print("wrk not found: install it with `apt-get install -y wrk` (Debian package)", file=sys.stderr)
        return 2
    services: list[Service] = []
    with tempfile.TemporaryDirectory(prefix="loyalty-bench-") as tmp:
        try:
            return run(args, Path(tmp), services)
        finally:
            for service in reversed(services):
                service.stop()
            ceiling.cleanup()


if __name__ == "__main__":
    sys.exit(main())
