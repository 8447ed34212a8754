"""The member card's custom_field2 shows the member's count of usable coupons, kept current by coalesced syncs."""

from __future__ import annotations

import importlib
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import httpx
from tortoise import connections

from jobs.scheduler import run_job
from models.kernel import clock
from models.kernel.outbox import OutboxMessage
from server import wiring
from tests.cards.helpers import EMU, activated_member, calls, deliver, member_headers, put_template, set_rewards
from tests.coupons.helpers import add_template
from tests.helpers import add_member, add_staff
from tests.points.helpers import adjust

UPDATEUSER = "/card/membercard/updateuser"
ITEMS = [{"sku": "A", "name": "Latte beans 1kg", "category": "beans", "unit_price": 6000, "quantity": 1}]


async def card_state(client: httpx.AsyncClient, *, card_id: str, code: str) -> dict[str, Any]:
    response = await client.post(f"{EMU}/control/card-member", json={"card_id": card_id, "code": code})
    assert response.status_code == 200, response.text
    return response.json()


async def shown(client: httpx.AsyncClient, app: Any, *, card_id: str, code: str) -> str:
    """Deliver the outbox, then what the card in the emulator's wallet shows as its coupon count."""
    await deliver(app)
    return str((await card_state(client, card_id=card_id, code=code)).get("custom_field_value2"))


async def last_notify(client: httpx.AsyncClient) -> dict[str, bool]:
    return (await calls(client, UPDATEUSER))[-1]["body"]["notify_optional"]


async def test_the_card_counts_usable_coupons_through_grant_claim_settle_and_expiry(app, client, admin, demo):
    card_id = (await put_template(client, admin, coupons_url="https://huiyuan.test/mp/coupons"))["card_id"]
    [created] = [c["body"] for c in await calls(client, "/card/create")]
    field = created["card"]["member_card"]["custom_field2"]
    assert field == {"name_type": "FIELD_NAME_TYPE_COUPON", "url": "https://huiyuan.test/mp/coupons"}
    member_id, code = await activated_member(client, app, admin, card_id=card_id, openid="o1", mobile="13800000001")
    [activated] = [c["body"] for c in await calls(client, "/card/membercard/activate")]
    assert activated["init_custom_field_value2"] == "0"
    assert (await card_state(client, card_id=card_id, code=code))["custom_field_value2"] == "0"
    template = await add_template(client, admin, threshold=500, reduction=500, per_member_limit=3)

    grant = {"template_id": template["id"], "idempotency_key": "card-grant-1"}
    granted = await client.post(f"/api/members/{member_id}/coupons", json=grant, headers=admin)
    assert granted.status_code == 201, granted.text
    assert await shown(client, app, card_id=card_id, code=code) == "1"
    assert (await last_notify(client))["is_notify_custom_field2"] is True

    me = member_headers(app, member_id=member_id, merchant_id=demo.merchant.id)
    claimed = await client.post("/api/mp/coupons", json={"template_id": template["id"]}, headers=me)
    assert claimed.status_code == 201, claimed.text
    assert await shown(client, app, card_id=card_id, code=code) == "2"

    await adjust(client, admin, member_id, 10, "card-points")  # points alone: the coupon count is not notified
    assert await shown(client, app, card_id=card_id, code=code) == "2"
    notify = await last_notify(client)
    assert (notify["is_notify_bonus"], notify["is_notify_custom_field2"]) == (True, False)

    cashier = await add_staff(client, admin, username="card-cashier", role="cashier", store_id=demo.store.id)
    order = {"store_id": demo.store.id, "member_id": member_id, "items": ITEMS, "coupon_id": claimed.json()["id"]}
    quote = await client.post("/api/pos/quote", json=order, headers=cashier)
    assert quote.status_code == 200, quote.text
    assert quote.json()["coupon_discount"] == 500
    due = quote.json()["due"]
    settle = {**order, "idempotency_key": "card-order-1", "payments": [{"method": "cash", "amount": due}]}
    settled = await client.post("/api/pos/orders", json=settle, headers=cashier)
    assert settled.status_code == 201, settled.text
    assert await OutboxMessage.filter(topic="card.sync", status="pending").count() == 1  # coupon + points: one sync
    assert await shown(client, app, card_id=card_id, code=code) == "1"
    assert (await last_notify(client))["is_notify_custom_field2"] is True

    later = clock.now() + timedelta(days=40)
    clock.set_clock(lambda: later)
    try:
        assert await run_job("coupons.expire", app.ctx.jobs, wiring.SCHEDULED_JOBS) == "1 coupons expired"
        assert await OutboxMessage.filter(topic="card.sync", status="pending").count() == 1
        assert await shown(client, app, card_id=card_id, code=code) == "0"
    finally:
        clock.set_clock(None)
    assert (await last_notify(client))["is_notify_custom_field2"] is True


async def test_a_member_without_a_card_queues_no_card_sync(app, client, admin, demo):
    await put_template(client, admin)
    plain = int((await add_member(client, admin, phone="13900000301"))["id"])
    template = await add_template(client, admin, threshold=500, reduction=500)
    grant = {"template_id": template["id"], "idempotency_key": "plain-grant"}
    granted = await client.post(f"/api/members/{plain}/coupons", json=grant, headers=admin)
    assert granted.status_code == 201, granted.text
    me = member_headers(app, member_id=plain, merchant_id=demo.merchant.id)
    other = await add_template(client, admin, name="other", threshold=300, reduction=300)
    claimed = await client.post("/api/mp/coupons", json={"template_id": other["id"]}, headers=me)
    assert claimed.status_code == 201, claimed.text
    assert await OutboxMessage.filter(topic="card.sync").count() == 0


async def test_the_migration_queues_the_field_for_existing_cards_and_a_silent_count(app, client, admin, demo):
    card_id = (await put_template(client, admin))["card_id"]
    member_id, code = await activated_member(client, app, admin, card_id=card_id, openid="o1", mobile="13800000001")
    bare, bare_code = await activated_member(client, app, admin, card_id=card_id, openid="o2", mobile="13800000002")
    template = await add_template(client, admin, threshold=500, reduction=500)
    grant = {"template_id": template["id"], "idempotency_key": "mig-grant"}
    assert (await client.post(f"/api/members/{member_id}/coupons", json=grant, headers=admin)).status_code == 201
    await deliver(app)
    before = len(await calls(client, UPDATEUSER))
    fill = importlib.import_module("migrations.0019_card_coupon_field").queue_card_coupon_field
    for _ in range(2):  # a second run while the first's messages are pending adds nothing
        await fill(None, SimpleNamespace(client=connections.get("default")))
    queued = await OutboxMessage.filter(status="pending").order_by("id").values_list("topic", "payload", "coalesce_key")
    assert queued == [
        ("card.update", {"merchant_id": demo.merchant.id}, f"card-update:{demo.merchant.id}"),
        ("card.sync", {"member_id": member_id, "books": []}, f"card:{member_id}"),  # the coupon holder only
    ]
    assert await deliver(app) == 2
    [update] = [c["body"] for c in await calls(client, "/card/update")]
    assert update["member_card"]["custom_field2"] == {"name_type": "FIELD_NAME_TYPE_COUPON"}
    [synced] = [c["body"] for c in await calls(client, UPDATEUSER)][before:]
    assert (synced["code"], synced["custom_field_value2"]) == (code, "1")
    assert not any(synced["notify_optional"].values())
    assert (await card_state(client, card_id=card_id, code=bare_code))["custom_field_value2"] == "0"
    assert bare != member_id


async def test_welcome_coupons_granted_at_activation_are_counted_by_the_activate_call(app, client, admin):
    card_id = (await put_template(client, admin))["card_id"]
    template = await add_template(client, admin, threshold=500, reduction=500, channels=["gift"])
    await set_rewards(client, admin, welcome_coupon_template_ids=[template["id"]])
    _, code = await activated_member(client, app, admin, card_id=card_id, openid="o3", mobile="13800000003")
    [activated] = [c["body"] for c in await calls(client, "/card/membercard/activate")]
    assert activated["init_custom_field_value2"] == "1"
    await deliver(app)
    assert (await card_state(client, card_id=card_id, code=code))["custom_field_value2"] == "1"
