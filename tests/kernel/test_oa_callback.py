"""Official-account callback: signatures, safe mode, replays and redelivery."""

from __future__ import annotations

import asyncio
import time

from models.kernel.inbound import InboundEvent
from models.tenancy.merchants import upsert_wechat_account
from server import wiring
from tests.helpers import other_merchant, set_message_mode
from wechat.crypto import OACrypto, sha1_signature
from wechat.xmlutil import parse_xml, to_xml


def _oa(settings) -> OACrypto:
    official = settings.wechat.official
    return OACrypto(token=official.token, encoding_aes_key=official.encoding_aes_key, appid=official.appid)


def _event_xml(openid: str, create_time: int, event: str = "subscribe", key: str = "qrscene_store:S001") -> str:
    return to_xml(
        {
            "ToUserName": "gh_demo",
            "FromUserName": openid,
            "CreateTime": create_time,
            "MsgType": "event",
            "Event": event,
            "EventKey": key,
        }
    )


def _decrypt_reply(crypto: OACrypto, body: str) -> dict[str, str]:
    outer = parse_xml(body)
    return parse_xml(
        crypto.decrypt(
            encrypt=outer["Encrypt"],
            msg_signature=outer["MsgSignature"],
            timestamp=outer["TimeStamp"],
            nonce=outer["Nonce"],
        )
    )


def _plain_params(settings, timestamp: str | None = None, nonce: str = "n0nce") -> dict[str, str]:
    timestamp = timestamp or str(int(time.time()))
    return {
        "signature": sha1_signature(settings.wechat.official.token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
    }


async def test_url_check_echoes_only_for_a_valid_signature(client, settings):
    params = {**_plain_params(settings), "echostr": "hello-wechat"}
    ok = await client.get("/wechat/official", params=params)
    assert ok.status_code == 200
    assert ok.text == "hello-wechat"
    by_appid = await client.get(f"/wechat/official/{settings.wechat.official.appid}", params=params)
    assert by_appid.text == "hello-wechat"
    forged = await client.get("/wechat/official", params={**params, "signature": "0" * 40})
    assert forged.status_code == 403
    assert forged.json()["error"]["code"] == "wechat.signature_invalid"
    unknown = await client.get("/wechat/official/wxunknown", params=params)
    assert unknown.status_code == 404


async def test_safe_mode_event_is_decrypted_and_recorded_once_across_redeliveries(client, settings):
    crypto = _oa(settings)
    body, params = crypto.build_encrypted_post(
        _event_xml("o_safe", 1700000000), nonce="abc", timestamp=str(int(time.time()))
    )
    replies = []
    for _ in range(3):
        response = await client.post("/wechat/official", params=params, content=body)
        assert response.status_code == 200
        replies.append(_decrypt_reply(crypto, response.text)["Content"])
    assert replies[0] == replies[1] == replies[2]  # a redelivery is answered with the stored reply
    events = await InboundEvent.all()
    assert len(events) == 1
    assert events[0].payload["EventKey"] == "qrscene_store:S001"
    assert events[0].event == "subscribe"
    assert events[0].openid == "o_safe"


async def test_concurrent_redeliveries_record_one_event(client, settings):
    body, params = _oa(settings).build_encrypted_post(
        _event_xml("o_conc", 1700000100), nonce="abc", timestamp=str(int(time.time()))
    )
    responses = await asyncio.gather(*[client.post("/wechat/official", params=params, content=body) for _ in range(5)])
    contents = {_decrypt_reply(_oa(settings), r.text)["Content"] for r in responses}
    assert len(contents) == 1
    assert await InboundEvent.filter(openid="o_conc").count() == 1


async def test_plaintext_mode_and_distinct_events_are_kept_apart(client, settings):
    await set_message_mode("plaintext")
    pushes = ((1700000200, "subscribe"), (1700000201, "SCAN"), (1700000200, "subscribe"))
    for n, (create_time, event) in enumerate(pushes):
        response = await client.post(
            "/wechat/official",
            params=_plain_params(settings, nonce=f"n0nce{n}"),
            content=_event_xml("o_plain", create_time, event=event),
        )
        assert parse_xml(response.text)["ToUserName"] == "o_plain"  # plaintext passive reply
    assert await InboundEvent.filter(openid="o_plain").count() == 2


async def test_forged_tampered_or_stale_pushes_write_nothing(client, settings):
    crypto = _oa(settings)
    now = str(int(time.time()))
    body, params = crypto.build_encrypted_post(_event_xml("o_bad", 1700000300), nonce="abc", timestamp=now)
    forged = await client.post("/wechat/official", params={**params, "signature": "f" * 40}, content=body)
    assert forged.status_code == 403
    tampered_sig = await client.post("/wechat/official", params={**params, "msg_signature": "0" * 40}, content=body)
    assert tampered_sig.status_code == 403
    assert tampered_sig.json()["error"]["code"] == "wechat.push_invalid"
    outer = parse_xml(body)
    flipped = outer["Encrypt"][:-6] + ("AAAAAA" if not outer["Encrypt"].endswith("AAAAAA") else "BBBBBB")
    tampered = await client.post(
        "/wechat/official", params=params, content=to_xml({"ToUserName": "gh_demo", "Encrypt": flipped})
    )
    assert tampered.status_code == 403
    old = str(int(time.time()) - 3600)
    body_old, params_old = crypto.build_encrypted_post(_event_xml("o_bad", 1700000301), nonce="abc", timestamp=old)
    stale = await client.post("/wechat/official", params=params_old, content=body_old)
    assert stale.status_code == 403
    assert stale.json()["error"]["code"] == "wechat.timestamp_stale"
    xxe = (
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        "<xml><ToUserName>gh</ToUserName><FromUserName>&e;</FromUserName><MsgType>event</MsgType></xml>"
    )
    rejected = await client.post("/wechat/official", params=_plain_params(settings), content=xxe)
    assert rejected.status_code == 403
    garbage = await client.post("/wechat/official", params=_plain_params(settings), content=b"not xml at all")
    assert garbage.status_code == 403
    assert await InboundEvent.all().count() == 0


async def test_another_merchants_account_key_cannot_sign_for_this_one(client, settings):
    other = OACrypto(
        token="othertoken",
        encoding_aes_key=settings.wechat.official.encoding_aes_key,
        appid=settings.wechat.official.appid,
    )
    body, params = other.build_encrypted_post(
        _event_xml("o_other", 1700000400), nonce="abc", timestamp=str(int(time.time()))
    )
    response = await client.post(f"/wechat/official/{settings.wechat.official.appid}", params=params, content=body)
    assert response.status_code == 403
    assert await InboundEvent.all().count() == 0


async def test_push_for_an_unknown_appid_is_acknowledged_and_dropped(client, settings):
    body, params = _oa(settings).build_encrypted_post(
        _event_xml("o_x", 1700000500), nonce="abc", timestamp=str(int(time.time()))
    )
    response = await client.post("/wechat/official/wx_not_ours", params=params, content=body)
    assert response.status_code == 200
    assert response.text == "success"
    assert await InboundEvent.all().count() == 0


async def test_admin_sees_received_events(client, settings, admin):
    body, params = _oa(settings).build_encrypted_post(
        _event_xml("o_list", 1700000600), nonce="abc", timestamp=str(int(time.time()))
    )
    await client.post("/wechat/official", params=params, content=body)
    listed = await client.get("/api/wechat/events", headers=admin)
    assert listed.status_code == 200
    assert [item["openid"] for item in listed.json()["items"]] == ["o_list"]


HANDLED: list[str] = []


async def _ping_handler(event) -> dict[str, str]:
    HANDLED.append(event.openid)
    return {"MsgType": "text", "Content": f"pong {event.openid}"}


async def test_handler_runs_once_and_its_reply_comes_back_encrypted(client, settings, monkeypatch):
    monkeypatch.setitem(wiring.OA_EVENTS, "event:huiyuan_test_ping", (_ping_handler,))
    HANDLED.clear()
    crypto = _oa(settings)
    body, params = crypto.build_encrypted_post(
        _event_xml("o_ping", 1700000700, event="huiyuan_test_ping", key=""),
        nonce="abc",
        timestamp=str(int(time.time())),
    )
    replies = [await client.post("/wechat/official", params=params, content=body) for _ in range(3)]
    assert HANDLED == ["o_ping"]
    first = parse_xml(replies[0].text)
    plain = parse_xml(
        crypto.decrypt(
            encrypt=first["Encrypt"],
            msg_signature=first["MsgSignature"],
            timestamp=first["TimeStamp"],
            nonce=first["Nonce"],
        )
    )
    assert plain["Content"] == "pong o_ping"
    assert plain["ToUserName"] == "o_ping"
    assert plain["FromUserName"] == "gh_demo"
    assert [_decrypt_reply(crypto, r.text)["Content"] for r in replies[1:]] == ["pong o_ping", "pong o_ping"]


def test_typed_events_follow_wechatpy_without_reparsing_xml():
    from wechatpy.events import ScanEvent, SubscribeScanEvent, UnsubscribeEvent

    from wechat.events import OAEvent

    subscribe = OAEvent(merchant_id=1, appid="wx", message=parse_xml(_event_xml("o1", 1700000000)))
    typed = subscribe.typed()
    assert isinstance(typed, SubscribeScanEvent)
    assert typed.scene_id == "store:S001"
    assert typed.source == "o1"
    assert subscribe.message["EventKey"] == "qrscene_store:S001"  # the recorded push is left as received
    scan = OAEvent(merchant_id=1, appid="wx", message=parse_xml(_event_xml("o1", 1, event="SCAN", key="store:S001")))
    assert isinstance(scan.typed(), ScanEvent)
    assert scan.typed().scene_id == "store:S001"
    gone = OAEvent(merchant_id=1, appid="wx", message=parse_xml(_event_xml("o1", 1, event="unsubscribe", key="")))
    assert isinstance(gone.typed(), UnsubscribeEvent)


async def test_an_account_without_encoding_aes_key_takes_plaintext_pushes_and_refuses_encrypted_ones(client, settings):
    merchant = (await other_merchant("plainco")).merchant
    await upsert_wechat_account(
        merchant=merchant,
        kind="official",
        appid="wx00000000plain00",
        api_base="emulator",
        secrets={"secret": "s", "token": settings.wechat.official.token},  # 明文模式: no EncodingAESKey
    )
    plain = await client.post(
        "/wechat/official/wx00000000plain00",
        params=_plain_params(settings),
        content=_event_xml("o_no_key", 1700000900, event="unsubscribe", key=""),
    )
    assert (plain.status_code, plain.text) == (200, "success")
    assert await InboundEvent.filter(appid="wx00000000plain00", openid="o_no_key").count() == 1
    encrypted = await client.post(
        "/wechat/official/wx00000000plain00",
        params={**_plain_params(settings), "encrypt_type": "aes", "msg_signature": "0" * 40},
        content=b"<xml><Encrypt><![CDATA[AAAA]]></Encrypt></xml>",
    )
    assert encrypted.status_code == 403, encrypted.text
    assert encrypted.json()["error"]["code"] == "wechat.push_invalid"
