"""Emulated WeChat Pay v3 endpoints: JSON, caller's RSA Authorization checked, responses platform-signed."""

from __future__ import annotations

import base64
import re
import secrets
import time
import uuid
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from sanic import HTTPResponse

from wechat.emulator import PLATFORM_PUBLIC_KEY_ID, merchant_public_key_pem, platform_private_key_pem
from wechat.emulator.pay import PayRuleError, create_refund, new_prepay_id, place_order, rfc3339, trade_state
from wechat.emulator.state import MerchantAccount, PayOrder, PayRefund
from wechat.emulator.wire import Api, Call, dump_json
from wechat.paysign import v3_request_message, v3_response_message, v3_sign_message

AUTH_SCHEME = "WECHATPAY2-SHA256-RSA2048"
_AUTH_FIELD = re.compile(r'(\w+)="([^"]*)"')


def platform_headers(body: bytes) -> dict[str, str]:
    """Return the Wechatpay-* headers signing body with the emulator platform key."""
    timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
    message = v3_response_message(timestamp=timestamp, nonce=nonce, body=body).decode("utf-8")
    return {
        "Wechatpay-Timestamp": timestamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": v3_sign_message(private_key_pem=platform_private_key_pem(), message=message),
        "Wechatpay-Serial": PLATFORM_PUBLIC_KEY_ID,
        "Wechatpay-Signature-Type": AUTH_SCHEME,
        "Request-ID": uuid.uuid4().hex,
    }


def v3_reply(status: int, payload: Any = None) -> HTTPResponse:
    """Answer a v3 call with JSON (or no body) and platform signature headers."""
    body = b"" if payload is None else dump_json(payload)
    content_type = "application/json; charset=utf-8" if payload is not None else None
    return HTTPResponse(body or None, status=status, headers=platform_headers(body), content_type=content_type)


def v3_error(error: PayRuleError) -> HTTPResponse:
    """Answer a v3 business error {"code", "message"}."""
    return v3_reply(error.status, {"code": error.err_code, "message": error.message})


def _verify_rsa(public_key_pem: bytes, message: str, signature: str) -> bool:
    """Return whether signature is the RSA-SHA256 (PKCS#1 v1.5) of message under the PEM key."""
    public_key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(public_key, RSAPublicKey):
        return False
    try:
        public_key.verify(
            base64.b64decode(signature, validate=True), message.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    except (InvalidSignature, ValueError):
        return False
    return True


async def authorize(call: Call) -> HTTPResponse | None:
    """Check the v3 Authorization header names a known mchid and (unless disabled) verifies."""
    scheme, _, rest = call.request.headers.get("authorization", "").partition(" ")
    fields = dict(_AUTH_FIELD.findall(rest))
    missing = [n for n in ("mchid", "nonce_str", "signature", "timestamp", "serial_no") if not fields.get(n)]
    if scheme != AUTH_SCHEME or missing:
        detail = f"Authorization must be {AUTH_SCHEME} with mchid, nonce_str, signature, timestamp, serial_no"
        return v3_reply(401, {"code": "SIGN_ERROR", "message": detail})
    merchant = call.state.merchants.get(fields["mchid"])
    if merchant is None:
        return v3_reply(400, {"code": "MCH_NOT_EXISTS", "message": "商户号不存在"})
    if merchant.verify_v3_signature:
        key = merchant.merchant_public_key.encode() if merchant.merchant_public_key else merchant_public_key_pem()
        query = call.request.query_string
        paths = {call.request.path, call.path}
        body = call.request.body.decode("utf-8", "replace")
        messages = (
            v3_request_message(
                method=call.request.method,
                url_path=p + (f"?{query}" if query else ""),
                timestamp=fields["timestamp"],
                nonce=fields["nonce_str"],
                body=body,
            )
            for p in paths
        )
        if not any(_verify_rsa(key, message, fields["signature"]) for message in messages):
            return v3_reply(401, {"code": "SIGN_ERROR", "message": "签名错误"})
    call.merchant = merchant
    return None


def transaction_json(order: PayOrder) -> dict[str, Any]:
    """Return the v3 transaction object of an order (query response and notify resource)."""
    state = trade_state(order)
    data: dict[str, Any] = {
        "appid": order.appid,
        "mchid": order.mch_id,
        "out_trade_no": order.out_trade_no,
        "trade_type": order.trade_type,
        "trade_state": state,
        "trade_state_desc": {"SUCCESS": "支付成功", "NOTPAY": "未支付", "CLOSED": "已关闭", "REFUND": "转入退款"}[
            state
        ],
        "attach": order.attach,
        "payer": {"openid": order.openid},
        "amount": {"total": order.total_fee, "currency": "CNY"},
    }
    if order.paid_at is not None:
        data.update(transaction_id=order.transaction_id, bank_type="OTHERS", success_time=rfc3339(order.paid_at))
        data["amount"].update(payer_total=order.total_fee, payer_currency="CNY")
    return data


def refund_json(refund: PayRefund) -> dict[str, Any]:
    """Return the v3 refund object (refund response; the notify resource adds a few fields)."""
    return {
        "refund_id": refund.refund_id,
        "out_refund_no": refund.out_refund_no,
        "transaction_id": refund.transaction_id,
        "out_trade_no": refund.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": rfc3339(refund.created_at),
        "status": refund.status,
        "amount": {
            "total": refund.total_fee,
            "refund": refund.refund_fee,
            "payer_total": refund.total_fee,
            "payer_refund": refund.refund_fee,
            "settlement_refund": refund.refund_fee,
            "settlement_total": refund.total_fee,
            "discount_refund": 0,
            "currency": "CNY",
        },
    }


def _positive_int(value: Any) -> int | None:
    """Return value when it is a positive int (not bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _order_of(call: Call, out_trade_no: str) -> PayOrder:
    """Return the calling merchant's v3 order or raise ORDER_NOT_EXIST."""
    assert call.merchant is not None
    order = call.state.find_order(out_trade_no, call.merchant.mch_id)
    if order is None:
        raise PayRuleError("ORDER_NOT_EXIST", "订单不存在", status=404)
    return order


def register(api: Api) -> None:
    """Add the pay v3 endpoints."""
    api.v3_signer = v3_reply
    api.v3_authorizer = authorize

    @api.route("/v3/certificates", "GET", kind="v3", auth="v3")
    async def certificates(call: Call) -> HTTPResponse:
        # The emulator signs with a WeChat Pay public key (no platform certificates): an empty, signed list.
        # Huiyuan's account set-up calls it to check a merchant's key, serial number and platform key.
        return v3_reply(200, {"data": []})

    @api.route("/v3/pay/transactions/jsapi", kind="v3", auth="v3")
    async def jsapi(call: Call) -> HTTPResponse:
        body, merchant = call.body, call.merchant
        assert isinstance(merchant, MerchantAccount)
        amount, payer = body.get("amount"), body.get("payer")
        total = _positive_int(amount.get("total")) if isinstance(amount, dict) else None
        openid = payer.get("openid") if isinstance(payer, dict) else None
        missing = next(
            (n for n in ("appid", "mchid", "description", "out_trade_no", "notify_url") if not body.get(n)), None
        )
        try:
            if missing or total is None or not openid:
                raise PayRuleError(
                    "PARAM_ERROR", f"参数错误: {missing or ('amount.total' if total is None else 'payer.openid')}"
                )
            if body["mchid"] != merchant.mch_id:
                raise PayRuleError("PARAM_ERROR", "请求头与请求体中的 mchid 不一致")
            if body["appid"] not in call.state.apps:
                raise PayRuleError("APPID_MCHID_NOT_MATCH", "appid 和 mch_id 不匹配")
            order = place_order(
                call.state,
                PayOrder(
                    version=3,
                    mch_id=merchant.mch_id,
                    appid=body["appid"],
                    out_trade_no=body["out_trade_no"],
                    total_fee=total,
                    openid=openid,
                    notify_url=body["notify_url"],
                    prepay_id=new_prepay_id(),
                    sign_type="RSA",
                    description=body["description"],
                    attach=body.get("attach", ""),
                ),
            )
        except PayRuleError as error:
            return v3_error(error)
        return v3_reply(200, {"prepay_id": order.prepay_id})

    @api.route("/v3/pay/transactions/out-trade-no/<out_trade_no>", "GET", kind="v3", auth="v3")
    async def query(call: Call) -> HTTPResponse:
        try:
            if call.arg("mchid") != call.merchant.mch_id:  # type: ignore[union-attr]
                raise PayRuleError("PARAM_ERROR", "mchid 参数与请求头不一致")
            order = _order_of(call, call.params["out_trade_no"])
        except PayRuleError as error:
            return v3_error(error)
        return v3_reply(200, transaction_json(order))

    @api.route("/v3/pay/transactions/out-trade-no/<out_trade_no>/close", kind="v3", auth="v3")
    async def close(call: Call) -> HTTPResponse:
        try:
            if call.body.get("mchid") != call.merchant.mch_id:  # type: ignore[union-attr]
                raise PayRuleError("PARAM_ERROR", "mchid 参数与请求头不一致")
            order = _order_of(call, call.params["out_trade_no"])
            if order.state == "SUCCESS":
                raise PayRuleError("ORDERPAID", "订单已支付")
        except PayRuleError as error:
            return v3_error(error)
        order.state = "CLOSED"
        return v3_reply(204)

    @api.route("/v3/refund/domestic/refunds/<out_refund_no>", "GET", kind="v3", auth="v3")
    async def refund_query(call: Call) -> HTTPResponse:
        found = call.state.find_refund(call.params["out_refund_no"], call.merchant.mch_id)  # type: ignore[union-attr]
        if found is None:
            return v3_error(PayRuleError("RESOURCE_NOT_EXISTS", "退款单不存在", status=404))
        return v3_reply(200, refund_json(found))

    @api.route("/v3/refund/domestic/refunds", kind="v3", auth="v3")
    async def refunds(call: Call) -> HTTPResponse:
        body = call.body
        amount = cast(dict[str, Any], body.get("amount")) if isinstance(body.get("amount"), dict) else {}
        refund_fee, total = _positive_int(amount.get("refund")), _positive_int(amount.get("total"))
        try:
            if not body.get("out_refund_no") or refund_fee is None or total is None:
                raise PayRuleError("PARAM_ERROR", "参数错误: out_refund_no, amount.refund, amount.total 必填")
            if body.get("transaction_id"):
                found = call.state.find_order_by_transaction(call.merchant.mch_id, body["transaction_id"])  # type: ignore[union-attr]
                if found is None:
                    raise PayRuleError("RESOURCE_NOT_EXISTS", "订单不存在", status=404)
                order = found
            else:
                order = _order_of(call, str(body.get("out_trade_no") or ""))
            refund = create_refund(
                call.state,
                order,
                out_refund_no=body["out_refund_no"],
                refund_fee=refund_fee,
                total_fee=total,
                notify_url=body.get("notify_url", ""),
                version=3,
            )
        except PayRuleError as error:
            return v3_error(error)
        return v3_reply(200, refund_json(refund))
