"""Baseline Sanic app for bench/ceiling.py: a bare JSON ping and a raw aiomysql ledger transaction.

Run: python bench/ceiling_apps.py --port P [--db bench_ceiling --pool-min 1 --pool-max 20]
One process, one worker; the tables are created by ceiling.py before this starts.
"""

from __future__ import annotations

import argparse
import os
from itertools import count

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


def create_app(*, db: str, pool_min: int, pool_max: int) -> Sanic:
    """Ping and raw-transaction routes; the pool opens in a listener like Huiyuan's does."""
    app = Sanic("bench_ceiling")
    app.config.ACCESS_LOG = False
    app.config.HEALTH = False
    fallback_keys = count(1)

    @app.before_server_start
    async def open_pool(app: Sanic) -> None:
        app.ctx.pool = await aiomysql.create_pool(
            host="127.0.0.1",
            port=3306,
            user="root",
            password="",
            db=db,
            minsize=pool_min,
            maxsize=pool_max,
            autocommit=False,
            charset="utf8mb4",
        )

    @app.after_server_stop
    async def close_pool(app: Sanic) -> None:
        app.ctx.pool.close()
        await app.ctx.pool.wait_closed()

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
