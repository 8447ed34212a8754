"""Staff refunds of pay orders: first take back what the order gave (unspent principal, bonus, points, plan days,
a package's unused uses)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from models.coupons import takeback as coupon_packs
from models.kernel.errors import Conflict, NotFound
from models.kernel.outbox import enqueue
from models.ledger import balance_lots as wallet
from models.ledger import books as ledger
from models.packages import sales as package_sales
from models.packages.tables import MemberPackage
from models.payments.orders import PayOrder, PayRefund, record_anomaly
from models.payments.refund_settle import REFUND_TOPIC, RefundDetail
from models.payments.settle import package_gift_coupons, recharge_coupon_prefix
from models.plans import terms as plans
from models.points import expiry as points_lots
from models.points import lots as points
from models.tenancy.visibility import Scope
from models.tiers import standing as tier_rules

log = logging.getLogger("huiyuan.refunds")


@dataclass(frozen=True)
class RefundResult:
    refund: PayRefund
    detail: RefundDetail
    replayed: bool
    coupons: coupon_packs.PackState = coupon_packs.PackState(voided=0, kept_used=0)


def out_refund_no(*, merchant_id: int, idempotency_key: str) -> str:
    """The same staff request (merchant, key) always names the same WeChat refund."""
    return "RF" + hashlib.sha256(f"{merchant_id}:{idempotency_key}".encode()).hexdigest()[:30]


async def _replay(*, order: PayOrder, number: str) -> RefundResult | None:
    refund = await PayRefund.get_or_none(out_refund_no=number)
    if refund is None:
        return None
    if refund.order_id != order.id:
        raise Conflict("idempotency_key was already used for another refund", code="idempotency.key_reused")
    detail = await RefundDetail.get(refund_id=refund.id)
    return RefundResult(refund=refund, detail=detail, replayed=True, coupons=await gift_coupon_state(order=order))


async def _take_recharge(order: PayOrder, refund_no: str, staff_id: int | None) -> tuple[PayRefund, RefundDetail]:
    # lots change only under the member's account lock: with it held, the order's unspent lots are exact
    await ledger.BalanceAccount.filter(member_id=order.member_id).select_for_update().first()
    unspent = await wallet.order_unspent(order_id=order.id)
    if unspent.principal <= 0:
        raise Conflict("the order's principal is spent: nothing to refund", code="refund.nothing_refundable")
    refund = await PayRefund.create(
        merchant_id=order.merchant_id,
        order_id=order.id,
        out_refund_no=refund_no,
        amount=unspent.principal,
        forfeited_bonus=unspent.bonus,
        operator_staff_id=staff_id,
    )
    detail = RefundDetail(refund_id=refund.id)
    parts: tuple[tuple[wallet.Part, int, str, str], ...] = (
        ("principal", unspent.principal, "refund", "储值退款"),
        ("bonus", unspent.bonus, "forfeit", "退款作废赠送金额"),
    )
    for part, delta, kind, reason in parts:
        if delta <= 0:
            continue

        async def take(entry: ledger._Entry, part: wallet.Part = part) -> None:
            await wallet.take_order_lots(entry=entry, order_id=order.id, part=part)

        result = await ledger.change_balance(
            merchant_id=order.merchant_id,
            member_id=order.member_id,
            delta=-delta,
            kind=kind,
            reason=reason,
            idempotency_key=f"{kind}:{refund.id}",
            ref_type="pay_order",
            ref_id=str(order.id),
            operator_staff_id=staff_id,
            within=take,
        )
        setattr(detail, f"{part}_entry_id", result.entry.id)
    if order.bonus_points > 0:
        await _claw_back_points(order, refund, detail, staff_id)
    await _void_gift_coupons(order, refund)
    return refund, detail


async def _void_gift_coupons(order: PayOrder, refund: PayRefund) -> None:
    """The package's gift coupons go with its bonus: every one still unused is voided, whatever part of the
    principal is paid back (the bonus is forfeited whole too); a used one stays used, recorded in the log."""
    coupons = package_gift_coupons(order.snapshot)
    if not coupons:
        return
    state = await coupon_packs.void_pack(
        merchant_id=order.merchant_id,
        member_id=order.member_id,
        coupons=coupons,
        key_prefix=recharge_coupon_prefix(order.id),
    )
    log.info(
        "refund %s of order %s: %s gift coupons voided, %s already used stay used",
        refund.id,
        order.id,
        state.voided,
        state.kept_used,
    )


async def gift_coupon_state(*, order: PayOrder) -> coupon_packs.PackState:
    """What a recharge refund did to the package's gift coupons: voided, and kept because already used."""
    coupons = package_gift_coupons(order.snapshot) if order.kind == "recharge" else []
    if not coupons:
        return coupon_packs.PackState(voided=0, kept_used=0)
    return await coupon_packs.pack_state(
        merchant_id=order.merchant_id,
        member_id=order.member_id,
        coupons=coupons,
        key_prefix=recharge_coupon_prefix(order.id),
    )


async def _claw_back_points(order: PayOrder, refund: PayRefund, detail: RefundDetail, staff_id: int | None) -> None:
    """Take the gift points back as far as the member still has them; never below zero, the rest is recorded."""
    account = await ledger.PointsAccount.filter(member_id=order.member_id).select_for_update().first()
    available = account.balance if account is not None else 0
    take = min(order.bonus_points, available)
    if take > 0:
        result = await points.spend_points(
            merchant_id=order.merchant_id,
            member_id=order.member_id,
            points=take,
            kind="adjust",
            reason="退款扣回充值赠送积分",
            idempotency_key=f"refund-points:{refund.id}",
            ref_type="pay_order",
            ref_id=str(order.id),
            operator_staff_id=staff_id,
        )
        detail.points_entry_id = result.entry.id
    detail.points_clawed_back, detail.points_not_clawed = take, order.bonus_points - take
    if detail.points_not_clawed:
        await record_anomaly(
            merchant_id=order.merchant_id,
            kind="points_not_clawed_back",
            dedupe_key=f"refund:{refund.out_refund_no}:points_not_clawed_back",
            out_trade_no=order.out_trade_no,
            detail={"refund_id": refund.id, "points": detail.points_not_clawed},
        )


async def _take_plan(order: PayOrder, refund_no: str, staff_id: int | None) -> tuple[PayRefund, RefundDetail]:
    term_refund = await plans.plan_refund_amount(order=order)
    term = term_refund.term
    refund = await PayRefund.create(
        merchant_id=order.merchant_id,
        order_id=order.id,
        out_refund_no=refund_no,
        amount=term_refund.amount,
        operator_staff_id=staff_id,
    )
    detail = RefundDetail(
        refund_id=refund.id, member_plan_id=term.id, term_starts_at=term.starts_at, term_ends_at=term.ends_at
    )
    shifted = await plans.end_term_now(term=term)
    detail.shifted_seconds = int(shifted.total_seconds())
    return refund, detail


async def _take_package(order: PayOrder, refund_no: str, staff_id: int | None) -> tuple[PayRefund, RefundDetail]:
    # the package's uses close in this transaction (a savepoint), with the pay_refund row and its outbox message
    package = await package_sales.package_of_pay_order(merchant_id=order.merchant_id, order_id=order.id)
    if package_sales.check_refund(package, refund_key=refund_no, store_id=None):  # 409 unless still active
        raise Conflict("the package was already refunded", code="package.refunded")
    amount, _ = await package_sales.refund_quote(package)
    if amount <= 0:
        raise Conflict("nothing of the package is left to refund", code="refund.nothing_refundable")
    refund = await PayRefund.create(
        merchant_id=order.merchant_id,
        order_id=order.id,
        out_refund_no=refund_no,
        amount=amount,
        operator_staff_id=staff_id,
    )
    await package_sales.write_refund(package, amount=amount, to_balance=0, refund_key=refund_no, staff_id=staff_id)
    return refund, RefundDetail(refund_id=refund.id)


TAKE = {"recharge": _take_recharge, "plan": _take_plan, "package": _take_package}


async def refund_member_package(
    *, scope: Scope, member_id: int, package_id: int, refund_key: str, staff_id: int | None, store_id: int | None
) -> tuple[MemberPackage, bool]:
    """Refund a package's unused part once: paid with WeChat Pay, that amount goes back through a WeChat refund;
    otherwise as at the till (stored value to its lots). (package, refunded now)."""
    package = await package_sales.get_package(scope=scope, member_id=member_id, package_id=package_id)
    order_id = package_sales.pay_order_of(package)
    if order_id is None:
        return await package_sales.refund_package(
            scope=scope,
            member_id=member_id,
            package_id=package_id,
            refund_key=refund_key,
            staff_id=staff_id,
            store_id=store_id,
        )
    number = out_refund_no(merchant_id=package.merchant_id, idempotency_key=refund_key)
    if package_sales.check_refund(package, refund_key=number, store_id=store_id):
        return package, False
    result = await request_refund(
        merchant_id=package.merchant_id,
        order_id=order_id,
        reason=f"套餐退款 {package.name}",
        idempotency_key=refund_key,
        staff_id=staff_id,
    )
    return await MemberPackage.get(id=package.id), not result.replayed


async def request_refund(
    *, merchant_id: int, order_id: int, reason: str, idempotency_key: str, staff_id: int | None
) -> RefundResult:
    """Debit first, in one transaction: a recharge gives back its unspent principal (its bonus is forfeited),
    a plan the unused days, a service package its unused part (the package closes); the WeChat refund goes out
    through the outbox. One refund per order (409)."""
    order = await PayOrder.get_or_none(id=order_id, merchant_id=merchant_id)
    if order is None:
        raise NotFound("pay order not found", code="pay_order.not_found")
    number = out_refund_no(merchant_id=merchant_id, idempotency_key=idempotency_key)
    earlier = await _replay(order=order, number=number)
    if earlier is not None:
        return earlier

    async def work() -> tuple[PayRefund, RefundDetail]:
        async with in_transaction():
            if not await PayOrder.filter(id=order.id, status="PAID").update(status="REFUNDING"):
                raise Conflict(
                    f"the order is {order.status if order.status != 'PAID' else 'being refunded'}",
                    code="refund.not_refundable",
                )
            refund, detail = await TAKE[order.kind](order, number, staff_id)
            refund.reason = reason.strip()[:255]
            await refund.save(update_fields=["reason"])
            await detail.save()
            await enqueue(merchant_id=merchant_id, topic=REFUND_TOPIC, payload={"refund_id": refund.id})
            return refund, detail

    try:
        refund, detail = await ledger.retrying(work, what=f"refund of order {order.id}")
    except (Conflict, IntegrityError):
        earlier = await _replay(order=order, number=number)  # the same request, sent twice at once
        if earlier is not None:
            return earlier
        raise
    await _after_commit(order)
    return RefundResult(refund=refund, detail=detail, replayed=False, coupons=await gift_coupon_state(order=order))


async def _after_commit(order: PayOrder) -> None:

    try:
        await tier_rules.reevaluate(
            merchant_id=order.merchant_id, member_id=order.member_id, reason=f"refund:{order.id}"
        )
    except Exception:  # the refund is committed; the tier job catches up
        log.exception("tier re-evaluation after the refund of order %s failed", order.id)


async def cancel_refund(*, merchant_id: int, refund_id: int, staff_id: int | None) -> PayRefund:
    """Give up a FAILED refund: the same lots, points and plan days come back and the order is PAID again."""
    refund = await PayRefund.get_or_none(id=refund_id, merchant_id=merchant_id)
    if refund is None:
        raise NotFound("refund not found", code="refund.not_found")
    order = await PayOrder.get(id=refund.order_id)

    async def work() -> None:
        async with in_transaction():
            if order.kind == "package":  # the package stays refunded: a failed one is retried, not given up
                raise Conflict("a package's refund is retried, not cancelled", code="refund.not_cancellable")
            if not await PayRefund.filter(id=refund.id, status="FAILED").update(status="CANCELLED"):
                raise Conflict("only a failed refund can be cancelled", code="refund.not_failed")
            if not await PayOrder.filter(id=order.id, status="REFUNDING").update(status="PAID"):
                raise Conflict("the order is not being refunded", code="refund.order_state")
            detail = await RefundDetail.get(refund_id=refund.id)
            for entry_id, delta, key in (
                (detail.principal_entry_id, refund.amount, f"refund-cancel:{refund.id}"),
                (detail.bonus_entry_id, refund.forfeited_bonus, f"forfeit-cancel:{refund.id}"),
            ):
                if entry_id is not None and delta > 0:  # a "reverse" naming the debit restores the same lots
                    await ledger.change_balance(
                        merchant_id=merchant_id,
                        member_id=order.member_id,
                        operator_staff_id=staff_id,
                        delta=delta,
                        kind="reverse",
                        reason="退款取消,退回余额",
                        idempotency_key=key,
                        ref_type="balance_entry",
                        ref_id=str(entry_id),
                    )
            if detail.points_entry_id is not None:
                await points_lots.reverse_spend(
                    merchant_id=merchant_id,
                    member_id=order.member_id,
                    debit_entry_id=detail.points_entry_id,
                    idempotency_key=f"refund-points-cancel:{refund.id}",
                    reason="退款取消,退回积分",
                    operator_staff_id=staff_id,
                )
            coupons = package_gift_coupons(order.snapshot) if order.kind == "recharge" else []
            if coupons:  # the pack's coupons this refund voided (nothing else voids a coupon)
                await coupon_packs.restore_pack(
                    merchant_id=merchant_id,
                    member_id=order.member_id,
                    coupons=coupons,
                    key_prefix=recharge_coupon_prefix(order.id),
                )
            if detail.member_plan_id is not None and detail.term_starts_at and detail.term_ends_at:
                await plans.restore_term(
                    member_plan_id=detail.member_plan_id,
                    starts_at=detail.term_starts_at,
                    ends_at=detail.term_ends_at,
                    shifted=timedelta(seconds=detail.shifted_seconds),
                )

    await ledger.retrying(work, what=f"cancel refund {refund.id}")
    log.warning("refund %s cancelled by staff %s: order %s is PAID again", refund.id, staff_id, order.id)
    await _after_commit(order)
    return await PayRefund.get(id=refund.id)
