"""Loyalty and payment paths against same-run ceilings: earning points, reading them, and the pay notify.

Run: .venv/bin/python bench/loyalty.py [--duration 10] [--connections 32] [--threads 1] [--workers 2] [--quick]
Rows measured in one run (wrk on 127.0.0.1): the ceilings from bench/ceiling_apps.py (sanic ping, the raw
aiomysql transaction, a bare-driver purchase doing a Huiyuan purchase's writes in one round trip and in one
round trip per statement), Huiyuan's /healthz, POST /api/members/<id>/purchases, the points read as staff
(GET /api/members/<id>/points) and as the member (GET /api/mp/me/points), a bare aiomysql read of the same
pages, and POST /pay/notify/v2/<mch_id> with signed XML for fresh CREATED orders (verify + settle + credit) and
for orders already paid (verify + duplicate detection). Then issue 12's target ratios with PASS/FAIL, with
--workers N the member's read again on N workers (req/s and per server CPU-second), then check-ledgers.
Figures are relative: read the ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import ceiling  # noqa: E402
from ceiling import APP_DB, HOST, SPREAD, Service, free_port, sql  # noqa: E402
from ceiling_wrk import Row, lua_script, wrk  # noqa: E402

PURCHASE_BODY = """'{"order_no":"' .. tag .. "-" .. tid .. "-" .. counter .. '","amount":12345}'"""
NOTIFY_AMOUNT = 100


def measure(
    name: str, base: str, args: argparse.Namespace, tmp: Path, *, warm: bool = True, pgid: int = 0, **script
) -> Row:
    """One wrk row (a 1 s warm-up first unless warm=False); script options go to ceiling_wrk.lua_script.
    With pgid, the row gets the server process group's CPU seconds during the measured run."""
    stamp = time.time_ns()
    if warm:
        wrk(name, base, args, lua_script(tmp, tag=f"warm{stamp}", **script), seconds=1)
    cpu = ceiling.group_cpu_seconds(pgid) if pgid else 0.0
    row = wrk(name, base, args, lua_script(tmp, tag=f"run{stamp}", **script))
    row.cpu_s = ceiling.group_cpu_seconds(pgid) - cpu if pgid else 0.0
    print(f"  {name:<44} {row.rps:>9.0f} req/s", flush=True)
    return row


def start_apps(db: str, tmp: Path, services: list[Service], name: str = "ceiling-apps") -> tuple[Service, str]:
    """bench/ceiling_apps.py on `db`, with Huiyuan's pool size."""
    from server.config import Settings

    pool = Settings().database
    port = free_port()
    cmd = [sys.executable, str(ROOT / "bench" / "ceiling_apps.py"), "--port", str(port), "--db", db]
    cmd += ["--pool-min", str(pool.pool_min), "--pool-max", str(pool.pool_max)]
    service = Service(name, cmd, dict(os.environ), tmp)
    services.append(service)
    base = f"http://{HOST}:{port}"
    service.wait_ready(f"{base}/ping")
    return service, base


def baseline(args: argparse.Namespace, tmp: Path, services: list[Service]) -> list[Row]:
    ceiling.prepare_raw_db()
    service, base = start_apps(ceiling.RAW_DB, tmp, services)
    pgid = service.proc.pid
    members = range(1, SPREAD + 1)
    rows = [
        ceiling.measure("sanic ping", f"{base}/ping", args, tmp, pgid=pgid),
        ceiling.measure(
            "raw aiomysql tx, 100 rows", base, args, tmp, token=None, paths=[f"/tx/{i}" for i in members], pgid=pgid
        ),
        measure(
            BARE_PURCHASE,
            base,
            args,
            tmp,
            pgid=pgid,
            paths=[f"/purchase/{m}" for m in members],
            token=None,
            body=PURCHASE_BODY,
        ),
        measure(
            "bare purchase, a round trip per statement",
            base,
            args,
            tmp,
            pgid=pgid,
            paths=[f"/purchase-steps/{m}" for m in members],
            token=None,
            body=PURCHASE_BODY,
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


def member_tokens(member_ids: list[int]) -> list[str]:
    """A mini-program member token per member, signed with the server's secret (it runs on the defaults)."""
    from server.auth import issue_member_token
    from server.config import Settings

    security = Settings().security
    merchant_id = int(sql("SELECT id FROM merchant ORDER BY id LIMIT 1", db=APP_DB)[0][0])
    return [
        issue_member_token(
            secret=security.jwt_secret, ttl=security.member_token_ttl, member_id=m, merchant_id=merchant_id
        )[0]
        for m in member_ids
    ]


def same_page(base: str, apps_base: str, member_id: int, token: str) -> str:
    """Whether the bare read answers what Huiyuan answers for one member (balance, expiring soon, ledger ids)."""
    huiyuan = httpx.get(f"{base}/api/mp/me/points", headers={"Authorization": f"Bearer {token}"}).json()
    bare = httpx.get(f"{apps_base}/read/{member_id}").json()

    def key(page: dict) -> tuple:
        return page["balance"], page["expiring_soon"]["points"], [item["id"] for item in page["items"]]

    verdict = "same page as Huiyuan's" if key(huiyuan) == key(bare) else "DIFFERS from Huiyuan's"
    return f"member {member_id}: {verdict} (balance {bare['balance']}, {len(bare['items'])} ledger rows)"


def run(args: argparse.Namespace, tmp: Path, services: list[Service]) -> int:
    print(ceiling.machine())
    rows = baseline(args, tmp, services)
    sql(f"DROP DATABASE IF EXISTS {APP_DB}", f"CREATE DATABASE {APP_DB} CHARACTER SET utf8mb4")
    env = ceiling.huiyuan_env(tmp)
    env["HUIYUAN_JOBS__SCHEDULER"] = "false"  # no background jobs competing with the measured requests
    service, base = ceiling.start_huiyuan(1, env, tmp, services)
    pgid = service.proc.pid
    token, member_ids = ceiling.create_members(base)
    ceiling.define_tiers(base, token)
    print(
        f"created {len(member_ids)} members and tiers {', '.join(t['code'] for t in ceiling.BENCH_TIERS)} via the API\n"
    )
    rows.append(ceiling.measure("huiyuan /healthz", f"{base}/healthz", args, tmp, pgid=pgid))
    purchases = [f"/api/members/{m}/purchases" for m in member_ids]
    rows.append(measure(PURCHASE, base, args, tmp, pgid=pgid, paths=purchases, token=token, body=PURCHASE_BODY))
    reads = [f"/api/members/{m}/points" for m in member_ids]
    rows.append(measure(STAFF_READ, base, args, tmp, pgid=pgid, paths=reads, token=token, method="GET"))
    tokens = member_tokens(member_ids)
    own = {"paths": ["/api/mp/me/points"], "token": None, "tokens": tokens, "method": "GET"}
    rows.append(measure(OWN_READ, base, args, tmp, pgid=pgid, **own))
    # the bare read runs on Huiyuan's own tables right after, so it reads the very same pages
    apps, apps_base = start_apps(APP_DB, tmp, services, name="bare-read")
    bare_reads = [f"/read/{m}" for m in member_ids]
    row = measure(BARE_READ, apps_base, args, tmp, pgid=apps.proc.pid, paths=bare_reads, token=None, method="GET")
    row.note = same_page(base, apps_base, member_ids[0], tokens[0])
    rows.append(row)
    apps.stop()
    per_thread = max(4000, args.duration * 1500)
    fresh, path = signed_notifies(member_ids, per_thread * args.threads, "F")
    before = counts()
    notify = {"paths": [path], "token": None, "bodies": fresh, "per_thread": per_thread, "content_type": "text/xml"}
    row = measure(FRESH_NOTIFY, base, args, tmp, warm=False, pgid=pgid, **notify)
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
    row = measure(REPLAY_NOTIFY, base, args, tmp, pgid=pgid, **notify)
    time.sleep(1.0)
    row.note = f"recharge ledger rows +{counts()[1] - before[1]} (must be 0: every body was paid already)"
    rows.append(row)
    ratios = list(RATIOS)
    if args.workers > 1:
        service.stop()
        service, base = ceiling.start_huiyuan(args.workers, env, tmp, services)
        name = f"{OWN_READ} w{args.workers}"
        rows.append(measure(name, base, args, tmp, pgid=service.proc.pid, **own))
        ratios.append((f"member's points read w{args.workers} / w1 (req/s)", name, OWN_READ))
    ceiling.report(rows, args, ratios, width=46)
    if args.workers > 1:
        by_name = {row.name: row for row in rows}
        one, many = by_name[OWN_READ], by_name[f"{OWN_READ} w{args.workers}"]
        if one.cpu_s and many.cpu_s:
            print(
                f"  member's points read per server CPU-second: w1 {one.requests / one.cpu_s:.0f}, "
                f"w{args.workers} {many.requests / many.cpu_s:.0f} req/cpu-s "
                f"({(many.requests / many.cpu_s) / (one.requests / one.cpu_s):.2f}x); server CPU used "
                f"{one.cpu_s / args.duration:.2f} vs {many.cpu_s / args.duration:.2f} cores of {os.cpu_count()}"
            )
    return ceiling.check_ledgers(env)


PURCHASE = "earn points (purchase), 100 members"
BARE_PURCHASE = "bare purchase, 1 round trip, 100 members"
STAFF_READ = "points read (staff), 100 members"
OWN_READ = "points read (member's own), 100 members"
BARE_READ = "bare aiomysql read, same pages"
FRESH_NOTIFY = "pay notify v2, fresh orders"
REPLAY_NOTIFY = "pay notify v2, replays of paid orders"
RAW_TX = "raw aiomysql tx, 100 rows"
# (label, top row, bottom row[, target]): the targets are issue 12's "Done when"
RATIOS: list = [
    ("purchase / raw tx", PURCHASE, RAW_TX, 0.30),
    ("purchase / bare-driver purchase", PURCHASE, BARE_PURCHASE, 0.75),
    ("fresh notify / raw tx", FRESH_NOTIFY, RAW_TX, 0.35),
    ("member's points read / bare aiomysql read", OWN_READ, BARE_READ, 0.70),
    ("replay notify / raw tx", REPLAY_NOTIFY, RAW_TX, 0.50),
    ("bare purchase / raw tx", BARE_PURCHASE, RAW_TX),
    ("staff points read / bare aiomysql read", STAFF_READ, BARE_READ),
    ("member's points read / healthz", OWN_READ, "huiyuan /healthz"),
    ("healthz / ping", "huiyuan /healthz", "sanic ping"),
]


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=1, help="also measure the member's points read with N workers")


def main() -> int:
    return ceiling.run_bench(__doc__, run, name="loyalty", extra=_options)


if __name__ == "__main__":
    sys.exit(main())
