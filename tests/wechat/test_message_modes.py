"""WeChat's three message modes per official account (明文 / 兼容 / 安全) and the memory of used signatures."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from models.kernel.errors import Unprocessable
from models.kernel.inbound import InboundEvent
from models.members.members import Member
from models.tenancy.merchants import find_wechat_account, upsert_wechat_account
from tests.helpers import other_merchant, set_message_mode
from wechat.crypto import OACrypto, sha1_signature
from wechat.xmlutil import parse_xml, to_xml

EMU = "/_emulator"


def _oa(settings) -> OACrypto:
    official = settings.wechat.official
    return OACrypto(token=official.token, encoding_aes_key=official.encoding_aes_key, appid=official.appid)


def _subscribe(openid: str, create_time: int = 1700001000) -> str:
    return to_xml(
        {
            "ToUserName": "gh_demo",
            "FromUserName": openid,
            "CreateTime": create_time,
            "MsgType": "event",
            "Event": "subscribe",
            "EventKey": "qrscene_store:S001",
        }
    )


def _plain_params(settings, nonce: str) -> dict[str, str]:
    timestamp = str(int(time.time()))
    signature = sha1_signature(settings.wechat.official.token, timestamp, nonce)
    return {"signature": signature, "timestamp": timestamp, "nonce": nonce, "openid": "o_genuine"}


def _code(response) -> str:
    return response.json()["error"]["code"]


async def test_the_demo_account_is_seeded_in_safe_mode(client):
    account = await find_wechat_account(kind="official")
    assert account is not None
    assert account.message_mode == "safe"


async def test_replayed_query_string_with_a_forged_subscribe_is_refused_in_every_mode(client, settings):
    # plaintext mode: the URL signature covers (token, timestamp, nonce) only, the signature memory stops the replay
    await set_message_mode("plaintext")
    params = _plain_params(settings, nonce="replay1")
    genuine = await client.post("/wechat/official", params=params, content=_subscribe("o_genuine"))
    assert genuine.status_code == 200, genuine.text
    forged = await client.post("/wechat/official", params=params, content=_subscribe("o_attacker", 1700001001))
    assert forged.status_code == 403, forged.text
    assert _code(forged) == "wechat.push_replayed"
    # safe mode: the genuine push is encrypted; its query string with a plaintext body is refused outright
    await set_message_mode("safe")
    body, safe_params = _oa(settings).build_encrypted_post(
        _subscribe("o_genuine_safe"), nonce="replay2", timestamp=str(int(time.time()))
    )
    assert (await client.post("/wechat/official", params=safe_params, content=body)).status_code == 200
    for query in (safe_params, {k: v for k, v in safe_params.items() if k not in ("encrypt_type", "msg_signature")}):
        forged = await client.post("/wechat/official", params=query, content=_subscribe("o_attacker", 1700001002))
        assert forged.status_code == 403, forged.text
        assert _code(forged) == "wechat.plaintext_refused"
    assert await Member.filter(openid="o_attacker").count() == 0
    assert await InboundEvent.filter(openid="o_attacker").count() == 0
    assert await Member.filter(openid__in=("o_genuine", "o_genuine_safe")).count() == 2


@pytest.mark.parametrize("mode", ["safe", "compatible"])
async def test_safe_and_compatible_mode_refuse_plaintext(client, settings, mode):
    await set_message_mode(mode)
    plain = await client.post(
        "/wechat/official", params=_plain_params(settings, nonce="p1"), content=_subscribe("o_plain")
    )
    assert plain.status_code == 403
    assert _code(plain) == "wechat.plaintext_refused"
    flagged = await client.post(
        "/wechat/official",
        params={**_plain_params(settings, nonce="p2"), "encrypt_type": "aes"},  # no msg_signature
        content=_subscribe("o_plain"),
    )
    assert flagged.status_code == 403
    assert _code(flagged) == "wechat.plaintext_refused"
    assert await InboundEvent.all().count() == 0


async def test_compatible_mode_uses_the_encrypted_copy_not_the_plaintext_one(client, settings):
    await set_message_mode("compatible")
    body, params = _oa(settings).build_encrypted_post(
        _subscribe("o_encrypted"), nonce="c1", timestamp=str(int(time.time())), compatible=True
    )
    outer = parse_xml(body)
    assert outer["FromUserName"] == "o_encrypted" and outer["Encrypt"]  # both copies, as WeChat sends them
    forged_copy = to_xml({**outer, "FromUserName": "o_plaintext_copy"})
    response = await client.post("/wechat/official", params=params, content=forged_copy)
    assert response.status_code == 200, response.text
    assert "<Encrypt>" in response.text  # the passive reply is encrypted, as the push was
    assert [e.openid for e in await InboundEvent.all()] == ["o_encrypted"]
    assert await Member.filter(openid="o_plaintext_copy").count() == 0


@pytest.mark.parametrize("mode", ["plaintext", "compatible", "safe"])
async def test_the_emulator_pushes_in_each_mode_and_follows_the_account(client, mode):
    await set_message_mode(mode)
    fired = await client.post(f"{EMU}/control/scan", json={"store": "S001", "openid": f"o_emu_{mode}", "mode": mode})
    assert fired.status_code == 200, fired.text
    delivery = fired.json()["deliveries"][0]
    assert delivery["status"] == 200, delivery
    assert delivery["reply"]["ToUserName"] == f"o_emu_{mode}"  # the welcome, decrypted where it was encrypted
    assert await Member.filter(openid=f"o_emu_{mode}").count() == 1
    default = await client.post(f"{EMU}/control/oa-event", json={"openid": "o_emu_default", "event": "unsubscribe"})
    assert default.json()["mode"] == "safe"  # the emulator's demo account has an EncodingAESKey


async def test_same_signature_and_same_body_changes_nothing_and_answers_the_first_reply(client, settings):
    await set_message_mode("plaintext")
    params = _plain_params(settings, nonce="same1")
    answers = [await client.post("/wechat/official", params=params, content=_subscribe("o_retry")) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    replies = [{k: v for k, v in parse_xml(a.text).items() if k != "CreateTime"} for a in answers]
    assert replies[0] == replies[1] == replies[2]
    assert await InboundEvent.filter(openid="o_retry").count() == 1
    assert await Member.filter(openid="o_retry").count() == 1
    # WeChat's retry with a fresh nonce is caught by the event dedupe (FromUserName + CreateTime + Event)
    retry = await client.post(
        "/wechat/official", params=_plain_params(settings, nonce="same2"), content=_subscribe("o_retry")
    )
    assert retry.status_code == 200
    assert await Member.filter(openid="o_retry").count() == 1


async def test_same_signature_with_another_body_is_refused(client, settings):
    await set_message_mode("plaintext")
    params = _plain_params(settings, nonce="diff1")
    first = await client.post("/wechat/official", params=params, content=_subscribe("o_first", 1700002000))
    assert first.status_code == 200
    other = _subscribe("o_first", 1700002001)  # the same follower, another CreateTime: would pass the event dedupe
    second = await client.post("/wechat/official", params=params, content=other)
    assert second.status_code == 403
    assert _code(second) == "wechat.push_replayed"
    assert await InboundEvent.filter(openid="o_first").count() == 1


async def test_an_unreachable_redis_falls_back_to_the_event_dedupe(client, app, settings):
    await set_message_mode("plaintext")
    real = app.ctx.redis
    app.ctx.redis = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    try:
        params = _plain_params(settings, nonce="down1")
        answers = [await client.post("/wechat/official", params=params, content=_subscribe("o_down")) for _ in (1, 2)]
        body, safe_params = _oa(settings).build_encrypted_post(
            _subscribe("o_down_safe"), nonce="down2", timestamp=str(int(time.time()))
        )
        encrypted = await client.post("/wechat/official", params=safe_params, content=body)
    finally:
        await app.ctx.redis.aclose()
        app.ctx.redis = real
    assert [a.status_code for a in answers] == [200, 200]
    assert encrypted.status_code == 200
    assert await Member.filter(openid="o_down").count() == 1
    assert await InboundEvent.filter(openid__in=("o_down", "o_down_safe")).count() == 2


async def test_an_encrypted_mode_needs_an_encoding_aes_key(client, settings):
    merchant = (await other_merchant("nokey")).merchant
    plain_secrets = {"secret": "s", "token": settings.wechat.official.token}
    account = await upsert_wechat_account(
        merchant=merchant, kind="official", appid="wx00000000nokey00", api_base="emulator", secrets=plain_secrets
    )
    assert account.message_mode == "plaintext"  # the default of secrets without an EncodingAESKey
    for mode in ("safe", "compatible", "secret"):
        with pytest.raises(Unprocessable):
            await upsert_wechat_account(
                merchant=merchant,
                kind="official",
                appid="wx00000000nokey00",
                api_base="emulator",
                secrets=plain_secrets,
                message_mode=mode,
            )
    assert (await find_wechat_account(kind="official", key="wx00000000nokey00")).message_mode == "plaintext"
