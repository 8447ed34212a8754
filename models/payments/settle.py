"""Settling WeChat Pay orders exactly once: the notify handler and reconciliation both end in settle_paid."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from models.coupons.issue import grant_gift_coupons
from models.kernel import clock, sqlpath
from models.kernel.errors import Conflict
from models.kernel.sqlpath import Stmt
from models.ledger import books as ledger
from models.packages import sales as package_sales
from models.packages import templates as package_templates
from models.payments.orders import PayOrder, record_anomaly
from models.plans import terms as plans
from models.tiers import standing as tier_rules
from models.tiers.admin import gift_tier_in_transaction
from wechat.payapi import transaction_of_notify
from wechat.paynotify import PayNotify

log = logging.getLogger("huiyuan.payments")

SETTLED = "settled"
ALREADY_PAID = "already_paid"
PAID_STATUSES = ("PAID", "REFUNDING", "REFUNDED")


@dataclass
class OrderHead:
    """The columns of a pay order that settling reads: a notify's order read without building the ORM row."""

    id: int
    merchant_id: int
    member_id: int
    kind: str
    amount: int
    bonus_balance: int
    bonus_points: int
    status: str
    mch_id: str
    appid: str
    transaction_id: str
    snapshot: dict[str, Any]
    paid_at: datetime | None = None


_HEAD = (
    "SELECT id, member_id, kind, amount, bonus_balance, bonus_points, status, mch_id, appid, transaction_id, snapshot"
    " FROM pay_order WHERE out_trade_no = %s AND merchant_id = %s"
)


async def order_head(*, merchant_id: int, out_trade_no: str) -> OrderHead | None:
    """The order a notify names, as one parameterized SELECT of the columns settling needs."""
    (rows,) = await sqlpath.select([Stmt(_HEAD, (out_trade_no, merchant_id))])
    if not rows:
        return None
    order_id, member_id, kind, amount, bonus_balance, bonus_points, status, mch_id, appid, transaction_id, snapshot = (
        rows[0]
    )
    return OrderHead(
        id=int(order_id),
        merchant_id=merchant_id,
        member_id=int(member_id),
        kind=kind,
        amount=int(amount),
        bonus_balance=int(bonus_balance),
        bonus_points=int(bonus_points),
        status=status,
        mch_id=mch_id,
        appid=appid,
        transaction_id=transaction_id,
        snapshot=json.loads(snapshot) if isinstance(snapshot, str | bytes) else dict(snapshot or {}),
    )


def _recharge_credits(order: PayOrder | OrderHead) -> list[tuple[str, int, str, str, str]]:
    """What a recharge order credits, as (book, amount, kind, reason, key prefix); each key is "<prefix>:<order id>"."""
    return [
        credit
        for credit in (
            ("balance", order.amount, "recharge", "储值充值", "recharge"),
            ("balance", order.bonus_balance, "gift", "充值赠送", "recharge-bonus"),
            ("points", order.bonus_points, "gift", "充值赠送积分", "recharge-points"),
        )
        if credit[1] > 0
    ]


def package_gift_coupons(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    """The coupons the order's package promised ([{template_id, quantity}]), from the snapshot it was sold with."""
    package = snapshot.get("package") or {}
    return list((package.get("gifts") or {}).get("coupons") or [])


def recharge_coupon_prefix(order_id: int) -> str:
    """The key prefix of a recharge's gift coupons: each is `recharge:<order id>:<template>:<i>`."""
    return f"recharge:{order_id}"


async def _deliver_goods(order: PayOrder | OrderHead) -> None:
    """Credit what the order sold; runs inside the settling transaction, re-runnable (idempotency keys)."""
    if order.kind == "recharge":
        for book, delta, kind, reason, key in _recharge_credits(order):
            change = ledger.change_balance if book == "balance" else ledger.change_points
            await change(
                merchant_id=order.merchant_id,
                member_id=order.member_id,
                delta=delta,
                kind=kind,
                reason=reason,
                idempotency_key=f"{key}:{order.id}",
                ref_type="pay_order",
                ref_id=str(order.id),
                savepoint=False,  # the order's own keys, written once after CREATED -> PAID: nothing to replay
            )
        gift_tier_id = order.snapshot.get("gift_tier_id")
        if isinstance(gift_tier_id, int):
            await gift_tier_in_transaction(
                merchant_id=order.merchant_id,
                member_id=order.member_id,
                tier_id=gift_tier_id,
                detail=f"recharge package, pay order {order.id}",
            )
        coupons = package_gift_coupons(order.snapshot)
        if coupons:  # each `recharge:<order id>:<template>:<i>`, in the settling transaction
            await grant_gift_coupons(
                merchant_id=order.merchant_id,
                member_id=order.member_id,
                coupons=coupons,
                key_prefix=recharge_coupon_prefix(order.id),
            )
    elif order.kind == "plan":
        await plans.start_plan_term(order=order if isinstance(order, PayOrder) else await PayOrder.get(id=order.id))
    elif order.kind == "package":
        await deliver_package(order)


async def deliver_package(order: PayOrder | OrderHead) -> None:
    """The package the order bought, from its snapshot (sold even if the template was retired since); once, by
    the sale key pay:<order id>, which a replayed or concurrent notify finds instead of selling again."""
    terms = package_templates.Terms.from_snapshot(order.snapshot["template"])
    await package_sales.sell_package(
        merchant_id=order.merchant_id,
        member_id=order.member_id,
        template_id=terms.template_id,
        sale_key=package_sales.pay_order_key(order.id),
        payments=[{"method": "wechat", "amount": order.amount}],
        store_id=order.snapshot.get("store_id"),
        staff_id=None,
        terms=terms,
        channel="pay",
    )


def _batchable(order: OrderHead) -> bool:
    """A plain recharge settles as a batched write; plans, service packages, tier-gift and coupon-gift recharge
    packages through the ORM."""
    return (
        order.kind == "recharge"
        and not isinstance(order.snapshot.get("gift_tier_id"), int)
        and not package_gift_coupons(order.snapshot)
    )


class _NoAccount(Exception):
    def __init__(self, book: str) -> None:
        super().__init__(f"member has no {book} account")
        self.book = book


async def _settle_batched(order: OrderHead, *, transaction_id: str, amount: int) -> tuple[bool, bool]:
    """CREATED -> PAID and the goods as ONE round trip with the COMMIT: (won, tier may go up).

    The same guard (the conditional UPDATE's row count, a sqlpath guard: a loser's batch stops right after it and
    its transaction rolls back), the same ledger rows, keys and listeners' work as _deliver_goods
    (models.ledger.books.credit_statements, whose account update is made a guard here: nothing has read the
    accounts, so a member without one stops the batch instead of paying the order with no credit). Locks in the
    ORM path's order: pay order, then accounts. The batch ends by reading what the tier check needs.
    """
    now = clock.now()
    paid = Stmt(
        "UPDATE pay_order SET status = 'PAID', transaction_id = %s, paid_at = %s"
        " WHERE id = %s AND status = 'CREATED' AND amount = %s",
        (transaction_id, sqlpath.db_time(now), order.id, amount),
        guard=True,
    )
    statements: list[Stmt] = [paid]
    books: dict[int, str] = {}  # the first statement of each credit (its account's update, guarded) -> its book
    for book, delta, kind, reason, key in _recharge_credits(order):
        credit = await ledger.credit_statements(
            ledger.NewEntry(
                book=book,
                merchant_id=order.merchant_id,
                member_id=order.member_id,
                delta=delta,
                kind=kind,
                reason=reason,
                idempotency_key=f"{key}:{order.id}",
                ref_type="pay_order",
                ref_id=str(order.id),
                at=now,
            )
        )
        if credit is None:  # a listener cannot batch it: the guard alone, then the credits through the ORM
            await sqlpath.run([paid])
            order.status, order.transaction_id, order.paid_at = "PAID", transaction_id, now
            await _deliver_goods(order)
            return True, True
        books[len(statements)] = book
        statements += [replace(credit[0], guard=True), *credit[1:]]
    probe = await tier_rules.upgrade_probe(merchant_id=order.merchant_id, member_id=order.member_id)
    if probe is not None:
        statements.append(probe)
    try:
        done = await sqlpath.run(statements, commit=True, keep=())
    except sqlpath.GuardFailed as failed:
        if failed.index not in books:
            raise
        raise _NoAccount(books[failed.index]) from failed
    order.status, order.transaction_id, order.paid_at = "PAID", transaction_id, now
    if probe is None:
        return True, False
    return True, await tier_rules.probe_says_upgrade(merchant_id=order.merchant_id, row=done.rows[-1][0])


async def _after_settled(order: PayOrder | OrderHead) -> None:
    """Side work after the commit: tier re-evaluation (its own transactions; a failure never unpays the order)."""

    try:
        await tier_rules.reevaluate(
            merchant_id=order.merchant_id, member_id=order.member_id, reason=f"pay_order:{order.id}"
        )
    except Exception:  # the payment is committed; the tier job catches up
        log.exception("tier re-evaluation after pay order %s failed", order.id)


async def _anomaly(kind: str, *, merchant_id: int, transaction_id: str, out_trade_no: str, detail: dict) -> str:
    await record_anomaly(
        merchant_id=merchant_id,
        kind=kind,
        dedupe_key=f"{kind}:{transaction_id or out_trade_no}"[:128],
        out_trade_no=out_trade_no,
        detail=detail,
    )
    return kind


async def settle_paid(
    *, merchant_id: int, out_trade_no: str, amount: int, transaction_id: str, appid: str, mch_id: str, source: str
) -> str:
    """CREATED → PAID with the goods credited in one transaction, once; a mismatch is an anomaly and credits nothing.

    Returns "settled", "already_paid" (the same payment seen again) or the anomaly kind.
    """
    detail = {
        "source": source,
        "transaction_id": transaction_id,
        "amount": amount,
        "appid": appid,
        "mch_id": mch_id,
    }

    async def anomaly(kind: str, detail: dict[str, Any]) -> str:
        return await _anomaly(
            kind, merchant_id=merchant_id, transaction_id=transaction_id, out_trade_no=out_trade_no, detail=detail
        )

    order = await order_head(merchant_id=merchant_id, out_trade_no=out_trade_no)
    if order is None:
        return await anomaly("unknown_order", detail)
    expected = {"mch_id": order.mch_id, "appid": order.appid, "amount": order.amount, "order_id": order.id}
    for kind, given, wanted in (
        ("mch_id_mismatch", mch_id, order.mch_id),
        ("appid_mismatch", appid, order.appid),
        ("amount_mismatch", amount, order.amount),
    ):
        if given != wanted:
            return await anomaly(kind, {**detail, "expected": expected})
    if not transaction_id:
        return await anomaly("state_conflict", {**detail, "problem": "no transaction_id"})
    if order.status != "CREATED":  # a replay: no state leads back to CREATED, so this read is the answer
        return await _settled_before(order, transaction_id, anomaly, detail)

    upgrade = True  # the tier re-evaluation after the commit: unless the batched path read it is not due

    async def settle() -> bool:
        nonlocal upgrade
        try:
            async with sqlpath.transaction():  # BEGIN rides with the first round trip
                if _batchable(order):
                    won, upgrade = await _settle_batched(order, transaction_id=transaction_id, amount=amount)
                    return won
                return await settle_orm()
        except sqlpath.GuardFailed:  # someone else moved the order on from CREATED: rolled back, nothing written
            return False
        except _NoAccount as exc:  # rolled back; answered 500, so WeChat delivers again
            raise Conflict(str(exc), code=f"{exc.book}.no_account") from exc

    async def settle_orm() -> bool:
        nonlocal upgrade
        paid_at = clock.now()
        won_orm = await PayOrder.filter(id=order.id, status="CREATED", amount=amount).update(
            status="PAID", transaction_id=transaction_id, paid_at=paid_at
        )
        if won_orm != 1:  # the row count is the exactly-once guard
            return False
        await _deliver_goods(await PayOrder.get(id=order.id))  # plans and tier gifts: the whole row
        order.status, order.transaction_id, order.paid_at = "PAID", transaction_id, paid_at
        upgrade = True
        return True

    if await ledger.retrying(settle, what=f"settle pay order {order.id}"):
        log.info("pay order %s settled from %s (%s)", order.id, source, transaction_id)
        if upgrade:
            await _after_settled(order)
        return SETTLED
    return await _settled_before(await PayOrder.get(id=order.id), transaction_id, anomaly, detail)


async def _settled_before(
    current: PayOrder | OrderHead,
    transaction_id: str,
    anomaly: Callable[[str, dict[str, Any]], Awaitable[str]],
    detail: dict,
) -> str:
    """An order someone else moved on from CREATED: the same payment again, or a conflict for staff."""
    if current.status in PAID_STATUSES and current.transaction_id == transaction_id:
        return ALREADY_PAID
    conflict = {**detail, "status": current.status, "recorded_transaction_id": current.transaction_id}
    return await anomaly("state_conflict", conflict)


async def settle_pay_notify(notify: PayNotify) -> None:
    """A verified SUCCESS payment notify settles its order once; other states are acknowledged and ignored.

    Mismatches become anomalies and are acknowledged (WeChat's retries would not fix them); a database failure
    raises, so the HTTP layer answers 500 and WeChat delivers again.
    """
    paid = transaction_of_notify(version=notify.version, fields=notify.fields)
    if paid.state != "SUCCESS":
        log.info("%s pay notify %s in state %s: nothing to do", notify.version, notify.raw_id, paid.state)
        return
    if paid.amount is None:
        await _anomaly(
            "amount_mismatch",
            merchant_id=notify.merchant_id,
            transaction_id=paid.transaction_id,
            out_trade_no=paid.out_trade_no,
            detail={"source": f"notify_{notify.version}", "problem": paid.problem, **paid.raw_amount},
        )
        return
    await settle_paid(
        merchant_id=notify.merchant_id,
        out_trade_no=paid.out_trade_no,
        amount=paid.amount,
        transaction_id=paid.transaction_id,
        appid=paid.appid,
        mch_id=notify.mch_id,
        source=f"notify_{notify.version}",
    )
