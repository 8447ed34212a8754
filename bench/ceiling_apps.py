"""Baseline Sanic app for the benches: a bare JSON ping, raw aiomysql transactions, and bare-driver pages.

Run: python bench/ceiling_apps.py --port P [--db bench_ceiling --pool-min 1 --pool-max 20]
One process, one worker; the tables are created by ceiling.py before this starts.

Routes: /ping; /tx/<id> (UPDATE account + INSERT ledger + COMMIT); /purchase/<member_id> (the writes of a
Huiyuan purchase in one transaction sent as ONE multi-statement round trip, COMMIT included: the physical
limit); /purchase-steps/<member_id> (the same statements one round trip each, rows checked); /read/<member_id>
(the points page of GET /api/members/<id>/points: balance, expiring-soon SUM, 50 ledger rows, one round trip),
which works on any database with Huiyuan's points tables (loyalty.py points it at Huiyuan's own).
"""

from __future__ import annotations

import argparse
import json as jsonlib
import os
from datetime import UTC, datetime, timedelta
from itertools import count
from zoneinfo import ZoneInfo

import aiomysql
from sanic import Sanic, json
from sanic.request import Request
from sanic.response import HTTPResponse

TX_UPDATE = "UPDATE account SET balance = balance + %s WHERE id = %s"
TX_INSERT = (
    "INSERT INTO ledger (account_id, delta, balance_after, reason, idempotency_key) "
    "SELECT id, %s, balance, %s, %s FROM account WHERE id = %s"
)

SCHEMA = (
    "CREATE TABLE account (id INT PRIMARY KEY, balance BIGINT NOT NULL DEFAULT 0,"
    " updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)) ENGINE=InnoDB",
    "CREATE TABLE ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, account_id INT NOT NULL,"
    " delta BIGINT NOT NULL, balance_after BIGINT NOT NULL, reason VARCHAR(255) NOT NULL,"
    " idempotency_key VARCHAR(128) NOT NULL, created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),"
    " UNIQUE KEY uq_ledger_key (idempotency_key), KEY ix_ledger_account (account_id, id)) ENGINE=InnoDB",
)


# Huiyuan's tables a purchase writes, as its migrations create them (models/), without the member/merchant FKs
PURCHASE_SCHEMA = (
    "CREATE TABLE points_account (id INT AUTO_INCREMENT PRIMARY KEY, merchant_id INT NOT NULL,"
    " balance BIGINT NOT NULL, updated_at DATETIME(6) NOT NULL, member_id INT NOT NULL,"
    " UNIQUE KEY member_id (member_id)) ENGINE=InnoDB",
    "CREATE TABLE points_ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, merchant_id INT NOT NULL,"
    " delta BIGINT NOT NULL, balance_after BIGINT NOT NULL, kind VARCHAR(16) NOT NULL, reason VARCHAR(255) NOT NULL,"
    " ref_type VARCHAR(32) NOT NULL, ref_id VARCHAR(64) NOT NULL, idempotency_key VARCHAR(128) NOT NULL,"
    " operator_staff_id INT NULL, created_at DATETIME(6) NOT NULL, member_id INT NOT NULL,"
    " UNIQUE KEY uq_key (merchant_id, idempotency_key), KEY ix_member (member_id, id)) ENGINE=InnoDB",
    "CREATE TABLE points_lot (id BIGINT AUTO_INCREMENT PRIMARY KEY, merchant_id INT NOT NULL, member_id INT NOT NULL,"
    " entry_id BIGINT NOT NULL, amount BIGINT NOT NULL, remaining BIGINT NOT NULL, expired BIGINT NOT NULL,"
    " expires_at DATETIME(6) NULL, status VARCHAR(8) NOT NULL, created_at DATETIME(6) NOT NULL,"
    " UNIQUE KEY entry_id (entry_id), KEY ix_member (member_id, status, expires_at, id),"
    " KEY ix_status (status, expires_at, id)) ENGINE=InnoDB",
    "CREATE TABLE purchase (id BIGINT AUTO_INCREMENT PRIMARY KEY, merchant_id INT NOT NULL, member_id INT NOT NULL,"
    " store_id INT NULL, order_no VARCHAR(64) NOT NULL, amount BIGINT NOT NULL,"
    " items LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL CHECK (json_valid(items)),"
    " points BIGINT NOT NULL, growth BIGINT NOT NULL, status VARCHAR(12) NOT NULL, occurred_at DATETIME(6) NOT NULL,"
    " created_at DATETIME(6) NOT NULL, UNIQUE KEY uq_order (merchant_id, order_no),"
    " KEY ix_member (member_id, occurred_at)) ENGINE=InnoDB",
    "CREATE TABLE growth_ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, merchant_id INT NOT NULL,"
    " member_id INT NOT NULL, delta BIGINT NOT NULL, kind VARCHAR(16) NOT NULL, reason VARCHAR(255) NOT NULL,"
    " idempotency_key VARCHAR(128) NOT NULL, ref_type VARCHAR(32) NOT NULL, ref_id VARCHAR(64) NOT NULL,"
    " occurred_at DATETIME(6) NOT NULL, created_at DATETIME(6) NOT NULL,"
    " UNIQUE KEY uq_key (merchant_id, idempotency_key), KEY ix_member (member_id, occurred_at)) ENGINE=InnoDB",
    "CREATE TABLE member_tier (id INT AUTO_INCREMENT PRIMARY KEY, merchant_id INT NOT NULL, member_id INT NOT NULL,"
    " tier_id INT NULL, since DATETIME(6) NOT NULL, keep_until DATETIME(6) NULL, manual_until DATETIME(6) NULL,"
    " manual_reason VARCHAR(255) NOT NULL, growth_total BIGINT NOT NULL, updated_at DATETIME(6) NOT NULL,"
    " UNIQUE KEY member_id (member_id)) ENGINE=InnoDB",
    "CREATE TABLE outbox_message (id BIGINT AUTO_INCREMENT PRIMARY KEY, merchant_id INT NOT NULL,"
    " topic VARCHAR(64) NOT NULL,"
    " payload LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL CHECK (json_valid(payload)),"
    " status VARCHAR(12) NOT NULL, attempts INT NOT NULL, next_attempt_at DATETIME(6) NOT NULL,"
    " locked_until DATETIME(6) NULL, last_error LONGTEXT NOT NULL, created_at DATETIME(6) NOT NULL,"
    " delivered_at DATETIME(6) NULL, coalesce_key VARCHAR(96) NULL, KEY ix_status (status),"
    " KEY ix_next (status, next_attempt_at), KEY ix_merchant (merchant_id, status, topic)) ENGINE=InnoDB",
)
MERCHANT_ID = 1
EXPIRING_SOON = timedelta(days=30)
ZONE = ZoneInfo("Asia/Shanghai")


def purchase_seed(members: int) -> list[str]:
    """A points account and a tier row for members 1..members of merchant 1."""
    ids = range(1, members + 1)
    return [
        "INSERT INTO points_account (merchant_id, member_id, balance, updated_at) VALUES "
        + ",".join(f"({MERCHANT_ID}, {m}, 0, NOW(6))" for m in ids),
        "INSERT INTO member_tier (merchant_id, member_id, tier_id, since, manual_reason, growth_total, updated_at)"
        " VALUES " + ",".join(f"({MERCHANT_ID}, {m}, NULL, NOW(6), '', 0, NOW(6))" for m in ids),
    ]


# One purchase: lock the account by updating it, the Purchase row (its unique key is the exactly-once guard: a
# repeat fails here, before anything else, and the batch stops before COMMIT), the ledger row with the new
# balance read from the locked row, its lot, growth, the tier's running total, the card-sync outbox row.
PURCHASE_STATEMENTS = (
    "UPDATE points_account SET balance = balance + %(points)s, updated_at = NOW(6) WHERE member_id = %(member)s",
    "INSERT INTO purchase (merchant_id, member_id, store_id, order_no, amount, items, points, growth, status,"
    " occurred_at, created_at) VALUES (%(merchant)s, %(member)s, NULL, %(order_no)s, %(amount)s, '[]', %(points)s,"
    " %(growth)s, 'settled', NOW(6), NOW(6))",
    "INSERT INTO points_ledger (merchant_id, member_id, delta, balance_after, kind, reason, ref_type, ref_id,"
    " idempotency_key, operator_staff_id, created_at) SELECT merchant_id, member_id, %(points)s, balance, 'earn',"
    " 'purchase', 'purchase', %(order_no)s, %(key)s, NULL, NOW(6) FROM points_account WHERE member_id = %(member)s",
    "INSERT INTO points_lot (merchant_id, member_id, entry_id, amount, remaining, expired, expires_at, status,"
    " created_at) VALUES (%(merchant)s, %(member)s, LAST_INSERT_ID(), %(points)s, %(points)s, 0,"
    " NOW(6) + INTERVAL 365 DAY, 'open', NOW(6))",
    "INSERT INTO growth_ledger (merchant_id, member_id, delta, kind, reason, idempotency_key, ref_type, ref_id,"
    " occurred_at, created_at) VALUES (%(merchant)s, %(member)s, %(growth)s, 'purchase', 'purchase', %(key)s,"
    " 'purchase', %(order_no)s, NOW(6), NOW(6))",
    "UPDATE member_tier SET growth_total = growth_total + %(growth)s, updated_at = NOW(6) WHERE member_id = %(member)s",
    "INSERT INTO outbox_message (merchant_id, topic, payload, status, attempts, next_attempt_at, last_error,"
    " created_at, coalesce_key) VALUES (%(merchant)s, 'card.sync', %(payload)s, 'pending', 0, NOW(6), '', NOW(6),"
    " %(coalesce)s)",
)
PURCHASE_BATCH = ";\n".join((*PURCHASE_STATEMENTS, "COMMIT"))

READ_STATEMENTS = (
    "SELECT balance FROM points_account WHERE member_id = %(member)s",
    "SELECT COALESCE(SUM(remaining), 0), MIN(expires_at) FROM points_lot"
    " WHERE member_id = %(member)s AND status = 'open' AND expires_at <= %(soon)s",
    "SELECT id, delta, kind, reason, created_at, balance_after FROM points_ledger"
    " WHERE merchant_id = %(merchant)s AND member_id = %(member)s ORDER BY id DESC LIMIT 50",
)
READ_BATCH = ";\n".join(READ_STATEMENTS)


def purchase_params(member_id: int, body: dict, fallback: str) -> dict:
    order_no = str(body.get("order_no") or fallback)
    amount = int(body.get("amount", 12345))
    return {
        "merchant": MERCHANT_ID,
        "member": member_id,
        "order_no": order_no,
        "amount": amount,
        "points": amount // 100,
        "growth": amount // 100,
        "key": f"purchase:{order_no}",
        "payload": jsonlib.dumps({"member_id": member_id}),
        "coalesce": f"card:{member_id}",
    }


def points_page(balance: int, soon: tuple, rows: list[tuple]) -> dict:
    """The JSON body of Huiyuan's points read, from the three result sets."""
    soon_points, soon_first = soon
    return {
        "balance": int(balance),
        "expiring_soon": {
            "points": int(soon_points),
            "expires_on": soon_first.replace(tzinfo=UTC).astimezone(ZONE).date().isoformat() if soon_first else None,
        },
        "items": [
            {
                "id": id_,
                "delta": delta,
                "kind": kind,
                "reason": reason,
                "created_at": created.replace(tzinfo=UTC).isoformat(),
                "balance_after": after,
            }
            for id_, delta, kind, reason, created, after in rows
        ],
        "next_before_id": rows[-1][0] if len(rows) == 50 else None,
    }


def create_app(*, db: str, pool_min: int, pool_max: int) -> Sanic:
    """Ping and raw-transaction routes; the pool opens in a listener like Huiyuan's does."""
    app = Sanic("bench_ceiling")
    app.config.ACCESS_LOG = False
    app.config.HEALTH = False
    fallback_keys = count(1)

    async def pool(*, autocommit: bool) -> aiomysql.Pool:
        return await aiomysql.create_pool(
            host="127.0.0.1",
            port=3306,
            user="root",
            password="",
            db=db,
            minsize=pool_min,
            maxsize=pool_max,
            autocommit=autocommit,
            charset="utf8mb4",
        )

    @app.before_server_start
    async def open_pool(app: Sanic) -> None:
        app.ctx.pool = await pool(autocommit=False)
        # a read-only page: no transaction to end, a fresh snapshot per statement
        app.ctx.read_pool = await pool(autocommit=True)

    @app.after_server_stop
    async def close_pool(app: Sanic) -> None:
        for pool in (app.ctx.pool, app.ctx.read_pool):
            pool.close()
            await pool.wait_closed()

    @app.get("/ping")
    async def ping(request: Request) -> HTTPResponse:
        return json({"ok": True})

    @app.post("/tx/<account_id:int>")
    async def transaction(request: Request, account_id: int) -> HTTPResponse:
        body = request.json or {}
        delta = int(body.get("delta", 1))
        key = str(body.get("idempotency_key") or f"{os.getpid()}-{next(fallback_keys)}")
        async with app.ctx.pool.acquire() as conn:
            try:
                async with conn.cursor() as cur:
                    if await cur.execute(TX_UPDATE, (delta, account_id)) != 1:
                        await conn.rollback()
                        return json({"error": "no such account"}, status=404)
                    await cur.execute(TX_INSERT, (delta, str(body.get("reason", "bench")), key, account_id))
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise
        return json({"account_id": account_id, "idempotency_key": key})

    @app.post("/purchase/<member_id:int>")
    async def purchase(request: Request, member_id: int) -> HTTPResponse:
        params = purchase_params(member_id, request.json or {}, f"{os.getpid()}-{next(fallback_keys)}")
        async with app.ctx.pool.acquire() as conn:
            try:
                async with conn.cursor() as cur:
                    await cur.execute(PURCHASE_BATCH, params)  # one round trip; reading the results raises errors
                    while await cur.nextset():
                        pass
            except aiomysql.IntegrityError:
                await conn.rollback()
                return json({"error": "order_no already recorded"}, status=409)
            except BaseException:
                await conn.rollback()
                raise
        return json({"member_id": member_id, "order_no": params["order_no"], "points": params["points"]}, status=201)

    @app.post("/purchase-steps/<member_id:int>")
    async def purchase_steps(request: Request, member_id: int) -> HTTPResponse:
        params = purchase_params(member_id, request.json or {}, f"{os.getpid()}-{next(fallback_keys)}")
        async with app.ctx.pool.acquire() as conn:
            try:
                async with conn.cursor() as cur:
                    for statement in PURCHASE_STATEMENTS:
                        if await cur.execute(statement, params) != 1:
                            await conn.rollback()
                            return json({"error": "no such member"}, status=404)
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise
        return json({"member_id": member_id, "order_no": params["order_no"], "points": params["points"]}, status=201)

    @app.get("/read/<member_id:int>")
    async def read(request: Request, member_id: int) -> HTTPResponse:
        params = {
            "merchant": MERCHANT_ID,
            "member": member_id,
            "soon": datetime.now(UTC).replace(tzinfo=None) + EXPIRING_SOON,
        }
        async with app.ctx.read_pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(READ_BATCH, params)
            account = await cur.fetchone()
            await cur.nextset()
            soon = await cur.fetchone()
            await cur.nextset()
            rows = await cur.fetchall()
        if account is None:
            return json({"error": "no such member"}, status=404)
        return json(points_page(account[0], soon, list(rows)))

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", default="bench_ceiling")
    parser.add_argument("--pool-min", type=int, default=1)
    parser.add_argument("--pool-max", type=int, default=20)
    args = parser.parse_args()
    app = create_app(db=args.db, pool_min=args.pool_min, pool_max=args.pool_max)
    app.run(host="127.0.0.1", port=args.port, single_process=True, motd=False, access_log=False)


if __name__ == "__main__":
    main()
