"""Emulated WeChat Pay v2 endpoints (XML, MD5 / HMAC-SHA256 signs) and the order/refund rules v3 shares."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from sanic import HTTPResponse

from wechat.emulator.state import EmulatorState, MerchantAccount, PayOrder, PayRefund, new_digits
from wechat.emulator.wire import Api, Call, v2_fail, xml_reply
from wechat.paysign import V2_SIGN_TYPES, v2_sign, v2_verify

CHINA = timezone(timedelta(hours=8))
UNIFIEDORDER_REQUIRED = (
    "appid",
    "mch_id",
    "nonce_str",
    "sign",
    "body",
    "out_trade_no",
    "total_fee",
    "spbill_create_ip",
    "notify_url",
    "trade_type",
)
TRADE_STATE_DESC = {"NOTPAY": "订单未支付", "SUCCESS": "支付成功", "CLOSED": "已关闭", "REFUND": "转入退款"}


class PayRuleError(Exception):
    """A pay request breaks a rule; err_code is WeChat's code, message its description."""

    def __init__(self, err_code: str, message: str, status: int = 400) -> None:
        super().__init__(err_code, message)
        self.err_code = err_code
        self.message = message
        self.status = status


def china_time(epoch: float, fmt: str) -> str:
    """Format an epoch in Beijing time (v2 time_end %Y%m%d%H%M%S, refund success_time %Y-%m-%d %H:%M:%S)."""
    return datetime.fromtimestamp(epoch, CHINA).strftime(fmt)


def rfc3339(epoch: float) -> str:
    """Format an epoch as v3 does: 2026-01-01T12:00:00+08:00."""
    return datetime.fromtimestamp(epoch, CHINA).isoformat(timespec="seconds")


def trade_state(order: PayOrder) -> str:
    """Return the order's trade_state as orderquery reports it."""
    return "REFUND" if order.state == "SUCCESS" and order.refunded_fee else order.state


def place_order(state: EmulatorState, order: PayOrder) -> PayOrder:
    """Store a new order, or return the same unpaid one for an identical retry."""
    existing = state.orders.get((order.mch_id, order.out_trade_no))
    if existing is None:
        state.orders[(order.mch_id, order.out_trade_no)] = order
        return order
    if existing.state == "SUCCESS":
        raise PayRuleError("ORDERPAID", "该订单已支付")
    if existing.state == "CLOSED":
        raise PayRuleError("ORDERCLOSED", "该订单已关闭")
    if (existing.total_fee, existing.openid, existing.version) != (order.total_fee, order.openid, order.version):
        raise PayRuleError("INVALID_REQUEST", "201 商户订单号重复")
    return existing


def new_prepay_id() -> str:
    """Return a prepay_id shaped like WeChat's (wx + time + random)."""
    return "wx" + time.strftime("%d%H%M%S") + secrets.token_hex(13)


def mark_paid(state: EmulatorState, order: PayOrder) -> None:
    """Mark an order paid once (later calls keep the first transaction_id and time)."""
    if order.state == "CLOSED":
        raise PayRuleError("ORDERCLOSED", "该订单已关闭")
    if order.state != "SUCCESS":
        order.state, order.paid_at = "SUCCESS", state.clock()
        order.transaction_id = "4200" + new_digits(24)


def create_refund(
    state: EmulatorState,
    order: PayOrder,
    *,
    out_refund_no: str,
    refund_fee: int,
    total_fee: int,
    notify_url: str,
    version: int,
) -> PayRefund:
    """Accept a refund of a paid order, or return the earlier refund with the same out_refund_no."""
    existing = state.refunds.get((order.mch_id, out_refund_no))
    if existing is not None:
        if (existing.refund_fee, existing.out_trade_no) != (refund_fee, order.out_trade_no):
            raise PayRuleError("INVALID_REQUEST", "订单金额或退款金额与之前请求不一致")
        return existing
    if order.state != "SUCCESS":
        raise PayRuleError("TRADE_STATE_ERROR", "订单状态错误")
    if total_fee != order.total_fee:
        raise PayRuleError("INVALID_REQUEST", "订单金额与支付金额不一致")
    if refund_fee <= 0 or refund_fee > order.total_fee - order.refunded_fee:
        raise PayRuleError("INVALID_REQUEST", "申请退款金额超过订单可退金额")
    order.refunded_fee += refund_fee
    refund = PayRefund(
        version=version,
        mch_id=order.mch_id,
        appid=order.appid,
        out_trade_no=order.out_trade_no,
        transaction_id=order.transaction_id,
        out_refund_no=out_refund_no,
        refund_id="50" + new_digits(27),
        refund_fee=refund_fee,
        total_fee=order.total_fee,
        notify_url=notify_url,
        created_at=state.clock(),
    )
    state.refunds[(order.mch_id, out_refund_no)] = refund
    return refund


def signed_fields(merchant: MerchantAccount, sign_type: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Return fields (empty ones dropped) plus nonce_str and sign, signed with the merchant key."""
    fields = {key: value for key, value in fields.items() if value not in (None, "")}
    fields.setdefault("nonce_str", secrets.token_hex(16))
    fields["sign"] = v2_sign(fields, key=merchant.api_key, sign_type=sign_type)
    return fields


def _int_fee(value: Any) -> int | None:
    """Return a positive integer fee given as text, else None."""
    return int(value) if isinstance(value, str) and value.isdigit() and int(value) > 0 else None


class _V2:
    """Per-call helpers: merchant lookup, sign check and signed replies for one pay v2 request."""

    def __init__(self, call: Call) -> None:
        """Read mch_id and sign_type from the request."""
        self.call = call
        self.body = call.body
        self.merchant = call.state.merchants.get(self.body.get("mch_id", ""))
        self.sign_type = self.body.get("sign_type") or "MD5"

    def denied(self) -> HTTPResponse | None:
        """Return the FAIL reply for an unknown merchant or a bad sign, else None."""
        if self.merchant is None:
            return v2_fail("mch_id参数格式错误 (unknown mch_id)", "MCHID_NOT_EXIST")
        if self.sign_type not in V2_SIGN_TYPES:
            return v2_fail("sign_type参数格式错误", "SIGNERROR")
        if not v2_verify(self.body, key=self.merchant.api_key, sign_type=self.sign_type):
            return v2_fail("签名错误", "SIGNERROR")
        return None

    def reply(self, **fields: Any) -> HTTPResponse:
        """Answer SUCCESS / result SUCCESS with fields, signed like the request."""
        return self._signed({"result_code": "SUCCESS", **fields})

    def fail(self, error: PayRuleError) -> HTTPResponse:
        """Answer a business failure (return_code SUCCESS, result_code FAIL), signed."""
        return self._signed({"result_code": "FAIL", "err_code": error.err_code, "err_code_des": error.message})

    def _signed(self, fields: dict[str, Any]) -> HTTPResponse:
        """Wrap fields with the common header and sign them."""
        assert self.merchant is not None
        head = {
            "return_code": "SUCCESS",
            "return_msg": "OK",
            "appid": self.body.get("appid", ""),
            "mch_id": self.merchant.mch_id,
        }
        return xml_reply(signed_fields(self.merchant, self.sign_type, {**head, **fields}))

    def order(self) -> PayOrder:
        """Return the order named by out_trade_no or transaction_id."""
        assert self.merchant is not None
        state, mch_id = self.call.state, self.merchant.mch_id
        order = None
        if self.body.get("transaction_id"):
            order = state.find_order_by_transaction(mch_id, self.body["transaction_id"])
        elif self.body.get("out_trade_no"):
            order = state.find_order(self.body["out_trade_no"], mch_id)
        if order is None:
            raise PayRuleError("ORDERNOTEXIST", "订单不存在")
        return order


V2Handler = Callable[["_V2"], Awaitable[HTTPResponse]]
V2_COMMON = ("appid", "mch_id", "nonce_str", "sign")


def v2_route(api: Api, path: str, required: tuple[str, ...] = V2_COMMON) -> Callable[[V2Handler], V2Handler]:
    """Register a pay v2 endpoint: required fields, merchant and sign checked; PayRuleError answered signed."""

    def register(handler: V2Handler) -> V2Handler:
        @api.route(path, kind="xml", auth="none")
        async def endpoint(call: Call) -> HTTPResponse:
            missing = next((name for name in required if not call.body.get(name)), None)
            if missing:
                return v2_fail(f"缺少参数 {missing}", "PARAM_ERROR")
            v2 = _V2(call)
            denied = v2.denied()
            if denied is not None:
                return denied
            try:
                return await handler(v2)
            except PayRuleError as error:
                return v2.fail(error)

        return handler

    return register


def register(api: Api) -> None:
    """Add the pay v2 endpoints."""

    @v2_route(api, "/pay/unifiedorder", UNIFIEDORDER_REQUIRED)
    async def unifiedorder(v2: _V2) -> HTTPResponse:
        body, state = v2.body, v2.call.state
        if body["appid"] not in state.apps:
            raise PayRuleError("APPID_NOT_EXIST", "APPID不存在")
        total_fee = _int_fee(body["total_fee"])
        if total_fee is None:
            raise PayRuleError("PARAM_ERROR", "total_fee 必须为正整数")
        if body["trade_type"] == "JSAPI" and not body.get("openid"):
            raise PayRuleError("PARAM_ERROR", "JSAPI支付必须传openid")
        order = place_order(
            state,
            PayOrder(
                version=2,
                mch_id=body["mch_id"],
                appid=body["appid"],
                out_trade_no=body["out_trade_no"],
                total_fee=total_fee,
                openid=body.get("openid", ""),
                notify_url=body["notify_url"],
                prepay_id=new_prepay_id(),
                sign_type=v2.sign_type,
                trade_type=body["trade_type"],
                description=body["body"],
                attach=body.get("attach", ""),
            ),
        )
        native = order.trade_type == "NATIVE"
        extra = {"code_url": f"weixin://wxpay/bizpayurl?pr={order.prepay_id[-7:]}"} if native else {}
        return v2.reply(prepay_id=order.prepay_id, trade_type=order.trade_type, **extra)

    @v2_route(api, "/pay/orderquery")
    async def orderquery(v2: _V2) -> HTTPResponse:
        order = v2.order()
        state = trade_state(order)
        fields: dict[str, Any] = {
            "trade_state": state,
            "trade_state_desc": TRADE_STATE_DESC[state],
            "out_trade_no": order.out_trade_no,
            "attach": order.attach,
            "total_fee": order.total_fee,
            "fee_type": "CNY",
            "openid": order.openid,
            "trade_type": order.trade_type,
        }
        if order.paid_at is not None:
            fields.update(
                transaction_id=order.transaction_id,
                bank_type="OTHERS",
                cash_fee=order.total_fee,
                time_end=china_time(order.paid_at, "%Y%m%d%H%M%S"),
                is_subscribe="N",
            )
        return v2.reply(**fields)

    @v2_route(api, "/pay/closeorder")
    async def closeorder(v2: _V2) -> HTTPResponse:
        order = v2.order()
        if order.state == "SUCCESS":
            raise PayRuleError("ORDERPAID", "订单已支付，不能发起关单")
        order.state = "CLOSED"
        return v2.reply()

    @v2_route(api, "/pay/refundquery")
    async def refundquery(v2: _V2) -> HTTPResponse:
        # looked up by out_refund_no (the docs allow refund_id / out_trade_no / transaction_id too)
        assert v2.merchant is not None
        found = v2.call.state.find_refund(v2.body.get("out_refund_no", ""), v2.merchant.mch_id)
        if found is None:
            raise PayRuleError("REFUNDNOTEXIST", "退款订单查询失败")
        status = {"PROCESSING": "PROCESSING", "SUCCESS": "SUCCESS", "CLOSED": "REFUNDCLOSE"}.get(found.status, "CHANGE")
        return v2.reply(
            transaction_id=found.transaction_id,
            out_trade_no=found.out_trade_no,
            total_fee=found.total_fee,
            cash_fee=found.total_fee,
            refund_count=1,
            out_refund_no_0=found.out_refund_no,
            refund_id_0=found.refund_id,
            refund_fee_0=found.refund_fee,
            refund_status_0=status,
        )

    @v2_route(api, "/secapi/pay/refund", (*V2_COMMON, "out_refund_no", "total_fee", "refund_fee"))
    async def refund(v2: _V2) -> HTTPResponse:
        total_fee, refund_fee = _int_fee(v2.body["total_fee"]), _int_fee(v2.body["refund_fee"])
        if total_fee is None or refund_fee is None:
            raise PayRuleError("PARAM_ERROR", "total_fee / refund_fee 必须为正整数")
        created = create_refund(
            v2.call.state,
            v2.order(),
            out_refund_no=v2.body["out_refund_no"],
            refund_fee=refund_fee,
            total_fee=total_fee,
            notify_url=v2.body.get("notify_url", ""),
            version=2,
        )
        return v2.reply(
            transaction_id=created.transaction_id,
            out_trade_no=created.out_trade_no,
            out_refund_no=created.out_refund_no,
            refund_id=created.refund_id,
            refund_fee=created.refund_fee,
            total_fee=created.total_fee,
            cash_fee=created.total_fee,
            refund_channel="",
        )
