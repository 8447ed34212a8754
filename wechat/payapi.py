"""WeChat Pay calls in API v2 and v3 (JSAPI prepay, order query/close, refund and refund query): shapes only.

Each function takes the client gateway.pay_client returned and speaks that client's version; amounts are fen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from wechat.errors import WeChatPayError
from wechat.pay import PayV2Client, PayV3Client

PayClient = PayV2Client | PayV3Client
CHINA = timezone(timedelta(hours=8))  # WeChat Pay's time_expire is Beijing time
ORDER_NOT_FOUND_CODES = frozenset({"ORDERNOTEXIST", "ORDER_NOT_EXIST", "RESOURCE_NOT_EXISTS"})
REFUND_NOT_FOUND_CODES = frozenset({"REFUNDNOTEXIST", "RESOURCE_NOT_EXISTS"})


@dataclass(frozen=True)
class Trade:
    """An order as WeChat sees it."""

    state: str  # trade_state: SUCCESS, REFUND, NOTPAY, CLOSED, USERPAYING, PAYERROR, REVOKED
    amount: int = 0  # fen; -1 when the answer's amount is unreadable
    transaction_id: str = ""
    appid: str = ""


@dataclass(frozen=True)
class Refund:
    """A refund as WeChat sees it."""

    out_refund_no: str
    refund_id: str
    status: str  # SUCCESS, PROCESSING, CHANGE, ABNORMAL, CLOSED (v3) / REFUNDCLOSE (v2); "" when not stated
    amount: int | None  # fen refunded; None when absent or unreadable


def fen(value: object) -> int | None:
    """A non-negative amount as WeChat Pay writes it (int in v3, digit string in v2); None when anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        return int(value)
    return None


def _v3_refund_amount(answer: dict[str, Any]) -> int | None:
    money = answer.get("amount")
    return fen(money.get("refund")) if isinstance(money, dict) else None


async def jsapi_prepay(
    client: PayClient,
    *,
    appid: str,
    description: str,
    out_trade_no: str,
    amount: int,
    openid: str,
    notify_url: str,
    expires_at: datetime,
    client_ip: str,
    sign_type: str = "MD5",
) -> str:
    """unifiedorder (v2, trade_type JSAPI) or /v3/pay/transactions/jsapi; returns the prepay_id."""
    expires = expires_at.astimezone(CHINA)
    if isinstance(client, PayV2Client):
        params = {
            "appid": appid,
            "body": description,
            "out_trade_no": out_trade_no,
            "total_fee": amount,
            "spbill_create_ip": client_ip or "127.0.0.1",
            "notify_url": notify_url,
            "trade_type": "JSAPI",
            "openid": openid,
            "time_expire": expires.strftime("%Y%m%d%H%M%S"),
        }
        answer: dict[str, Any] = await client.call("/pay/unifiedorder", params, sign_type=sign_type)
    else:
        body = {
            "appid": appid,
            "mchid": client.mch_id,
            "description": description,
            "out_trade_no": out_trade_no,
            "time_expire": expires.isoformat(timespec="seconds"),
            "notify_url": notify_url,
            "amount": {"total": amount, "currency": "CNY"},
            "payer": {"openid": openid},
        }
        answer = await client.call("POST", "/v3/pay/transactions/jsapi", json_body=body)
    prepay_id = str(answer.get("prepay_id", ""))
    if not prepay_id:
        raise WeChatPayError("NO_PREPAY_ID", "the prepay answer has no prepay_id")
    return prepay_id


async def query_order(client: PayClient, *, appid: str, out_trade_no: str) -> Trade | None:
    """orderquery (v2) or the v3 query by out_trade_no; None when WeChat does not know the order."""
    try:
        if isinstance(client, PayV2Client):
            answer: dict[str, Any] = await client.call(
                "/pay/orderquery", {"appid": appid, "out_trade_no": out_trade_no}
            )
            total = answer.get("total_fee", "0")
            amount = int(total) if str(total).isdigit() else -1
        else:
            answer = await client.call(
                "GET", f"/v3/pay/transactions/out-trade-no/{out_trade_no}", params={"mchid": client.mch_id}
            )
            total = (answer.get("amount") or {}).get("total", -1)
            amount = total if isinstance(total, int) and not isinstance(total, bool) else -1
    except WeChatPayError as exc:
        if exc.code in ORDER_NOT_FOUND_CODES:
            return None
        raise
    return Trade(
        state=str(answer.get("trade_state", "")),
        amount=amount,
        transaction_id=str(answer.get("transaction_id", "")),
        appid=str(answer.get("appid", appid)),
    )


async def close_order(client: PayClient, *, appid: str, out_trade_no: str) -> None:
    """closeorder (v2) or the v3 close; WeChat answers ORDERPAID when the member paid meanwhile."""
    if isinstance(client, PayV2Client):
        await client.call("/pay/closeorder", {"appid": appid, "out_trade_no": out_trade_no})
    else:
        await client.call(
            "POST", f"/v3/pay/transactions/out-trade-no/{out_trade_no}/close", json_body={"mchid": client.mch_id}
        )


async def create_refund(
    client: PayClient,
    *,
    appid: str,
    out_trade_no: str,
    out_refund_no: str,
    total: int,
    refund: int,
    reason: str,
    notify_url: str,
    sign_type: str = "MD5",
) -> Refund:
    """secapi/pay/refund (v2) or /v3/refund/domestic/refunds; v2 answers carry no status (the notify tells)."""
    if isinstance(client, PayV2Client):
        params = {
            "appid": appid,
            "out_trade_no": out_trade_no,
            "out_refund_no": out_refund_no,
            "total_fee": total,
            "refund_fee": refund,
            "refund_desc": reason,
            "notify_url": notify_url,
        }
        answer: dict[str, Any] = await client.call("/secapi/pay/refund", params, sign_type=sign_type)
        return Refund(out_refund_no=out_refund_no, refund_id=str(answer.get("refund_id") or ""), status="", amount=None)
    body = {
        "out_trade_no": out_trade_no,
        "out_refund_no": out_refund_no,
        "reason": reason,
        "notify_url": notify_url,
        "amount": {"refund": refund, "total": total, "currency": "CNY"},
    }
    answer = await client.call("POST", "/v3/refund/domestic/refunds", json_body=body)
    return Refund(
        out_refund_no=out_refund_no,
        refund_id=str(answer.get("refund_id") or ""),
        status=str(answer.get("status") or ""),
        amount=_v3_refund_amount(answer),
    )


async def query_refund(client: PayClient, *, appid: str, out_refund_no: str, sign_type: str = "MD5") -> Refund:
    """refundquery (v2) or the v3 refund query by out_refund_no.

    Raises WeChatPayError with a code in REFUND_NOT_FOUND_CODES when WeChat does not know the refund.
    """
    if isinstance(client, PayV2Client):
        answer: dict[str, Any] = await client.call(
            "/pay/refundquery", {"appid": appid, "out_refund_no": out_refund_no}, sign_type=sign_type
        )
        return Refund(
            out_refund_no=out_refund_no,
            refund_id=answer.get("refund_id_0", ""),
            status=answer.get("refund_status_0", ""),
            amount=fen(answer.get("refund_fee_0")),
        )
    answer = await client.call("GET", f"/v3/refund/domestic/refunds/{out_refund_no}")
    return Refund(
        out_refund_no=out_refund_no,
        refund_id=str(answer.get("refund_id") or ""),
        status=str(answer.get("status") or ""),
        amount=_v3_refund_amount(answer),
    )


def refund_of_notify(*, version: str, fields: dict[str, Any]) -> Refund:
    """The refund a verified refund notify reports (v2 decrypted req_info, v3 REFUND.* resource)."""
    amount = fen(fields.get("refund_fee")) if version == "v2" else _v3_refund_amount(fields)
    return Refund(
        out_refund_no=str(fields.get("out_refund_no") or ""),
        refund_id=str(fields.get("refund_id") or ""),
        status=str(fields.get("refund_status") or ""),
        amount=amount,
    )


@dataclass(frozen=True)
class PaidNotice:
    """What a verified transaction notify reports: its state, the order, and the amount paid (or why it is unusable)."""

    state: str  # SUCCESS, or another trade state (v2 result_code, v3 trade_state)
    out_trade_no: str
    transaction_id: str
    appid: str
    amount: int | None  # fen paid; None when the amount fields are unacceptable
    problem: str  # "" or why the amount is unacceptable
    raw_amount: dict[str, Any]  # the amount fields as received, for the anomaly record


def transaction_of_notify(*, version: str, fields: dict[str, Any]) -> PaidNotice:
    """Read a verified v2 payment notify or v3 TRANSACTION.* resource; CNY only, payer_total never above total."""
    state = str(fields.get("result_code") if version == "v2" else fields.get("trade_state"))
    amount, problem = _paid_amount(version, fields)
    return PaidNotice(
        state=state,
        out_trade_no=str(fields.get("out_trade_no") or ""),
        transaction_id=str(fields.get("transaction_id") or ""),
        appid=str(fields.get("appid") or ""),
        amount=amount,
        problem=problem,
        raw_amount={"amount": fields.get("amount"), "total_fee": fields.get("total_fee")},
    )


def _paid_amount(version: str, fields: dict[str, Any]) -> tuple[int | None, str]:
    if version == "v2":
        if fields.get("fee_type", "CNY") != "CNY":
            return None, "fee_type is not CNY"
        total = fen(fields.get("total_fee"))
        return (total, "") if total is not None else (None, "total_fee is not an amount")
    amount = fields.get("amount")
    if not isinstance(amount, dict):
        return None, "amount is missing"
    total, payer_total = fen(amount.get("total")), fen(amount.get("payer_total", amount.get("total")))
    if amount.get("currency", "CNY") != "CNY" or amount.get("payer_currency", "CNY") != "CNY":
        return None, "currency is not CNY"
    if total is None or payer_total is None or payer_total > total:
        return None, "amount.total / payer_total are not amounts"
    return total, ""
