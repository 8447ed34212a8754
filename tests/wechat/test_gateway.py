"""The WeChat client against the emulator: shared tokens, refresh on 40001, retries, outbox, pay."""

from __future__ import annotations

import asyncio

import pytest

from jobs.outbox import deliver_due
from models.kernel.outbox import OutboxMessage, enqueue
from server import wiring
from wechat.errors import WeChatAPIError
from wechat.gateway import AppClient
from wechat.pay import PayV2Client, PayV3Client

EMU = "/_emulator"


@pytest.fixture
async def gateway(app, demo):
    gateway = app.ctx.wechat
    saved = gateway.retry_delays
    gateway.retry_delays = (0, 0, 0)
    yield gateway
    gateway.retry_delays = saved


async def _calls(client, path: str) -> list[dict]:
    response = await client.get(f"{EMU}/control/calls", params={"path": path})
    assert response.status_code == 200, response.text
    return response.json()["calls"]


async def _template(oa: AppClient, openid: str = "o_user") -> dict:
    return await oa.call(
        "POST",
        "/cgi-bin/message/template/send",
        json={"touser": openid, "template_id": "tpl_1", "data": {"k": {"value": "v"}}},
    )


async def test_token_is_fetched_once_and_shared_by_every_client(client, gateway):
    first = await gateway.official_client()
    second = AppClient(gateway=gateway, credentials=first.credentials)  # as another worker would
    results = await asyncio.gather(*[_template(c) for c in [first, second] * 5])
    assert all(r["errcode"] == 0 for r in results)
    assert len(await _calls(client, "/cgi-bin/stable_token")) == 1
    assert len(await _calls(client, "/cgi-bin/message/template/send")) == 10


async def test_an_invalidated_token_is_refreshed_once_and_the_call_retried(client, gateway, settings):
    oa = await gateway.official_client()
    await _template(oa)
    expired = await client.post(f"{EMU}/control/expire-tokens", json={"appid": settings.wechat.official.appid})
    assert expired.status_code == 200
    result = await _template(oa)
    assert result["errcode"] == 0
    assert len(await _calls(client, "/cgi-bin/stable_token")) == 2
    assert len(await _calls(client, "/cgi-bin/message/template/send")) == 3


async def test_system_busy_is_retried_and_other_errcodes_raise(client, gateway):
    oa = await gateway.official_client()
    await client.post(
        f"{EMU}/control/fail-next", json={"path": "/cgi-bin/message/template/send", "errcode": -1, "times": 2}
    )
    assert (await _template(oa))["errcode"] == 0
    assert len(await _calls(client, "/cgi-bin/message/template/send")) == 3
    await client.post(
        f"{EMU}/control/fail-next", json={"path": "/cgi-bin/message/template/send", "errcode": 40003, "times": 1}
    )
    with pytest.raises(WeChatAPIError) as raised:
        await _template(oa)
    assert raised.value.errcode == 40003


async def test_outbox_delivers_once_and_backs_off_on_failure(client, gateway, demo):
    payload = {"touser": "o_out", "template_id": "tpl_1", "data": {"k": {"value": "v"}}}
    message = await enqueue(merchant_id=demo.merchant.id, topic="wechat.template_send", payload=payload)
    assert await deliver_due(gateway=gateway, topics=wiring.OUTBOX_TOPICS) == 1
    assert await deliver_due(gateway=gateway, topics=wiring.OUTBOX_TOPICS) == 0
    assert (await OutboxMessage.get(id=message.id)).status == "delivered"
    sent = await _calls(client, "/cgi-bin/message/template/send")
    assert [c["body"]["touser"] for c in sent] == ["o_out"]

    failing = await enqueue(merchant_id=demo.merchant.id, topic="wechat.template_send", payload=payload)
    await client.post(
        f"{EMU}/control/fail-next", json={"path": "/cgi-bin/message/template/send", "errcode": 43004, "times": 1}
    )
    assert await deliver_due(gateway=gateway, topics=wiring.OUTBOX_TOPICS) == 0
    row = await OutboxMessage.get(id=failing.id)
    assert row.status == "pending"
    assert row.attempts == 1
    assert "43004" in row.last_error
    assert row.next_attempt_at > row.created_at
    assert await deliver_due(gateway=gateway, topics=wiring.OUTBOX_TOPICS) == 0  # not due yet


async def test_pay_v2_and_v3_clients_place_and_query_orders(client, gateway, settings):
    v2 = await gateway.pay_client(version="v2")
    assert isinstance(v2, PayV2Client)
    answer = await v2.call(
        "/pay/unifiedorder",
        {
            "appid": settings.wechat.miniprogram.appid,
            "body": "Recharge 100",
            "out_trade_no": "R2001",
            "total_fee": 10000,
            "spbill_create_ip": "127.0.0.1",
            "notify_url": "http://huiyuan.test/pay/notify/v2/x",
            "trade_type": "JSAPI",
            "openid": "o_pay",
        },
        sign_type="HMAC-SHA256",
    )
    assert answer["prepay_id"]
    v3 = await gateway.pay_client()
    assert isinstance(v3, PayV3Client)
    created = await v3.call(
        "POST",
        "/v3/pay/transactions/jsapi",
        json_body={
            "appid": settings.wechat.miniprogram.appid,
            "mchid": settings.wechat.pay.mch_id,
            "description": "Plan",
            "out_trade_no": "R3001",
            "notify_url": "http://huiyuan.test/pay/notify/v3/x",
            "amount": {"total": 9900, "currency": "CNY"},
            "payer": {"openid": "o_pay"},
        },
    )
    assert created["prepay_id"]
    queried = await v3.call(
        "GET", "/v3/pay/transactions/out-trade-no/R3001", params={"mchid": settings.wechat.pay.mch_id}
    )
    assert queried["out_trade_no"] == "R3001"
    assert queried["amount"]["total"] == 9900
    assert queried["trade_state"] == "NOTPAY"
