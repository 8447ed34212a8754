"""Around the notify: Redis down must not stop a credit, and a package's tier gift is granted once."""

from __future__ import annotations

import redis.asyncio as aioredis

from models.ledger.books import BalanceEntry
from tests.payments.helpers import V2_SUCCESS, add_package, me, pay, paying_member, recharge, use_pay_version


async def test_with_redis_down_a_paid_notify_still_credits_once(app, client, admin, demo):
    await use_pay_version("v2")
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-redis")
    order = (await recharge(client, headers, package_id=(await add_package(client, admin))["id"]))["order"]
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2, socket_timeout=0.2)
    live_app, live_gateway = app.ctx.redis, app.ctx.wechat.redis
    app.ctx.redis = app.ctx.wechat.redis = dead
    try:
        assert (await client.get("/healthz")).status_code == 503  # Redis really is unreachable for the app
        fired = await pay(client, order["out_trade_no"], repeat=3)
        assert [(d["status"], d["body"]) for d in fired["deliveries"]] == [(200, V2_SUCCESS)] * 3
    finally:
        app.ctx.redis, app.ctx.wechat.redis = live_app, live_gateway
        await dead.aclose()
    assert await BalanceEntry.filter(member_id=member_id, kind="recharge").count() == 1
    assert (await me(client, headers))["balance"] == order["amount"] + order["bonus_balance"]


async def _tier(client, admin, **body) -> dict:
    response = await client.post("/api/tiers", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_package_tier_gift_is_granted_once_and_held_for_a_year(app, client, admin, demo):
    await use_pay_version("v2")
    await _tier(client, admin, code="normal", name="普通", rank=0, threshold=0)
    gold = await _tier(client, admin, code="gold", name="金卡", rank=1, threshold=100_000, upgrade_gift={"points": 30})
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-tier")
    package = await add_package(client, admin, gift_tier_id=gold["id"])
    order = (await recharge(client, headers, package_id=package["id"]))["order"]
    fired = await pay(client, order["out_trade_no"], repeat=3)
    assert [d["status"] for d in fired["deliveries"]] == [200, 200, 200]

    tier = (await client.get(f"/api/members/{member_id}/tier", headers=admin)).json()
    assert tier["tier"]["code"] == "gold"
    assert tier["manual_until"] is not None and tier["manual_until"][:4] == str(int(tier["since"][:4]) + 1)
    history = (await client.get(f"/api/members/{member_id}/tier/history", headers=admin)).json()["items"]
    assert [(h["reason"], h["to_tier"]) for h in history] == [("package", "gold")]
    assert (await me(client, headers))["points"] == 50 + 30  # package bonus points + gold's upgrade gift, once
