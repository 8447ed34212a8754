"""WeChat Pay notify callbacks (v2 XML, v3 JSON): verify, decrypt, dispatch, acknowledge."""

from __future__ import annotations

import logging
from typing import Literal

from sanic import Blueprint, HTTPResponse, json
from sanic.request import Request

from models.kernel import clock
from models.payments.notify_account import NotifyAccount, find_notify_account
from models.tenancy.merchants import WechatAccount
from server import wiring
from server.api import Reply, endpoint
from wechat.errors import WeChatCryptoError, WeChatSignatureError, WeChatXMLError
from wechat.paynotify import NotifyRejected, PayNotify, verify_v2, verify_v3
from wechat.xmlutil import to_xml

log = logging.getLogger("huiyuan.wechat.paynotify")
bp = Blueprint("pay_notify")
VERIFICATION_ERRORS = (WeChatSignatureError, WeChatCryptoError, WeChatXMLError, NotifyRejected)
V2_SECRETS = ("api_key",)
V3_SECRETS = ("api_v3_key", "platform_public_key", "platform_public_key_id")
V3_FAIL_SCHEMA = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {"code": {"const": "FAIL"}, "message": {"type": "string"}},
}


def _v2_reply(status: int, return_code: str, return_msg: str) -> HTTPResponse:
    """Answer in the v2 ack format <xml><return_code/><return_msg/></xml>."""
    body = to_xml({"return_code": return_code, "return_msg": return_msg})
    return HTTPResponse(body, status=status, content_type="application/xml; charset=utf-8")


def _v3_fail(status: int, message: str) -> HTTPResponse:
    """Answer in the v3 failure format {"code": "FAIL", "message": ...}."""
    return json({"code": "FAIL", "message": message}, status=status)


async def _pay_account(mch_id: str, required: tuple[str, ...]) -> tuple[NotifyAccount | None, dict[str, str]]:
    """The pay account of mch_id (with its merchant's appids) and its secrets; missing secrets are logged, {}."""
    found = await find_notify_account(mch_id=mch_id)
    if found is None:
        return None, {}
    keys = found.account.secrets()
    missing = [name for name in required if not keys.get(name)]
    if missing:
        log.error("pay account %s cannot verify notifies: %s not configured", found.account.mch_id, ", ".join(missing))
        return found, {}
    return found, keys


async def _dispatch(
    account: WechatAccount, *, version: Literal["v2", "v3"], kind: str, fields: dict, raw_id: str
) -> bool:
    """Hand a verified notify to its settling function (server/wiring.py PAY_NOTIFIES); log ids when not processed."""
    notify = PayNotify(
        merchant_id=account.merchant_id, mch_id=account.mch_id, version=version, kind=kind, fields=fields, raw_id=raw_id
    )
    if await wiring.dispatch_pay_notify(notify):
        return True
    refund = f" refund {fields['out_refund_no']}" if fields.get("out_refund_no") else ""
    trade = f"{fields.get('out_trade_no', '')}{refund}"
    log.warning("%s %s notify %s for %s not processed: %s", version, kind, raw_id, account.mch_id, trade)
    return False


@bp.post("/pay/notify/v2/<mch_id:str>")
@endpoint(
    summary="WeChat Pay v2 notify (payment or refund)",
    tag="wechat callbacks",
    content_type="application/xml",
    replies=tuple(Reply(code, "application/xml", description="FAIL") for code in (401, 404, 500)),
    description="Signed XML payment notify, or refund notify with encrypted req_info. Answers the SUCCESS XML "
    "once a registered handler processed it; FAIL XML with 401 (rejected: not XML, not signed by the merchant's "
    "key, or not its appid/mch_id; as v3), 404 (unknown mch_id) or 500 "
    "(not processed: WeChat retries).",
)
async def notify_v2(request: Request, mch_id: str):
    found, keys = await _pay_account(mch_id, V2_SECRETS)
    if found is None:
        return _v2_reply(404, "FAIL", "unknown mch_id")
    if not keys:
        return _v2_reply(500, "FAIL", "merchant not configured")
    account = found.account
    try:
        kind, fields = verify_v2(
            request.body,
            mch_id=account.mch_id,
            api_key=keys["api_key"],
            appids=found.appids,
        )
    except VERIFICATION_ERRORS as exc:
        log.warning("v2 notify for %s rejected: %s", account.mch_id, exc)
        return _v2_reply(401, "FAIL", str(exc)[:200])
    raw_id = fields.get("refund_id" if kind == "refund" else "transaction_id", "")
    if not await _dispatch(account, version="v2", kind=kind, fields=fields, raw_id=raw_id):
        return _v2_reply(500, "FAIL", "not processed")
    return _v2_reply(200, "SUCCESS", "OK")


@bp.post("/pay/notify/v3/<mch_id:str>")
@endpoint(
    summary="WeChat Pay v3 notify (TRANSACTION.* or REFUND.*)",
    tag="wechat callbacks",
    status=204,
    replies=tuple(Reply(code, schema=V3_FAIL_SCHEMA, description="FAIL") for code in (401, 404, 500)),
    description="RSA-signed JSON with an AEAD_AES_256_GCM resource. Answers 204 once a registered handler "
    'processed it; {"code": "FAIL", "message"} with 401 (rejected), 404 (unknown mch_id) or 500 '
    "(not processed: WeChat retries).",
)
async def notify_v3(request: Request, mch_id: str):
    found, keys = await _pay_account(mch_id, V3_SECRETS)
    if found is None:
        return _v3_fail(404, "unknown mch_id")
    if not keys:
        return _v3_fail(500, "merchant not configured")
    account = found.account
    try:
        kind, fields, notify_id = verify_v3(
            request.body,
            request.headers,
            mch_id=account.mch_id,
            api_v3_key=keys["api_v3_key"],
            platform_public_key_pem=keys["platform_public_key"],
            platform_public_key_id=keys["platform_public_key_id"],
            appids=found.appids,
            now=clock.now(),
        )
    except VERIFICATION_ERRORS as exc:
        log.warning("v3 notify for %s rejected: %s", account.mch_id, exc)
        return _v3_fail(401, str(exc)[:200])
    if not await _dispatch(account, version="v3", kind=kind, fields=fields, raw_id=notify_id):
        return _v3_fail(500, "not processed")
    return HTTPResponse(status=204)
