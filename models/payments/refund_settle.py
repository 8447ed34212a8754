"""Refunds of pay orders after the debit: the WeChat call, the notify settled once, retry and cancel by staff."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from tortoise import fields
from tortoise.expressions import F, Subquery
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.kernel import clock
from models.kernel.errors import Conflict, NotFound
from models.kernel.outbox import enqueue
from models.ledger import books as ledger
from models.members.members import member_rows
from models.payments.orders import PayOrder, PayRefund, record_anomaly
from models.payments.prepay import pay_account
from models.tenancy.visibility import Scope
from wechat import payapi
from wechat.errors import WeChatPayError
from wechat.paynotify import PayNotify

log = logging.getLogger("huiyuan.refunds")

REFUND_TOPIC = "pay.refund"
BUSY_CODES = frozenset({"SYSTEMERROR", "SYSTEM_ERROR", "HTTP_ERROR", "FREQUENCY_LIMITED", "BIZERR_NEED_RETRY"})
FAILED_STATES = ("CHANGE", "ABNORMAL", "CLOSED", "REFUNDCLOSE")  # v2 says REFUNDCLOSE, v3 CLOSED
SETTLED, ALREADY, IGNORED = "settled", "already_settled", "ignored"


class RefundDetail(Model):
    """What a refund took besides the WeChat money, so that a cancel gives back exactly that."""

    id = fields.BigIntField(primary_key=True)
    refund_id = fields.BigIntField(unique=True)
    principal_entry_id = fields.BigIntField(null=True)  # the balance "refund" row
    bonus_entry_id = fields.BigIntField(null=True)  # the balance "forfeit" row
    points_entry_id = fields.BigIntField(null=True)  # the points clawed back
    points_clawed_back = fields.BigIntField(default=0)
    points_not_clawed = fields.BigIntField(default=0)  # already spent by the member: not taken below zero
    member_plan_id = fields.BigIntField(null=True)
    term_starts_at = fields.DatetimeField(null=True)  # the term as it was before the refund ended it
    term_ends_at = fields.DatetimeField(null=True)
    shifted_seconds = fields.BigIntField(default=0)  # later stacked terms moved up by this much

    class Meta:
        table = "pay_refund_detail"


def notify_url(gateway: Any, order: PayOrder) -> str:
    return f"{gateway.self_url}/pay/notify/{order.api_version}/{order.mch_id}"


async def _anomaly(
    refund: PayRefund | None, *, merchant_id: int, kind: str, refund_id: str, detail: dict[str, Any]
) -> str:
    await record_anomaly(
        merchant_id=merchant_id,
        kind=kind,
        dedupe_key=f"refund:{refund_id or (refund.out_refund_no if refund else '')}:{kind}"[:128],
        out_trade_no=str(detail.get("out_trade_no") or ""),
        detail=detail,
    )
    return kind


async def mark_failed(*, refund_id: int, error: str) -> bool:
    """A refund WeChat refused or closed becomes FAILED with the reason: visible, retryable, nothing restored."""
    won = await PayRefund.filter(id=refund_id, status="PENDING").update(status="FAILED", last_error=error[:255])
    if won:
        log.warning("refund %s failed: %s", refund_id, error)
    return bool(won)


async def settle_refund(
    *, merchant_id: int, out_refund_no: str, refund_id: str, status: str, amount: int | None, source: str
) -> str:
    """SUCCESS moves the refund to SUCCESS and its order REFUNDING -> REFUNDED once; a mismatch is an anomaly."""
    detail: dict[str, Any] = {
        "source": source,
        "out_refund_no": out_refund_no,
        "refund_id": refund_id,
        "status": status,
    }
    refund = await PayRefund.get_or_none(out_refund_no=out_refund_no, merchant_id=merchant_id)
    if refund is None:
        return await _anomaly(None, merchant_id=merchant_id, kind="unknown_refund", refund_id=refund_id, detail=detail)
    order = await PayOrder.get(id=refund.order_id)
    detail["out_trade_no"] = order.out_trade_no
    if refund.refund_id and refund_id and refund.refund_id != refund_id:
        return await _anomaly(
            refund, merchant_id=merchant_id, kind="refund_id_mismatch", refund_id=refund_id, detail=detail
        )
    if status in FAILED_STATES:
        await mark_failed(refund_id=refund.id, error=f"WeChat refund {status}")
        return IGNORED
    if status != "SUCCESS":
        return IGNORED  # PROCESSING: the notify or the next reconcile settles it
    if amount != refund.amount:
        detail.update(amount=amount, expected=refund.amount)
        return await _anomaly(
            refund, merchant_id=merchant_id, kind="amount_mismatch", refund_id=refund_id, detail=detail
        )

    async def settle() -> bool:
        async with in_transaction():
            won = await PayRefund.filter(id=refund.id, status__in=("PENDING", "FAILED")).update(
                status="SUCCESS", refund_id=refund_id or refund.refund_id, settled_at=clock.now(), last_error=""
            )
            if won != 1:  # the row count is the exactly-once guard
                return False
            await PayOrder.filter(id=order.id, status="REFUNDING").update(
                status="REFUNDED", refunded_amount=F("refunded_amount") + refund.amount
            )
        return True

    if await ledger.retrying(settle, what=f"settle refund {refund.id}"):
        log.info("refund %s settled from %s", refund.id, source)
        return SETTLED
    current = await PayRefund.get(id=refund.id)
    if current.status == "SUCCESS":
        return ALREADY
    # WeChat paid back a refund staff had cancelled (balance restored): staff must look
    detail["refund_status"] = current.status
    return await _anomaly(refund, merchant_id=merchant_id, kind="state_conflict", refund_id=refund_id, detail=detail)


async def settle_refund_notify(notify: PayNotify) -> None:
    """A verified refund notify (v2 decrypted req_info, v3 REFUND.* resource) settles its refund once."""
    reported = payapi.refund_of_notify(version=notify.version, fields=notify.fields)
    await settle_refund(
        merchant_id=notify.merchant_id,
        out_refund_no=reported.out_refund_no,
        refund_id=reported.refund_id,
        status=reported.status,
        amount=reported.amount,
        source=f"notify_{notify.version}",
    )


async def _v2_sign_type(order: PayOrder) -> str:
    # v2 signs with the merchant's configured MD5/HMAC-SHA256; v3 signs with RSA and ignores it
    return (await pay_account(merchant_id=order.merchant_id)).v2_sign_type if order.api_version == "v2" else "MD5"


async def submit_refund(*, gateway: Any, refund_id: int) -> str:
    """Ask WeChat to pay a PENDING refund back (v2 secapi/pay/refund or v3 domestic/refunds, per the order).

    A rejection marks it FAILED; a busy or unreachable WeChat raises so the outbox tries again.
    """
    refund = await PayRefund.get_or_none(id=refund_id)
    if refund is None or refund.status != "PENDING":
        return "skipped"
    order = await PayOrder.get(id=refund.order_id)
    client = await gateway.pay_client(order.mch_id, version=order.api_version)
    sign_type = await _v2_sign_type(order)
    try:
        answer = await payapi.create_refund(
            client,
            appid=order.appid,
            out_trade_no=order.out_trade_no,
            out_refund_no=refund.out_refund_no,
            total=order.amount,
            refund=refund.amount,
            reason=refund.reason[:80],
            notify_url=notify_url(gateway, order),
            sign_type=sign_type,
        )
    except WeChatPayError as exc:
        if exc.code in BUSY_CODES or exc.code.startswith("HTTP_5"):
            raise
        await mark_failed(refund_id=refund.id, error=f"{exc.code}: {exc}")
        return "failed"
    await PayRefund.filter(id=refund.id, refund_id="").update(refund_id=answer.refund_id)
    if answer.status in ("SUCCESS", *FAILED_STATES):
        await settle_refund(
            merchant_id=order.merchant_id,
            out_refund_no=refund.out_refund_no,
            refund_id=answer.refund_id,
            status=answer.status,
            amount=answer.amount,
            source="refund_answer",
        )
    return "submitted"


async def get_refund(*, merchant_id: int, refund_id: int) -> PayRefund:
    """One of the merchant's refunds (404 otherwise)."""
    refund = await PayRefund.get_or_none(id=refund_id, merchant_id=merchant_id)
    if refund is None:
        raise NotFound("refund not found", code="refund.not_found")
    return refund


async def retry_refund(*, merchant_id: int, refund_id: int) -> PayRefund:
    """A FAILED refund goes back to PENDING and is sent to WeChat again (same out_refund_no); others are 409."""
    refund = await get_refund(merchant_id=merchant_id, refund_id=refund_id)
    async with in_transaction():
        if not await PayRefund.filter(id=refund.id, status="FAILED").update(status="PENDING"):
            raise Conflict("only a failed refund can be retried", code="refund.not_failed")
        await enqueue(merchant_id=merchant_id, topic=REFUND_TOPIC, payload={"refund_id": refund.id})
    return await PayRefund.get(id=refund.id)


async def list_refunds(
    *,
    scope: Scope,
    status: str | None,
    order_id: int | None,
    before_id: int | None,
    limit: int,
) -> list[PayRefund]:
    """The merchant's refunds newest first; a store-scoped role sees its own members' refunds."""
    query = PayRefund.filter(merchant_id=scope.merchant_id)
    if scope.limited:
        query = query.filter(order_id__in=Subquery(PayOrder.filter(**member_rows(scope)).values("id")))
    if status:
        query = query.filter(status=status)
    if order_id:
        query = query.filter(order_id=order_id)
    if before_id:
        query = query.filter(id__lt=before_id)
    return await query.order_by("-id").limit(limit)


async def pending_refunds(*, older_than_seconds: int, limit: int = 200) -> list[PayRefund]:
    """PENDING refunds sent long enough ago that the notify should have come."""
    cutoff = clock.now() - timedelta(seconds=older_than_seconds)
    return await PayRefund.filter(status="PENDING", created_at__lte=cutoff).order_by("id").limit(limit)


async def reconcile_refund(*, gateway: Any, refund: PayRefund) -> str:
    """Ask WeChat where a PENDING refund stands and settle it the same way a notify would."""
    order = await PayOrder.get(id=refund.order_id)
    client = await gateway.pay_client(order.mch_id, version=order.api_version)
    sign_type = await _v2_sign_type(order)
    try:
        answer = await payapi.query_refund(
            client, appid=order.appid, out_refund_no=refund.out_refund_no, sign_type=sign_type
        )
    except WeChatPayError as exc:
        if exc.code in payapi.REFUND_NOT_FOUND_CODES:
            await mark_failed(refund_id=refund.id, error=f"{exc.code}: WeChat never accepted this refund")
            return "failed"
        raise
    return await settle_refund(
        merchant_id=order.merchant_id,
        out_refund_no=refund.out_refund_no,
        refund_id=answer.refund_id,
        status=answer.status,
        amount=answer.amount,
        source="refund_query",
    )
