"""WeChat Pay notify callbacks: v2/v3 payments and refunds from the emulator, forgeries, official vectors."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest

from models.kernel import clock
from models.tenancy.merchants import upsert_wechat_account
from server import wiring
from server.seed import ensure_merchant
from tests.conftest import BASE_URL
from tests.wechat.vectordata import by_id, load
from wechat.emulator import PLATFORM_PUBLIC_KEY_ID, merchant_private_key_pem, platform_private_key_pem
from wechat.errors import WeChatCryptoError, WeChatSignatureError
from wechat.paynotify import NotifyNotProcessed, NotifyRejected, PayNotify, verify_v2, verify_v3
from wechat.paysign import v2_sign, v3_aead_encrypt, v3_response_message, v3_sign_message
from wechat.xmlutil import to_xml

EMU = "/_emulator"
V2_OK = next(i for i in load("notify-protocol.json")["items"] if i["id"] == "pay_v2_notify_ack")["success_response_xml"]
OTHER_APPID = "wx00000000other0a"
received: list[PayNotify] = []
fail_with: list[Exception] = []  # when set, the test handlers raise it instead of recording


def _recording(settle):
    """The wiring's settling function, then a record of the notify (or the failure a test asks for)."""

    async def record(notify: PayNotify) -> None:
        await settle(notify)
        if fail_with:
            raise fail_with[0]
        received.append(notify)

    return record


@pytest.fixture(autouse=True)
def _fresh_records(monkeypatch):
    received.clear()
    fail_with.clear()
    for kind, settle in list(wiring.PAY_NOTIFIES.items()):
        monkeypatch.setitem(wiring.PAY_NOTIFIES, kind, _recording(settle))


def _v2_fail(message: str) -> str:
    return f"<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[{message}]]></return_msg></xml>"


async def _fire(client, action: str, **body: object) -> dict:
    response = await client.post(f"{EMU}/control/{action}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def _v2_order(app, settings, out_trade_no: str, *, sign_type: str = "MD5", appid: str = "") -> None:
    v2 = await app.ctx.wechat.pay_client(version="v2")
    order = {"appid": appid or settings.wechat.miniprogram.appid, "body": "Recharge", "out_trade_no": out_trade_no}
    order |= {"total_fee": 1234, "spbill_create_ip": "127.0.0.1", "trade_type": "JSAPI", "openid": "o_payer"}
    order["notify_url"] = f"{BASE_URL}/pay/notify/v2/{settings.wechat.pay.mch_id}"
    assert (await v2.call("/pay/unifiedorder", order, sign_type=sign_type))["prepay_id"].startswith("wx")


async def _v3_order(app, settings, out_trade_no: str, *, appid: str = "") -> None:
    v3 = await app.ctx.wechat.pay_client()
    order = {"appid": appid or settings.wechat.miniprogram.appid, "mchid": settings.wechat.pay.mch_id}
    order |= {"description": "Plan", "out_trade_no": out_trade_no, "payer": {"openid": "o_payer"}}
    order |= {"amount": {"total": 990, "currency": "CNY"}}
    order["notify_url"] = f"{BASE_URL}/pay/notify/v3/{settings.wechat.pay.mch_id}"
    assert (await v3.call("POST", "/v3/pay/transactions/jsapi", json_body=order))["prepay_id"].startswith("wx")


def _v2_body(settings, *, key: str = "", sign_type: str = "MD5", **overrides: str) -> bytes:
    fields = {"appid": settings.wechat.miniprogram.appid, "mch_id": settings.wechat.pay.mch_id, "nonce_str": "n0nce"}
    fields |= {"out_trade_no": "F2001", "result_code": "SUCCESS", "return_code": "SUCCESS", "total_fee": "100"}
    fields |= {"transaction_id": "4200000000000000000000000001", **overrides}
    if sign_type != "MD5":
        fields["sign_type"] = sign_type
    fields["sign"] = v2_sign(fields, key=key or settings.wechat.pay.api_key, sign_type=sign_type)
    return to_xml(fields).encode()


def _transaction(settings, **overrides: object) -> dict:
    resource = {"appid": settings.wechat.miniprogram.appid, "mchid": settings.wechat.pay.mch_id, "out_trade_no": "F3"}
    resource |= {"transaction_id": "4200000000000000000000000002", "trade_state": "SUCCESS"}
    return {**resource, "amount": {"total": 100, "payer_total": 100, "currency": "CNY"}, **overrides}


def _v3_request(
    settings, resource: dict, *, timestamp: int | None = None, serial: str = PLATFORM_PUBLIC_KEY_ID, key: bytes = b""
) -> tuple[bytes, dict[str, str]]:
    """A v3 TRANSACTION.SUCCESS notify signed with the emulator platform key (or `key`)."""
    nonce, aad, v3_key = "0123456789ab", "transaction", settings.wechat.pay.api_v3_key
    ciphertext = v3_aead_encrypt(api_v3_key=v3_key, nonce=nonce, associated_data=aad, plaintext=json.dumps(resource))
    sealed = {"original_type": aad, "algorithm": "AEAD_AES_256_GCM", "ciphertext": ciphertext}
    envelope = {"id": "b5bd2a39-0c3a-5b0e-a0a3-000000000001", "event_type": "TRANSACTION.SUCCESS"}
    envelope |= {"resource_type": "encrypt-resource", "resource": {**sealed, "associated_data": aad, "nonce": nonce}}
    body = json.dumps(envelope).encode()
    stamp = str(timestamp or int(time.time()))
    message = v3_response_message(timestamp=stamp, nonce="h-nonce", body=body).decode()
    signature = v3_sign_message(private_key_pem=key or platform_private_key_pem(), message=message)
    headers = {"Wechatpay-Timestamp": stamp, "Wechatpay-Nonce": "h-nonce", "Wechatpay-Serial": serial}
    return body, {**headers, "Wechatpay-Signature": signature, "Content-Type": "application/json"}


@pytest.mark.parametrize("sign_type", ["HMAC-SHA256", "MD5"])
async def test_v2_payment_notify_is_verified_dispatched_and_acknowledged(app, client, settings, demo, sign_type):
    await _v2_order(app, settings, f"P2-{sign_type}", sign_type=sign_type)
    fired = await _fire(client, "pay-success", out_trade_no=f"P2-{sign_type}")
    assert [(d["status"], d["body"]) for d in fired["deliveries"]] == [(200, V2_OK)]
    [notify] = received
    assert (notify.version, notify.kind, notify.mch_id) == ("v2", "transaction", settings.wechat.pay.mch_id)
    assert notify.merchant_id == demo.merchant.id
    assert notify.fields["out_trade_no"] == f"P2-{sign_type}"
    assert notify.fields["total_fee"] == "1234"
    assert notify.fields["transaction_id"] == fired["transaction_id"] == notify.raw_id
    assert notify.fields.get("sign_type") == (None if sign_type == "MD5" else sign_type)


async def test_v3_payment_notify_is_decrypted_dispatched_and_answered_204(app, client, settings, demo):
    await _v3_order(app, settings, "P3-1", appid=settings.wechat.official.appid)
    fired = await _fire(client, "pay-success", out_trade_no="P3-1")
    assert [(d["status"], d["body"]) for d in fired["deliveries"]] == [(204, "")]
    [notify] = received
    assert (notify.version, notify.kind, notify.merchant_id) == ("v3", "transaction", demo.merchant.id)
    assert notify.fields["out_trade_no"] == "P3-1"
    assert notify.fields["amount"]["total"] == 990
    assert notify.fields["transaction_id"] == fired["transaction_id"]
    assert notify.fields["appid"] == settings.wechat.official.appid
    assert len(notify.raw_id) == 36 and notify.raw_id.count("-") == 4  # the notify id (a UUID)


async def test_v2_refund_round_trip_reaches_the_refund_handler(app, client, settings):
    await _v2_order(app, settings, "R2-1")
    await _fire(client, "pay-success", out_trade_no="R2-1")
    v2 = await app.ctx.wechat.pay_client(version="v2")
    refund = await v2.call(
        "/secapi/pay/refund",
        {
            "appid": settings.wechat.miniprogram.appid,
            "out_trade_no": "R2-1",
            "out_refund_no": "RF2-1",
            "total_fee": 1234,
            "refund_fee": 234,
        },
    )
    fired = await _fire(client, "refund-success", out_refund_no="RF2-1")
    assert [(d["status"], d["body"]) for d in fired["deliveries"]] == [(200, V2_OK)]
    notify = received[-1]
    assert (notify.version, notify.kind) == ("v2", "refund")
    assert notify.fields["out_refund_no"] == "RF2-1"
    assert notify.fields["out_trade_no"] == "R2-1"
    assert notify.fields["refund_fee"] == "234"
    assert notify.fields["refund_status"] == "SUCCESS"
    assert notify.fields["mch_id"] == settings.wechat.pay.mch_id
    assert notify.raw_id == refund["refund_id"] == fired["refund_id"]


async def test_v3_refund_round_trip_reaches_the_refund_handler(app, client, settings):
    await _v3_order(app, settings, "R3-1")
    await _fire(client, "pay-success", out_trade_no="R3-1")
    v3 = await app.ctx.wechat.pay_client()
    await v3.call(
        "POST",
        "/v3/refund/domestic/refunds",
        json_body={
            "out_trade_no": "R3-1",
            "out_refund_no": "RF3-1",
            "notify_url": f"{BASE_URL}/pay/notify/v3/{settings.wechat.pay.mch_id}",
            "amount": {"refund": 90, "total": 990, "currency": "CNY"},
        },
    )
    fired = await _fire(client, "refund-success", out_refund_no="RF3-1")
    assert [(d["status"], d["body"]) for d in fired["deliveries"]] == [(204, "")]
    notify = received[-1]
    assert (notify.version, notify.kind) == ("v3", "refund")
    assert notify.fields["out_refund_no"] == "RF3-1"
    assert notify.fields["refund_id"] == fired["refund_id"]
    assert notify.fields["amount"]["refund"] == 90
    assert notify.fields["refund_status"] == "SUCCESS"


async def test_a_failing_handler_answers_500_so_wechat_retries(app, client, settings, caplog):
    await _v2_order(app, settings, "X2-1")
    fail_with.append(NotifyNotProcessed("order row locked"))
    with caplog.at_level(logging.WARNING, logger="huiyuan.wechat.paynotify"):
        fired = await _fire(client, "pay-success", out_trade_no="X2-1")
    assert [(d["status"], d["body"]) for d in fired["deliveries"]] == [(500, _v2_fail("not processed"))]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("X2-1" in line and settings.wechat.pay.mch_id in line for line in logged), logged
    assert not any(settings.wechat.pay.api_key in line for line in caplog.messages)
    await _v3_order(app, settings, "X3-1")
    fail_with[0] = RuntimeError("database went away")
    fired = await _fire(client, "pay-success", out_trade_no="X3-1")
    assert [d["status"] for d in fired["deliveries"]] == [500]
    assert json.loads(fired["deliveries"][0]["body"]) == {"code": "FAIL", "message": "not processed"}
    assert received == []
    fail_with.clear()  # WeChat's next attempt, once the handler recovers
    again = await _fire(client, "pay-success", out_trade_no="X3-1")
    assert [d["status"] for d in again["deliveries"]] == [204]
    assert [n.fields["out_trade_no"] for n in received] == ["X3-1"]


async def test_forged_or_tampered_v2_notifies_are_400_and_not_dispatched(client, settings):
    url = f"/pay/notify/v2/{settings.wechat.pay.mch_id}"
    genuine = _v2_body(settings)
    assert (await client.post(url, content=genuine)).text == V2_OK  # the forgeries below differ only as named
    assert len(received) == 1
    forgeries = {
        "one byte flipped": genuine.replace(b"<total_fee><![CDATA[100]]>", b"<total_fee><![CDATA[900]]>"),
        "another key": _v2_body(settings, key="not-the-merchant-key-0123456789ab"),
        "sign_type says HMAC, signed MD5": _v2_body(settings).replace(
            b"<sign>", b"<sign_type><![CDATA[HMAC-SHA256]]></sign_type><sign>"
        ),
        "unknown sign_type": _v2_body(settings, sign_type="HMAC-SHA256").replace(b"HMAC-SHA256", b"SHA1"),
        "no sign": to_xml({"return_code": "SUCCESS", "mch_id": settings.wechat.pay.mch_id}).encode(),
        "return_code FAIL": _v2_body(settings, return_code="FAIL"),
        "another mch_id": _v2_body(settings, mch_id="1900000999"),
        "unknown appid": _v2_body(settings, appid="wx00000000unknown"),
        "req_info not ours": _v2_body(settings).replace(b"<sign>", b"<req_info>AAAA</req_info><sign>"),
    }
    for name, body in forgeries.items():
        response = await client.post(url, content=body)
        assert response.status_code == 401, name
        assert response.text.startswith("<xml><return_code><![CDATA[FAIL]]></return_code><return_msg>"), name
    assert len(received) == 1


async def test_dtd_xxe_and_malformed_v2_bodies_are_401(client, settings):
    url = f"/pay/notify/v2/{settings.wechat.pay.mch_id}"
    xxe = b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><a>&x;</a></xml>'
    bomb = b'<!DOCTYPE xml [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><xml><return_code>&b;</return_code></xml>'
    for body in (xxe, bomb, b"<xml><return_code>SUCCESS", b"", b"\xff\xfe not xml", b'{"json": true}'):
        response = await client.post(url, content=body)
        assert response.status_code == 401, body
        assert "FAIL" in response.text
    assert received == []


async def test_forged_v3_notifies_are_401_and_not_dispatched(client, settings):
    url = f"/pay/notify/v3/{settings.wechat.pay.mch_id}"
    body, headers = _v3_request(settings, _transaction(settings))
    assert (await client.post(url, content=body, headers=headers)).status_code == 204
    assert len(received) == 1
    forgeries = {
        "signed with another key": _v3_request(settings, _transaction(settings), key=merchant_private_key_pem()),
        "body tampered after signing": (body.replace(b'"TRANSACTION.SUCCESS"', b'"TRANSACTION.SUCCESZ"'), headers),
        "wrong serial": _v3_request(settings, _transaction(settings), serial="PUB_KEY_ID_OTHER"),
        "stale timestamp": _v3_request(settings, _transaction(settings), timestamp=int(time.time()) - 301),
        "future timestamp": _v3_request(settings, _transaction(settings), timestamp=int(time.time()) + 360),
        "mchid mismatch": _v3_request(settings, _transaction(settings, mchid="1900000999")),
        "unknown appid": _v3_request(settings, _transaction(settings, appid="wx00000000unknown")),
        "no signature headers": (body, {"Content-Type": "application/json"}),
    }
    for name, (forged_body, forged_headers) in forgeries.items():
        response = await client.post(url, content=forged_body, headers=forged_headers)
        assert response.status_code == 401, name
        assert response.json()["code"] == "FAIL", name
    assert len(received) == 1


async def test_a_v3_notify_outside_the_5_minute_window_is_401(app, client, settings):
    await _v3_order(app, settings, "S3-1")
    clock.set_clock(lambda: datetime.now(UTC) + timedelta(minutes=6))
    try:
        fired = await _fire(client, "pay-success", out_trade_no="S3-1")
    finally:
        clock.set_clock(None)
    assert [d["status"] for d in fired["deliveries"]] == [401]
    assert json.loads(fired["deliveries"][0]["body"])["code"] == "FAIL"
    assert received == []


async def test_a_payment_naming_another_merchants_appid_is_rejected(app, client, settings):
    names = {"name": "Other Tea", "timezone": "Asia/Shanghai", "store_code": "S1", "store_name": "Other Tea"}
    other = await ensure_merchant(code="other", **names, admin_username="other-admin", admin_password="other-pass-1")
    await upsert_wechat_account(
        merchant=other.merchant, kind="official", appid=OTHER_APPID, secrets={"secret": "s"}, api_base="emulator"
    )
    await _fire(client, "accounts", appid=OTHER_APPID, secret="s")
    await _v2_order(app, settings, "O2-1", appid=OTHER_APPID)
    await _v3_order(app, settings, "O3-1", appid=OTHER_APPID)
    v2 = await _fire(client, "pay-success", out_trade_no="O2-1")
    v3 = await _fire(client, "pay-success", out_trade_no="O3-1")
    assert [d["status"] for d in v2["deliveries"]] == [401]
    assert [d["status"] for d in v3["deliveries"]] == [401]
    assert "appid" in json.loads(v3["deliveries"][0]["body"])["message"]
    assert received == []


async def test_an_unknown_or_malformed_mch_id_is_404(client, settings):
    for mch_id in ("1900000999", "mch.id!", "1" * 33):
        v2 = await client.post(f"/pay/notify/v2/{mch_id}", content=_v2_body(settings, mch_id=mch_id))
        assert (v2.status_code, v2.text) == (404, _v2_fail("unknown mch_id"))
        body, headers = _v3_request(settings, _transaction(settings, mchid=mch_id))
        v3 = await client.post(f"/pay/notify/v3/{mch_id}", content=body, headers=headers)
        assert (v3.status_code, v3.json()) == (404, {"code": "FAIL", "message": "unknown mch_id"})
    assert received == []


def _go_vector_kwargs(vector: dict, **overrides: object) -> dict:
    return {
        "mch_id": "1234567890",
        "api_v3_key": vector["apiv3_key"],
        "platform_public_key_pem": vector["platform_certificate_pem"],
        "platform_public_key_id": vector["headers"]["Wechatpay-Serial"],
        "appids": set(),
        "now": datetime.fromtimestamp(int(vector["headers"]["Wechatpay-Timestamp"]), UTC),
        **overrides,
    }


def test_verify_v3_accepts_the_official_wechatpay_go_notify():
    vector = by_id("pay-v3.json", "v3_notify_full_wechatpay_go")
    kind, fields, notify_id = verify_v3(vector["body"].encode(), vector["headers"], **_go_vector_kwargs(vector))
    assert kind == "payscore"  # PAYSCORE.USER_OPEN_SERVICE: no handler, so the HTTP layer would answer 500
    assert fields == json.loads(vector["expected_plaintext"])
    assert notify_id == "3119dfba-e649-5eec-ab1e-3412bc4d2e17"


def test_verify_v3_rejects_the_official_notify_when_stale_tampered_or_for_another_merchant():
    vector = by_id("pay-v3.json", "v3_notify_full_wechatpay_go")
    body, headers = vector["body"].encode(), vector["headers"]
    stale = _go_vector_kwargs(vector, now=datetime.fromtimestamp(int(headers["Wechatpay-Timestamp"]) + 301, UTC))
    with pytest.raises(WeChatSignatureError, match="stale"):
        verify_v3(body, headers, **stale)
    with pytest.raises(WeChatSignatureError, match="does not verify"):
        verify_v3(body.replace(b"payscore", b"payscorE", 1), headers, **_go_vector_kwargs(vector))
    with pytest.raises(WeChatSignatureError, match="Serial"):
        verify_v3(body, {**headers, "Wechatpay-Serial": "D7CE59D1F522D702"}, **_go_vector_kwargs(vector))
    with pytest.raises(NotifyRejected, match="mchid"):
        verify_v3(body, headers, **_go_vector_kwargs(vector, mch_id="1234567891"))
    with pytest.raises(WeChatCryptoError):
        verify_v3(body, headers, **_go_vector_kwargs(vector, api_v3_key="testMchAPIv3Key1"))


def test_verify_v2_decrypts_the_official_refund_notify():
    vector = by_id("refund-v2.json", "refund_req_info_wechatpy")
    body = vector["notify_xml"].encode()
    kind, fields = verify_v2(body, mch_id=vector["mch_id"], api_key=vector["api_key"], appids=set())
    assert kind == "refund"
    assert {k: fields[k] for k in vector["expected_fields"]} == vector["expected_fields"]
    assert (fields["appid"], fields["mch_id"], fields["refund_fee"]) == (vector["appid"], vector["mch_id"], "1")
    assert "req_info" not in fields and "nonce_str" not in fields  # only the decrypted fields plus appid/mch_id
    with pytest.raises(NotifyRejected, match="mch_id"):
        verify_v2(body, mch_id="12345679", api_key=vector["api_key"], appids=set())
    with pytest.raises(WeChatCryptoError):
        verify_v2(body, mch_id=vector["mch_id"], api_key="OF4Ne3znh8KqL0V4NqmALQa0uXMYKcEj", appids=set())


calls: list[str] = []


async def _chain(notify: PayNotify) -> None:
    calls.append("chain")
    if notify.fields.get("fail") == "not processed":
        raise NotifyNotProcessed("told to fail")
    if notify.fields.get("fail") == "crash":
        raise RuntimeError("handler bug")


async def test_dispatch_reports_success_failures_and_missing_handlers(monkeypatch):
    def notify(kind: str, **fields: object) -> PayNotify:
        return PayNotify(merchant_id=1, mch_id="m", version="v3", kind=kind, fields=fields, raw_id="n")

    monkeypatch.setitem(wiring.PAY_NOTIFIES, "huiyuan_test_chain", _chain)
    calls.clear()
    assert await wiring.dispatch_pay_notify(notify("huiyuan_test_chain")) is True
    assert await wiring.dispatch_pay_notify(notify("huiyuan_test_chain", fail="not processed")) is False
    assert await wiring.dispatch_pay_notify(notify("huiyuan_test_chain", fail="crash")) is False
    assert calls == ["chain", "chain", "chain"]
    assert await wiring.dispatch_pay_notify(notify("huiyuan_test_nobody")) is False
