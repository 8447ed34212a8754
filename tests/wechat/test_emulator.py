"""Blueprint-level tests of the WeChat emulator: wire formats, tokens, faults and callbacks into a fake server."""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sanic import HTTPResponse, Sanic
from sanic.request import Request

from server.config import Settings
from wechat.crypto import OACrypto, check_oa_signature
from wechat.emulator import (
    MERCHANT_SERIAL_NO,
    PLATFORM_PUBLIC_KEY_ID,
    merchant_private_key_pem,
    platform_public_key_pem,
)
from wechat.emulator.__main__ import main as cli_main
from wechat.emulator.app import create_blueprint
from wechat.paysign import (
    v2_decrypt_req_info,
    v2_sign,
    v2_verify,
    v3_aead_decrypt,
    v3_request_message,
    v3_sign_message,
    v3_verify,
)
from wechat.xmlutil import parse_xml, to_xml

BASE = "http://emu.test"
EMU = "/_emulator"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_app_names = itertools.count()
SETTINGS = Settings()
OA = SETTINGS.wechat.official
MP = SETTINGS.wechat.miniprogram
PAY = SETTINGS.wechat.pay


def _fake_server(app: Sanic, received: dict[str, list[Any]]) -> None:
    """Add the server's callback routes: decrypt / verify what arrives and record it."""
    crypto = OACrypto(token=OA.token, encoding_aes_key=OA.encoding_aes_key, appid=OA.appid)

    @app.post("/wechat/official/<appid>")
    async def official(request: Request, appid: str) -> HTTPResponse:
        args = {k: request.args.get(k) for k in request.args}
        assert check_oa_signature(
            token=OA.token, signature=args["signature"], timestamp=args["timestamp"], nonce=args["nonce"]
        )
        plain = request.body.decode()
        if args.get("encrypt_type") == "aes":
            encrypt = parse_xml(request.body)["Encrypt"]
            plain = crypto.decrypt(
                encrypt=encrypt, msg_signature=args["msg_signature"], timestamp=args["timestamp"], nonce=args["nonce"]
            )
        received["oa"].append({"appid": appid, "args": args, "raw": request.body, "fields": parse_xml(plain)})
        return HTTPResponse("success")

    @app.post("/pay/notify/v2/<mch_id>")
    async def pay_v2(request: Request, mch_id: str) -> HTTPResponse:
        fields = parse_xml(request.body)
        keys = received["keys"]
        verified = "req_info" in fields or v2_verify(fields, key=keys.get(mch_id, PAY.api_key))
        received["pay_v2"].append({"mch_id": mch_id, "fields": fields, "verified": verified})
        return HTTPResponse(to_xml({"return_code": "SUCCESS", "return_msg": "OK"}), content_type="text/xml")

    @app.post("/pay/notify/v3/<mch_id>")
    async def pay_v3(request: Request, mch_id: str) -> HTTPResponse:
        headers = request.headers
        verified = v3_verify(
            public_key_pem=platform_public_key_pem(),
            timestamp=headers["wechatpay-timestamp"],
            nonce=headers["wechatpay-nonce"],
            body=request.body,
            signature=headers["wechatpay-signature"],
        )
        resource = json.loads(request.body)["resource"]
        plain = v3_aead_decrypt(
            api_v3_key=PAY.api_v3_key,
            nonce=resource["nonce"],
            associated_data=resource["associated_data"],
            ciphertext=resource["ciphertext"],
        )
        received["pay_v3"].append(
            {
                "verified": verified,
                "serial": headers["wechatpay-serial"],
                "body": json.loads(request.body),
                "resource": json.loads(plain),
            }
        )
        return HTTPResponse(status=204)


@pytest.fixture
async def emu() -> AsyncIterator[SimpleNamespace]:
    """A minimal app: the emulator blueprint plus a fake server, all in-process over ASGI."""
    app = Sanic(f"test_emulator_{next(_app_names)}")
    app.config.TOUCHUP = False  # touch-up rewrites Sanic's classes once per process; a second app would fail
    bp = create_blueprint(SETTINGS)
    app.blueprint(bp)
    received: dict[str, Any] = {"oa": [], "pay_v2": [], "pay_v3": [], "keys": {}}
    _fake_server(app, received)
    transport = httpx.ASGITransport(app=app)
    app.ctx.wechat = SimpleNamespace(http=httpx.AsyncClient(transport=transport, base_url=BASE), self_url=BASE)
    async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield SimpleNamespace(client=client, state=bp.ctx.state, received=received)
    await app.ctx.wechat.http.aclose()


async def _token(client: httpx.AsyncClient, appid: str = OA.appid, secret: str = OA.secret) -> str:
    response = await client.get(
        f"{EMU}/cgi-bin/token", params={"grant_type": "client_credential", "appid": appid, "secret": secret}
    )
    return response.json()["access_token"]


async def _post(client: httpx.AsyncClient, path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"{EMU}{path}", params={"access_token": token}, json=body)
    return response.json()


def _member_card(**overrides: Any) -> dict[str, Any]:
    member_card = {
        "base_info": {"title": "Demo", "brand_name": "Demo", "code_type": "CODE_TYPE_TEXT"},
        "supply_bonus": True,
        "supply_balance": False,
        "prerogative": "10% off",
        **overrides,
    }
    return {"card": {"card_type": "MEMBER_CARD", "member_card": member_card}}


def _v2_request(fields: dict[str, Any], *, key: str = PAY.api_key, sign_type: str = "MD5") -> str:
    fields = {"appid": OA.appid, "mch_id": PAY.mch_id, "nonce_str": secrets.token_hex(8), **fields}
    if sign_type != "MD5":
        fields["sign_type"] = sign_type
    fields["sign"] = v2_sign(fields, key=key, sign_type=sign_type)
    return to_xml(fields)


def _order_xml(out_trade_no: str, *, sign_type: str = "MD5", key: str = PAY.api_key) -> str:
    return _v2_request(
        {
            "body": "Recharge",
            "out_trade_no": out_trade_no,
            "total_fee": "1000",
            "spbill_create_ip": "127.0.0.1",
            "notify_url": "https://example.com/pay/notify/v2/1900000109",
            "trade_type": "JSAPI",
            "openid": "o_payer",
        },
        key=key,
        sign_type=sign_type,
    )


def _v3_headers(method: str, path: str, body: str = "", mchid: str = PAY.mch_id) -> dict[str, str]:
    timestamp, nonce = str(int(time.time())), secrets.token_hex(8)
    message = v3_request_message(method=method, url_path=path, timestamp=timestamp, nonce=nonce, body=body)
    signature = v3_sign_message(private_key_pem=merchant_private_key_pem(), message=message)
    auth = (
        f'WECHATPAY2-SHA256-RSA2048 mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
        f'timestamp="{timestamp}",serial_no="{MERCHANT_SERIAL_NO}"'
    )
    return {"Authorization": auth, "Content-Type": "application/json", "Accept": "application/json"}


@pytest.mark.asyncio
async def test_token_is_valid_until_expired_then_40001(emu: SimpleNamespace) -> None:
    token = await _token(emu.client)
    qr = {"action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": "store:S001"}}}
    assert "ticket" in await _post(emu.client, "/cgi-bin/qrcode/create", token, qr)
    await emu.client.post(f"{EMU}/control/expire-tokens", json={"appid": OA.appid})
    assert (await _post(emu.client, "/cgi-bin/qrcode/create", token, qr))["errcode"] == 40001
    assert "ticket" in await _post(emu.client, "/cgi-bin/qrcode/create", await _token(emu.client), qr)
    assert (await _post(emu.client, "/cgi-bin/qrcode/create", token + "x", qr))["errcode"] == 40001


@pytest.mark.asyncio
async def test_token_needs_the_right_secret_and_a_known_appid(emu: SimpleNamespace) -> None:
    params = {"grant_type": "client_credential", "appid": OA.appid, "secret": "wrong"}
    assert (await emu.client.get(f"{EMU}/cgi-bin/token", params=params)).json()["errcode"] == 40125
    params.update(appid="wx_unknown", secret=OA.secret)
    assert (await emu.client.get(f"{EMU}/cgi-bin/token", params=params)).json()["errcode"] == 40013


@pytest.mark.asyncio
async def test_calls_are_recorded_without_secrets(emu: SimpleNamespace) -> None:
    await _token(emu.client)
    await emu.client.post(
        f"{EMU}/cgi-bin/stable_token", json={"grant_type": "client_credential", "appid": OA.appid, "secret": OA.secret}
    )
    calls = (await emu.client.get(f"{EMU}/control/calls", params={"path": "/cgi-bin"})).json()["calls"]
    assert [c["path"] for c in calls] == ["/cgi-bin/token", "/cgi-bin/stable_token"]
    assert calls[0]["query"] == {"grant_type": "client_credential", "appid": OA.appid}
    assert calls[1]["body"] == {"grant_type": "client_credential", "appid": OA.appid}
    await emu.client.delete(f"{EMU}/control/calls")
    assert (await emu.client.get(f"{EMU}/control/calls")).json()["calls"] == []


@pytest.mark.asyncio
async def test_stable_token_is_stable_until_force_refresh(emu: SimpleNamespace) -> None:
    body = {"grant_type": "client_credential", "appid": MP.appid, "secret": MP.secret}
    first = (await emu.client.post(f"{EMU}/cgi-bin/stable_token", json=body)).json()
    second = (await emu.client.post(f"{EMU}/cgi-bin/stable_token", json=body)).json()
    assert first["access_token"] == second["access_token"] and 0 < second["expires_in"] <= 7200
    forced = (await emu.client.post(f"{EMU}/cgi-bin/stable_token", json={**body, "force_refresh": True})).json()
    assert forced["access_token"] != first["access_token"]
    scene = {"scene": "a=1"}
    assert (await _post(emu.client, "/wxa/getwxacodeunlimit", first["access_token"], scene))["errcode"] == 40001
    bad = (await emu.client.post(f"{EMU}/cgi-bin/stable_token", json={**body, "secret": "nope"})).json()
    assert bad["errcode"] == 40125


@pytest.mark.asyncio
async def test_fail_next_answers_the_errcode_n_times(emu: SimpleNamespace) -> None:
    token = await _token(emu.client)
    fault = {"path": "/cgi-bin/message/template/send", "errcode": -1, "times": 2}
    assert (await emu.client.post(f"{EMU}/control/fail-next", json=fault)).status_code == 200
    message = {"touser": "o1", "template_id": "T1", "data": {"first": {"value": "hi"}}}
    answers = [await _post(emu.client, "/cgi-bin/message/template/send", token, message) for _ in range(3)]
    assert [a["errcode"] for a in answers] == [-1, -1, 0]
    assert isinstance(answers[2]["msgid"], int)
    assert (await _post(emu.client, "/cgi-bin/message/template/send", token, {**message, "touser": ""}))[
        "errcode"
    ] == 40003


@pytest.mark.asyncio
async def test_qrcode_create_and_showqrcode_png(emu: SimpleNamespace) -> None:
    token = await _token(emu.client)
    temporary = await _post(
        emu.client,
        "/cgi-bin/qrcode/create",
        token,
        {"expire_seconds": 600, "action_name": "QR_SCENE", "action_info": {"scene": {"scene_id": 7}}},
    )
    permanent = await _post(
        emu.client,
        "/cgi-bin/qrcode/create",
        token,
        {"action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": "store:S1"}}},
    )
    assert temporary["expire_seconds"] == 600 and temporary["url"].startswith("http://weixin.qq.com/q/")
    assert "expire_seconds" not in permanent
    for ticket in (temporary["ticket"], permanent["ticket"]):
        image = await emu.client.get(f"{EMU}/cgi-bin/showqrcode", params={"ticket": ticket})
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content.startswith(PNG_MAGIC)
    assert (await emu.client.get(f"{EMU}/cgi-bin/showqrcode", params={"ticket": "forged"})).status_code == 404
    too_long = {"action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": "x" * 65}}}
    assert (await _post(emu.client, "/cgi-bin/qrcode/create", token, too_long))["errcode"] == 40053


@pytest.mark.asyncio
async def test_jscode2session_with_control_code_is_single_use(emu: SimpleNamespace) -> None:
    code = (await emu.client.post(f"{EMU}/control/mp-code", json={"openid": "o_mp", "unionid": "u_1"})).json()["code"]
    params = {"appid": MP.appid, "secret": MP.secret, "js_code": code, "grant_type": "authorization_code"}
    session = (await emu.client.get(f"{EMU}/sns/jscode2session", params=params)).json()
    assert session["openid"] == "o_mp" and session["unionid"] == "u_1" and len(session["session_key"]) == 24
    assert (await emu.client.get(f"{EMU}/sns/jscode2session", params=params)).json()["errcode"] == 40163
    forged = {**params, "js_code": "not-a-code"}
    assert (await emu.client.get(f"{EMU}/sns/jscode2session", params=forged)).json()["errcode"] == 40029


@pytest.mark.asyncio
async def test_getwxacodeunlimit_png_and_scene_limit(emu: SimpleNamespace) -> None:
    token = await _token(emu.client, MP.appid, MP.secret)
    image = await emu.client.post(
        f"{EMU}/wxa/getwxacodeunlimit",
        params={"access_token": token},
        json={"scene": "m=42", "page": "pages/index/index"},
    )
    assert image.headers["content-type"] == "image/png" and image.content.startswith(PNG_MAGIC)
    assert (await _post(emu.client, "/wxa/getwxacodeunlimit", token, {"scene": "x" * 33}))["errcode"] == 40169


@pytest.mark.asyncio
async def test_card_create_activate_updateuser_are_recorded(emu: SimpleNamespace) -> None:
    token = await _token(emu.client)
    missing = _member_card()
    del missing["card"]["member_card"]["supply_bonus"]
    assert (await _post(emu.client, "/card/create", token, missing))["errcode"] == 41011
    card_id = (await _post(emu.client, "/card/create", token, _member_card()))["card_id"]
    assert card_id.startswith("p") and len(card_id) == 28
    activate = {"membership_number": "M0001", "code": "123456789012", "card_id": card_id, "init_bonus": 100}
    assert (await _post(emu.client, "/card/membercard/activate", token, activate))["errcode"] == 0
    update = {"code": "123456789012", "card_id": card_id, "add_bonus": 25, "record_bonus": "purchase"}
    updated = await _post(emu.client, "/card/membercard/updateuser", token, update)
    assert (updated["errcode"], updated["result_bonus"], updated["result_balance"]) == (0, 125, 0)
    assert (await _post(emu.client, "/card/membercard/updateuser", token, {**update, "card_id": "pForged"}))[
        "errcode"
    ] == 40073
    calls = (await emu.client.get(f"{EMU}/control/calls", params={"path": "/card"})).json()["calls"]
    assert [c["path"] for c in calls] == [
        "/card/create",
        "/card/create",
        "/card/membercard/activate",
        "/card/membercard/updateuser",
        "/card/membercard/updateuser",
    ]
    assert calls[2]["body"] == activate and calls[2]["query"] == {}


@pytest.mark.asyncio
async def test_card_qrcode_decrypt_and_activate_temp_info(emu: SimpleNamespace) -> None:
    token = await _token(emu.client)
    card_id = (await _post(emu.client, "/card/create", token, _member_card()))["card_id"]
    qr = await _post(
        emu.client,
        "/card/qrcode/create",
        token,
        {"action_name": "QR_CARD", "action_info": {"card": {"card_id": card_id, "outer_str": "S001"}}},
    )
    assert qr["errcode"] == 0 and qr["show_qrcode_url"].startswith(f"{BASE}{EMU}/cgi-bin/showqrcode?ticket=")
    assert (await emu.client.get(qr["show_qrcode_url"])).content.startswith(PNG_MAGIC)
    encrypted = (
        await emu.client.post(f"{EMU}/control/card-encrypt-code", json={"card_id": card_id, "code": "998877665544"})
    ).json()["encrypt_code"]
    assert (await _post(emu.client, "/card/code/decrypt", token, {"encrypt_code": encrypted}))["code"] == "998877665544"
    assert (await _post(emu.client, "/card/code/decrypt", token, {"encrypt_code": "AAAA"}))["errcode"] == 40056
    info = {
        "common_field_list": [{"name": "USER_FORM_INFO_FLAG_MOBILE", "value": "13800000000"}],
        "custom_field_list": [],
    }
    fired = (
        await emu.client.post(
            f"{EMU}/control/oa-event",
            json={
                "openid": "o_card",
                "event": "submit_membercard_user_info",
                "card_id": card_id,
                "code": "998877665544",
                "activate_ticket": "ticket-1",
                "info": info,
            },
        )
    ).json()
    assert fired["activate_ticket"] == "ticket-1" and fired["deliveries"][0]["status"] == 200
    temp = await _post(emu.client, "/card/membercard/activatetempinfo/get", token, {"activate_ticket": "ticket-1"})
    assert temp["info"] == info
    assert emu.received["oa"][0]["fields"]["UserCardCode"] == "998877665544"


@pytest.mark.asyncio
async def test_scan_fires_an_encrypted_event_the_server_decrypts(emu: SimpleNamespace) -> None:
    answer = (await emu.client.post(f"{EMU}/control/scan", json={"store": "S001", "openid": "o_scan"})).json()
    assert [d["status"] for d in answer["deliveries"]] == [200]
    got = emu.received["oa"][0]
    assert got["appid"] == OA.appid and got["args"]["encrypt_type"] == "aes" and got["args"]["openid"] == "o_scan"
    fields = got["fields"]
    assert (fields["Event"], fields["EventKey"], fields["FromUserName"]) == (
        "subscribe",
        "qrscene_store:S001",
        "o_scan",
    )
    assert fields["MsgType"] == "event" and fields["ToUserName"].startswith("gh_") and fields["Ticket"]
    await emu.client.post(f"{EMU}/control/scan", json={"store": "S001", "openid": "o_scan", "subscribed": True})
    assert (emu.received["oa"][1]["fields"]["Event"], emu.received["oa"][1]["fields"]["EventKey"]) == (
        "SCAN",
        "store:S001",
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("concurrent", [False, True])
async def test_repeat_delivers_identical_bodies(emu: SimpleNamespace, concurrent: bool) -> None:
    event = {
        "openid": "o_rep",
        "event": "user_get_card",
        "card_id": "pCard",
        "repeat": 3,
        "concurrent": concurrent,
        "create_time": 1700000000,
    }
    answer = (await emu.client.post(f"{EMU}/control/oa-event", json=event)).json()
    assert [d["status"] for d in answer["deliveries"]] == [200, 200, 200]
    bodies = {got["raw"] for got in emu.received["oa"]}
    assert len(emu.received["oa"]) == 3 and len(bodies) == 1
    fields = emu.received["oa"][0]["fields"]
    assert fields["CreateTime"] == "1700000000" and fields["CardId"] == "pCard"
    assert fields["UserCardCode"] == answer["code"] and fields["IsGiveByFriend"] == "0"


@pytest.mark.asyncio
async def test_plain_mode_event_and_bad_extra(emu: SimpleNamespace) -> None:
    event = {"openid": "o_plain", "event": "unsubscribe", "event_key": "", "safe_mode": False}
    answer = (await emu.client.post(f"{EMU}/control/oa-event", json=event)).json()
    assert answer["deliveries"][0]["status"] == 200
    got = emu.received["oa"][0]
    assert "encrypt_type" not in got["args"] and got["fields"]["Event"] == "unsubscribe"
    bad = {"openid": "o", "event": "subscribe", "extra": {"Weight": 1.5}}
    assert (await emu.client.post(f"{EMU}/control/oa-event", json=bad)).status_code == 400


@pytest.mark.asyncio
async def test_unifiedorder_with_a_bad_sign_is_signerror(emu: SimpleNamespace) -> None:
    response = await emu.client.post(f"{EMU}/pay/unifiedorder", content=_order_xml("T-bad", key="wrong-key" * 4))
    fields = parse_xml(response.content)
    assert (fields["return_code"], fields["err_code"]) == ("FAIL", "SIGNERROR")
    assert emu.state.find_order("T-bad") is None


@pytest.mark.asyncio
@pytest.mark.parametrize("sign_type", ["MD5", "HMAC-SHA256"])
async def test_unifiedorder_pay_success_and_refund_notifies_verify(emu: SimpleNamespace, sign_type: str) -> None:
    response = await emu.client.post(f"{EMU}/pay/unifiedorder", content=_order_xml("T-100", sign_type=sign_type))
    fields = parse_xml(response.content)
    assert fields["result_code"] == "SUCCESS" and fields["prepay_id"].startswith("wx")
    assert v2_verify(fields, key=PAY.api_key, sign_type=sign_type)
    paid = (await emu.client.post(f"{EMU}/control/pay-success", json={"out_trade_no": "T-100", "repeat": 2})).json()
    assert [d["status"] for d in paid["deliveries"]] == [200, 200]
    assert "SUCCESS" in paid["deliveries"][0]["body"]
    notified = emu.received["pay_v2"]
    assert [n["verified"] for n in notified] == [True, True] and notified[0]["mch_id"] == PAY.mch_id
    assert (
        notified[0]["fields"]["transaction_id"] == paid["transaction_id"]
        and notified[0]["fields"]["total_fee"] == "1000"
    )
    query = parse_xml(
        (await emu.client.post(f"{EMU}/pay/orderquery", content=_v2_request({"out_trade_no": "T-100"}))).content
    )
    assert query["trade_state"] == "SUCCESS"
    refund = _v2_request({"out_trade_no": "T-100", "out_refund_no": "R-1", "total_fee": "1000", "refund_fee": "300"})
    refunded = parse_xml((await emu.client.post(f"{EMU}/secapi/pay/refund", content=refund)).content)
    assert refunded["result_code"] == "SUCCESS" and refunded["refund_fee"] == "300"
    await emu.client.post(f"{EMU}/control/refund-success", json={"out_refund_no": "R-1"})
    req_info = parse_xml(v2_decrypt_req_info(emu.received["pay_v2"][2]["fields"]["req_info"], api_key=PAY.api_key))
    assert (req_info["out_refund_no"], req_info["refund_status"], req_info["refund_fee"]) == ("R-1", "SUCCESS", "300")


@pytest.mark.asyncio
async def test_merchant_registered_at_run_time(emu: SimpleNamespace) -> None:
    merchant = {"mch_id": "1900000200", "api_key": "k" * 32, "api_v3_key": "v" * 32}
    assert (await emu.client.post(f"{EMU}/control/accounts", json=merchant)).status_code == 200
    emu.received["keys"]["1900000200"] = merchant["api_key"]
    order = _v2_request(
        {
            "mch_id": "1900000200",
            "body": "x",
            "out_trade_no": "T-2",
            "total_fee": "1",
            "spbill_create_ip": "127.0.0.1",
            "notify_url": "https://x/pay/notify/v2/1900000200",
            "trade_type": "JSAPI",
            "openid": "o",
        },
        key=merchant["api_key"],
    )
    assert (
        parse_xml((await emu.client.post(f"{EMU}/pay/unifiedorder", content=order)).content)["result_code"] == "SUCCESS"
    )
    await emu.client.post(f"{EMU}/control/pay-success", json={"out_trade_no": "T-2"})
    assert emu.received["pay_v2"][0] == {
        "mch_id": "1900000200",
        "fields": emu.received["pay_v2"][0]["fields"],
        "verified": True,
    }


@pytest.mark.asyncio
async def test_v3_jsapi_signed_response_notify_and_close(emu: SimpleNamespace) -> None:
    path = "/v3/pay/transactions/jsapi"
    body = json.dumps(
        {
            "appid": MP.appid,
            "mchid": PAY.mch_id,
            "description": "Recharge",
            "out_trade_no": "V3-1",
            "notify_url": f"{BASE}/pay/notify/v3/{PAY.mch_id}",
            "amount": {"total": 500, "currency": "CNY"},
            "payer": {"openid": "o_v3"},
        }
    )
    assert (await emu.client.post(f"{EMU}{path}", content=body)).status_code == 401
    forged = _v3_headers("POST", path, body.replace("500", "501"))
    assert (await emu.client.post(f"{EMU}{path}", content=body, headers=forged)).json()["code"] == "SIGN_ERROR"
    response = await emu.client.post(f"{EMU}{path}", content=body, headers=_v3_headers("POST", path, body))
    assert response.status_code == 200 and response.json()["prepay_id"].startswith("wx")
    assert response.headers["wechatpay-serial"] == PLATFORM_PUBLIC_KEY_ID
    assert v3_verify(
        public_key_pem=platform_public_key_pem(),
        timestamp=response.headers["wechatpay-timestamp"],
        nonce=response.headers["wechatpay-nonce"],
        body=response.content,
        signature=response.headers["wechatpay-signature"],
    )
    await emu.client.post(f"{EMU}/control/pay-success", json={"out_trade_no": "V3-1"})
    notify = emu.received["pay_v3"][0]
    assert notify["verified"] and notify["body"]["event_type"] == "TRANSACTION.SUCCESS"
    assert (notify["resource"]["trade_state"], notify["resource"]["amount"]["total"]) == ("SUCCESS", 500)
    query_path = f"/v3/pay/transactions/out-trade-no/V3-1?mchid={PAY.mch_id}"
    queried = await emu.client.get(f"{EMU}{query_path}", headers=_v3_headers("GET", query_path))
    assert queried.json()["trade_state"] == "SUCCESS"
    close_path, close_body = "/v3/pay/transactions/out-trade-no/V3-1/close", json.dumps({"mchid": PAY.mch_id})
    closed = await emu.client.post(
        f"{EMU}{close_path}", content=close_body, headers=_v3_headers("POST", close_path, close_body)
    )
    assert (closed.status_code, closed.json()["code"]) == (400, "ORDERPAID")
    unpaid = body.replace("V3-1", "V3-2")
    await emu.client.post(f"{EMU}{path}", content=unpaid, headers=_v3_headers("POST", path, unpaid))
    close_path = close_path.replace("V3-1", "V3-2")
    closed = await emu.client.post(
        f"{EMU}{close_path}", content=close_body, headers=_v3_headers("POST", close_path, close_body)
    )
    assert closed.status_code == 204 and closed.content == b""
    assert v3_verify(
        public_key_pem=platform_public_key_pem(),
        timestamp=closed.headers["wechatpay-timestamp"],
        nonce=closed.headers["wechatpay-nonce"],
        body=b"",
        signature=closed.headers["wechatpay-signature"],
    )
    assert emu.state.find_order("V3-2").state == "CLOSED"


@pytest.mark.asyncio
async def test_control_errors_use_the_envelope(emu: SimpleNamespace) -> None:
    response = await emu.client.post(f"{EMU}/control/pay-success", json={"out_trade_no": "nope"})
    assert response.status_code == 404 and "no such order" in response.json()["error"]["message"]
    assert (await emu.client.post(f"{EMU}/control/oa-event", json={"event": "subscribe"})).status_code == 400


def test_cli_reports_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    assert cli_main(["scan", "--store", "S001", "--openid", "o1"], transport=httpx.MockTransport(refuse)) == 2
    assert "./run.sh" in capsys.readouterr().err


def test_cli_prints_one_line_per_delivery(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        deliveries = [{"url": "u", "status": 200, "body": "success"}] * 3
        return httpx.Response(200, json={"event": "subscribe", "deliveries": deliveries})

    argv = ["--server", "http://srv:9000", "scan", "--store", "S001", "--openid", "o1", "--repeat", "3"]
    assert cli_main(argv, transport=httpx.MockTransport(answer)) == 0
    assert str(seen[0].url) == "http://srv:9000/_emulator/control/scan"
    assert json.loads(seen[0].content) == {
        "repeat": 3,
        "concurrent": False,
        "store": "S001",
        "openid": "o1",
        "subscribed": False,
    }  # no mode: the emulator pushes in the account's
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("delivery 1/3 event=subscribe -> 200 success")
