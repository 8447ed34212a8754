"""POS checkout against the same run's raw-driver transaction ceiling: quote and settle req/s.

Run: .venv/bin/python bench/checkout.py [--duration 10] [--connections 32] [--threads 1] [--quick]
Rows measured in one run (wrk on 127.0.0.1): the raw aiomysql transaction of bench/ceiling_apps.py, then
Huiyuan's POST /api/members/<id>/purchases (today's consumption record), POST /api/pos/quote and
POST /api/pos/orders (tier discount, points as cash and stored value, a fresh idempotency key per request) over
100 members each holding plenty of points and stored value; then the ratios and check-ledgers.
Figures are relative: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import ceiling  # noqa: E402
from ceiling import APP_DB, SPREAD, Service, sql  # noqa: E402
from loyalty import PURCHASE_BODY, measure, start_apps  # noqa: E402

PRICE = 12345
POINTS = 100  # 1,000 fen at the default rate
BALANCE = 2000
DUE = PRICE - POINTS * 10 - BALANCE


def seed(base: str, token: str, member_ids: list[int]) -> int:
    """Points and stored value for every member, through the API; returns the demo store's id."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, timeout=10.0, headers=headers) as client:
        for m in member_ids:
            points = {"delta": 10**7, "kind": "adjust", "reason": "bench", "idempotency_key": f"p{m}"}
            balance = {"delta": 10**9, "kind": "recharge", "reason": "bench", "idempotency_key": f"b{m}"}
            for path, body in ((f"/api/members/{m}/points", points), (f"/api/members/{m}/balance", balance)):
                done = client.post(path, json=body)
                if done.status_code != 200:
                    raise RuntimeError(f"seed {path}: {done.status_code} {done.text[:300]}")
        stores = client.get("/api/stores").json()
    items = stores["items"] if isinstance(stores, dict) else stores
    return int(items[0]["id"])


def quote_bodies(store_id: int, member_ids: list[int]) -> list[str]:
    return [
        json.dumps(
            {
                "store_id": store_id,
                "member_id": m,
                "items": [{"sku": "S1", "unit_price": PRICE, "quantity": 1}],
                "points": POINTS,
                "balance": BALANCE,
            }
        )
        for m in member_ids
    ]


def order_body(store_id: int, member_ids: list[int]) -> str:
    """A Lua expression: a member in turn and a fresh idempotency key per request."""
    members = "({" + ",".join(str(m) for m in member_ids) + "})[(counter % " + str(len(member_ids)) + ") + 1]"
    head = (
        f'{{"store_id":{store_id},"items":[{{"sku":"S1","unit_price":{PRICE},"quantity":1}}],"points":{POINTS},'
        f'"balance":{BALANCE},"payments":[{{"method":"cash","amount":{DUE}}}],"expect":{{"due":{DUE}}},"member_id":'
    )
    return f'\'{head}\' .. {members} .. \',"idempotency_key":"\' .. tag .. "-" .. tid .. "-" .. counter .. \'"}}\''


def run(args: argparse.Namespace, tmp: Path, services: list[Service]) -> int:
    print(ceiling.machine())
    ceiling.prepare_raw_db()
    apps, apps_base = start_apps(ceiling.RAW_DB, tmp, services)
    rows = [
        ceiling.measure(
            RAW_TX, apps_base, args, tmp, token=None, paths=[f"/tx/{i}" for i in range(1, SPREAD + 1)],
            pgid=apps.proc.pid,
        )
    ]  # fmt: skip
    apps.stop()
    sql(f"DROP DATABASE IF EXISTS {APP_DB}", f"CREATE DATABASE {APP_DB} CHARACTER SET utf8mb4")
    env = ceiling.huiyuan_env(tmp)
    env["HUIYUAN_JOBS__SCHEDULER"] = "false"
    service, base = ceiling.start_huiyuan(1, env, tmp, services)
    pgid = service.proc.pid
    token, member_ids = ceiling.create_members(base)
    ceiling.define_tiers(base, token)
    store_id = seed(base, token, member_ids)
    print(f"created {len(member_ids)} members with points and stored value, and tiers, via the API\n")
    purchases = [f"/api/members/{m}/purchases" for m in member_ids]
    rows.append(measure(PURCHASE, base, args, tmp, pgid=pgid, paths=purchases, token=token, body=PURCHASE_BODY))
    quotes = {"paths": ["/api/pos/quote"], "token": token, "bodies": quote_bodies(store_id, member_ids)}
    rows.append(measure(QUOTE, base, args, tmp, pgid=pgid, **quotes))
    orders = {"paths": ["/api/pos/orders"], "token": token, "body": order_body(store_id, member_ids)}
    before = int(sql("SELECT COUNT(*) FROM purchase WHERE source = 'pos'", db=APP_DB)[0][0])
    row = measure(SETTLE, base, args, tmp, pgid=pgid, **orders)
    settled = int(sql("SELECT COUNT(*) FROM purchase WHERE source = 'pos'", db=APP_DB)[0][0]) - before
    row.note = f"pos orders +{settled} (warm-up included) for {row.requests - row.non2xx} 2xx in the measured run"
    rows.append(row)
    ceiling.report(rows, args, RATIOS, width=46)
    return ceiling.check_ledgers(env)


RAW_TX = "raw aiomysql tx, 100 rows"
PURCHASE = "purchase (today's record), 100 members"
QUOTE = "pos quote, 100 members"
SETTLE = "pos settle (points + balance), 100 members"
RATIOS: list = [
    ("quote / raw tx", QUOTE, RAW_TX),
    ("settle / raw tx", SETTLE, RAW_TX),
    ("settle / purchase", SETTLE, PURCHASE),
    ("purchase / raw tx", PURCHASE, RAW_TX),
]


def main() -> int:
    return ceiling.run_bench(__doc__, run, name="checkout")


if __name__ == "__main__":
    sys.exit(main())
