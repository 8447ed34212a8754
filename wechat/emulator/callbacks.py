"""Callbacks the emulator fires into the server: OA event pushes and pay / refund notifies."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx

from wechat.crypto import OACrypto, sha1_signature
from wechat.emulator.pay import china_time, rfc3339, signed_fields
from wechat.emulator.payv3 import platform_headers, refund_json, transaction_json
from wechat.emulator.state import AppAccount, EmulatorState, PayOrder, PayRefund
from wechat.emulator.wire import dump_json
from wechat.errors import WeChatError
from wechat.paysign import v2_encrypt_req_info, v3_aead_encrypt
from wechat.xmlutil import parse_xml, to_xml

_REPLY_LIMIT = 2000
CARD_EVENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "user_get_card": {
        "CardId": "",
        "IsGiveByFriend": 0,
        "UserCardCode": "",
        "FriendUserName": "",
        "OuterId": 0,
        "OldUserCardCode": "",
        "OuterStr": "",
        "IsRestoreMemberCard": 0,
        "IsRecommendByFriend": 0,
    },
    "user_del_card": {"CardId": "", "UserCardCode": ""},
    "user_consume_card": {"CardId": "", "UserCardCode": "", "ConsumeSource": "FROM_API", "OuterStr": ""},
    "user_view_card": {"CardId": "", "UserCardCode": ""},
    "user_enter_session_from_card": {"CardId": "", "UserCardCode": ""},
    "submit_membercard_user_info": {"CardId": "", "UserCardCode": ""},
    "update_member_card": {"CardId": "", "UserCardCode": "", "ModifyBonus": 0, "ModifyBalance": 0},
    "card_pass_check": {"CardId": "", "RefuseReason": ""},
    "card_not_pass_check": {"CardId": "", "RefuseReason": ""},
}


def event_xml(
    *, account: AppAccount, openid: str, event: str, create_time: int, event_key: str | None, fields: dict[str, Any]
) -> str:
    """Build an event push exactly as WeChat does (ToUserName gh_ id, FromUserName openid, CreateTime, ...)."""
    head: dict[str, Any] = {
        "ToUserName": account.gh_id,
        "FromUserName": openid,
        "CreateTime": create_time,
        "MsgType": "event",
        "Event": event,
    }
    if event_key is not None:
        head["EventKey"] = event_key
    body = {**CARD_EVENT_DEFAULTS.get(event, {}), **fields}
    return to_xml({**head, **{k: int(v) if isinstance(v, bool) else v for k, v in body.items() if k not in head}})


OA_MODES = ("plaintext", "compatible", "safe")


def oa_request(account: AppAccount, xml: str, *, openid: str, mode: str) -> tuple[str, dict[str, str]]:
    """Return the body and query params WeChat would POST for xml in a message mode (plaintext, compatible:
    plaintext fields and <Encrypt>, safe: <Encrypt> only; both with encrypt_type=aes and msg_signature)."""
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**10))
    if mode in ("compatible", "safe"):
        crypto = OACrypto(token=account.token, encoding_aes_key=account.encoding_aes_key, appid=account.appid)
        return crypto.build_encrypted_post(xml, nonce=nonce, timestamp=timestamp, compatible=mode == "compatible")
    params = {
        "signature": sha1_signature(account.token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        "openid": openid,
    }
    return xml, params


def read_reply(account: AppAccount, body: str) -> dict[str, str] | None:
    """The passive reply the server answered (decrypted in safe mode), as a WeChat client would show it."""
    if not body.lstrip().startswith("<xml"):
        return None
    try:
        fields = parse_xml(body)
        if "Encrypt" in fields:
            crypto = OACrypto(token=account.token, encoding_aes_key=account.encoding_aes_key, appid=account.appid)
            fields = parse_xml(
                crypto.decrypt(
                    encrypt=fields["Encrypt"],
                    msg_signature=fields.get("MsgSignature", ""),
                    timestamp=fields.get("TimeStamp", ""),
                    nonce=fields.get("Nonce", ""),
                )
            )
    except WeChatError:
        return None
    return fields


def callback_url(self_url: str, given_url: str, default_path: str) -> str:
    """Return where to deliver: the path of the URL the server gave (on self_url), else default_path."""
    parts = urlsplit(given_url) if given_url else None
    if parts is None or not parts.path:
        return self_url + default_path
    return self_url + parts.path + (f"?{parts.query}" if parts.query else "")


async def deliver(
    http: httpx.AsyncClient,
    url: str,
    *,
    content: bytes | str,
    headers: dict[str, str],
    params: dict[str, str] | None = None,
    repeat: int = 1,
    concurrent: bool = False,
) -> list[dict[str, Any]]:
    """POST the same request `repeat` times (concurrently if asked); return what the server answered each time."""

    async def once() -> dict[str, Any]:
        try:
            response = await http.post(url, content=content, headers=headers, params=params)
        except httpx.HTTPError as exc:
            return {"url": url, "status": None, "body": "", "error": f"{type(exc).__name__}: {exc}"}
        return {"url": url, "status": response.status_code, "body": response.text[:_REPLY_LIMIT]}

    if concurrent:
        return list(await asyncio.gather(*(once() for _ in range(repeat))))
    return [await once() for _ in range(repeat)]


def v2_pay_notify(state: EmulatorState, order: PayOrder) -> str:
    """Return the signed v2 payment notify XML for a paid order."""
    merchant = state.merchants[order.mch_id]
    fields: dict[str, Any] = {
        "appid": order.appid,
        "attach": order.attach,
        "bank_type": "OTHERS",
        "cash_fee": order.total_fee,
        "fee_type": "CNY",
        "is_subscribe": "N",
        "mch_id": order.mch_id,
        "nonce_str": secrets.token_hex(16),
        "openid": order.openid,
        "out_trade_no": order.out_trade_no,
        "result_code": "SUCCESS",
        "return_code": "SUCCESS",
        "time_end": china_time(order.paid_at or state.clock(), "%Y%m%d%H%M%S"),
        "total_fee": order.total_fee,
        "trade_type": order.trade_type,
        "transaction_id": order.transaction_id,
    }
    if order.sign_type != "MD5":
        fields["sign_type"] = order.sign_type
    return to_xml(signed_fields(merchant, order.sign_type, fields))


def v2_refund_notify(state: EmulatorState, refund: PayRefund) -> str:
    """Return the v2 refund notify XML (req_info AES-256-ECB encrypted with md5(api_key))."""
    merchant = state.merchants[refund.mch_id]
    inner = to_xml(
        {
            "out_refund_no": refund.out_refund_no,
            "out_trade_no": refund.out_trade_no,
            "refund_account": "REFUND_SOURCE_RECHARGE_FUNDS",
            "refund_fee": refund.refund_fee,
            "refund_id": refund.refund_id,
            "refund_recv_accout": "支付用户的零钱",
            "refund_request_source": "API",
            "refund_status": refund.status,
            "settlement_refund_fee": refund.refund_fee,
            "settlement_total_fee": refund.total_fee,
            "success_time": china_time(refund.success_at or state.clock(), "%Y-%m-%d %H:%M:%S"),
            "total_fee": refund.total_fee,
            "transaction_id": refund.transaction_id,
        },
        root="root",
    )
    return to_xml(
        {
            "return_code": "SUCCESS",
            "appid": refund.appid,
            "mch_id": refund.mch_id,
            "nonce_str": secrets.token_hex(16),
            "req_info": v2_encrypt_req_info(inner, api_key=merchant.api_key),
        }
    )


def v3_notify(
    state: EmulatorState, mch_id: str, *, event_type: str, summary: str, original_type: str, resource: dict[str, Any]
) -> tuple[bytes, dict[str, str]]:
    """Return a v3 notify body (AEAD_AES_256_GCM resource) and its platform-signed headers."""
    nonce = secrets.token_hex(6)
    ciphertext = v3_aead_encrypt(
        api_v3_key=state.merchants[mch_id].api_v3_key,
        nonce=nonce,
        associated_data=original_type,
        plaintext=dump_json(resource),
    )
    body = dump_json(
        {
            "id": str(uuid.uuid4()),
            "create_time": rfc3339(state.clock()),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": ciphertext,
                "associated_data": original_type,
                "nonce": nonce,
            },
        }
    )
    return body, {"Content-Type": "application/json", **platform_headers(body)}


def pay_notify_request(state: EmulatorState, order: PayOrder) -> tuple[str, bytes | str, dict[str, str]]:
    """Return (default path, body, headers) of the payment notify for a paid order."""
    if order.version == 2:
        return f"/pay/notify/v2/{order.mch_id}", v2_pay_notify(state, order), {"Content-Type": "text/xml"}
    body, headers = v3_notify(
        state,
        order.mch_id,
        event_type="TRANSACTION.SUCCESS",
        summary="支付成功",
        original_type="transaction",
        resource=transaction_json(order),
    )
    return f"/pay/notify/v3/{order.mch_id}", body, headers


def refund_notify_request(state: EmulatorState, refund: PayRefund) -> tuple[str, bytes | str, dict[str, str]]:
    """Return (default path, body, headers) of the refund notify."""
    if refund.version == 2:
        return f"/pay/notify/v2/{refund.mch_id}", v2_refund_notify(state, refund), {"Content-Type": "text/xml"}
    resource = refund_json(refund)
    resource.update(
        mchid=refund.mch_id, refund_status=refund.status, success_time=rfc3339(refund.success_at or state.clock())
    )
    resource["amount"] = {k: resource["amount"][k] for k in ("total", "refund", "payer_total", "payer_refund")}
    body, headers = v3_notify(
        state,
        refund.mch_id,
        event_type=f"REFUND.{refund.status}",
        summary="退款成功",
        original_type="refund",
        resource=resource,
    )
    return f"/pay/notify/v3/{refund.mch_id}", body, headers
