"""Settle a POS order in one transaction, once per idempotency key, as a deliberate SQL path.

BEGIN rides with the first round trip: the member's account and tier row locks, then one SELECT of every check
(the key's earlier order, the store, the lines' staff, the member's visibility), the member's points and stored
value, the earning's figures and, when the order spends points, the lots that cover it. The second round trip
inserts the order, takes the coupon (guarded status='usable'), debits the points (guarded account and lot updates)
and, unless stored value is paid (its lots are taken through the ORM ledger path, models/ledger/balance_lots.py),
earns the points lot and growth and commits (models/checkout/earn_batch.py, shared with the purchases endpoint).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from tortoise.exceptions import IntegrityError

from models.checkout import earn_batch, pricing
from models.checkout.orders import OrderInput, _coupon, _earn_items, _staff_checked, _store_checked, price_order
from models.checkout.purchases import (
    Purchase,
    _finish,
    _Repeat,
    insert_statement,
    member_visible_sql,
)
from models.coupons import redemption
from models.coupons.changes import coupons_changed
from models.kernel import clock, sqlpath
from models.kernel.errors import Conflict, NotFound, Unprocessable
from models.kernel.sqlpath import GuardFailed, Ref, Stmt
from models.ledger import books as ledger
from models.points.lots import LotChanged, lots_in_order, open_lots_statements
from models.points.rules import purchase_points
from models.tenancy.visibility import Scope


def request_hash(order: OrderInput, payments: list[dict[str, Any]], expect: dict[str, Any] | None) -> str:
    body = {"order": asdict(order), "payments": payments, "expect": expect}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


KEY_MAX = 60  # order_no is "pos:" + key, at most 64 characters
PAYMENT_METHODS = ("cash", "card", "wechat", "alipay", "other")


def _check_key(key: str) -> None:
    if not key or len(key) > KEY_MAX:
        raise Unprocessable(
            f"idempotency_key must be 1-{KEY_MAX} characters", code="idempotency.key_invalid", field="idempotency_key"
        )


def _check_payments(payments: list[dict[str, Any]], due: int) -> None:
    for index, payment in enumerate(payments):
        amount = payment.get("amount")
        if payment.get("method") not in PAYMENT_METHODS:
            raise Unprocessable(
                f"method must be one of {', '.join(PAYMENT_METHODS)}",
                code="checkout.payment_invalid",
                field=f"payments.{index}.method",
            )
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise Unprocessable(
                "amount must be a positive number of fen",
                code="checkout.payment_invalid",
                field=f"payments.{index}.amount",
            )
    paid = sum(int(p["amount"]) for p in payments)
    if paid != due:
        raise Unprocessable(
            f"payments add up to {paid} fen, {due} fen are due",
            code="checkout.payments_mismatch",
            field="payments",
            due=due,
            paid=paid,
        )


_CHANGED_CODES = {
    "checkout.points_insufficient": "points",
    "checkout.balance_insufficient": "balance",
    "checkout.points_over_cap": "points",
    "checkout.balance_over_due": "balance",
    "points.insufficient": "points",
    "balance.insufficient": "balance",
}


def _changed(reason: str, message: str) -> Conflict:
    return Conflict(f"the order changed since the quote: {message}", code="checkout.changed", reason=reason)


async def _repeat(*, scope: Scope, order_no: str, digest: str) -> Purchase | None:
    earlier = await Purchase.get_or_none(merchant_id=scope.merchant_id, order_no=order_no)
    if earlier is None:
        return None
    if not scope.sees_store(earlier.store_id):  # another store's order: say nothing of it
        raise Conflict("idempotency_key was already used for a different order", code="checkout.key_reused")
    if earlier.request_hash != digest:
        raise Conflict(
            "idempotency_key was already used for a different order", code="checkout.key_reused", order_id=earlier.id
        )
    return earlier


def _lines_json(priced: pricing.Priced) -> list[dict[str, Any]]:
    """The lines as the order keeps them: every priced figure, the points each took, how many units came back."""
    points_per_line = pricing.allocate(priced.points_used, [ln.points_fen for ln in priced.lines])
    return [
        {**asdict(ln), "points": points, "returned": 0}
        for ln, points in zip(priced.lines, points_per_line, strict=True)
    ]


_PURCHASE_COLUMNS = (
    "merchant_id", "member_id", "store_id", "order_no", "amount", "items", "points", "growth", "status",
    "occurred_at", "created_at", "source", "staff_id", "api_key_id", "gross", "tier_discount", "coupon_id",
    "coupon_discount", "points_used", "points_fen", "balance_fen", "due", "payments", "lines", "request_hash",
    "return_seq",
)  # fmt: skip


def _settle_reads(*, scope: Scope, order: OrderInput, order_no: str, earn_reads: earn_batch.EarnReads) -> Stmt:
    """The settle's reads, sent with the member's locks: the key's earlier order, the store, the lines' staff, the
    member's visibility, points and stored value, then what the earning needs."""
    merchant_id, member_id = scope.merchant_id, order.member_id
    staff_ids = sorted({it.staff_id for it in order.items if it.staff_id is not None})
    staff_sql = "NULL"
    if staff_ids:
        staff_sql = (
            "(SELECT GROUP_CONCAT(id) FROM staff WHERE merchant_id = %s"  # noqa: S608
            f" AND id IN ({', '.join(['%s'] * len(staff_ids))}))"
        )
    visible_sql, visible_params = member_visible_sql(
        scope=scope, member_id=int(member_id or 0), merchant_id=merchant_id
    )
    columns = [
        "(SELECT id FROM purchase WHERE merchant_id = %s AND order_no = %s)",
        "(SELECT 1 FROM store WHERE id = %s AND merchant_id = %s)",
        staff_sql,
        f"({visible_sql})",
        "(SELECT balance FROM points_account WHERE member_id = %s)",
        "(SELECT balance FROM balance_account WHERE member_id = %s)",
        *earn_reads.columns,
    ]
    params = [
        merchant_id,
        order_no,
        order.store_id,
        merchant_id,
        *([merchant_id, *staff_ids] if staff_ids else []),
        *visible_params,
        member_id,
        member_id,
        *earn_reads.params,
    ]
    return Stmt("SELECT " + ", ".join(columns), tuple(params), rows=True)


def _debit_entry(purchase: Purchase, *, amount: int, lots: tuple[tuple[int, int, Any], ...]) -> ledger.NewEntry:
    """The order's points debit as a batched ledger row, keyed by the purchase the same batch inserts."""
    return ledger.NewEntry(
        book="points",
        merchant_id=purchase.merchant_id,
        member_id=purchase.member_id,
        delta=-amount,
        kind="spend",
        reason=Ref("purchase", prefix="POS order "),
        idempotency_key=Ref("purchase", prefix="pos-points:"),
        ref_type="purchase",
        ref_id=Ref("purchase"),
        at=purchase.created_at,
        lots=lots,
    )


async def _earn(
    purchase: Purchase,
    config: earn_batch.EarnConfig,
    reads: earn_batch.EarnReads,
    figures: earn_batch.EarnFigures,
    *,
    reason: str,
    purchase_id: int | None,
) -> earn_batch.EarnWrite | None:
    return await earn_batch.earn_statements(
        config,
        reads,
        figures,
        merchant_id=purchase.merchant_id,
        member_id=purchase.member_id,
        points=purchase.points,
        growth=purchase.growth,
        reason=reason,
        when=purchase.occurred_at,
        now=clock.now(),
        purchase_id=purchase_id,
    )


async def _debit(purchase: Purchase, *, points: int, balance: int, staff_id: int | None) -> None:
    """The order's points and stored value, through the ledger's guarded debits (a lost race: checkout.changed)."""
    debits = (
        (ledger.change_points, points, "spend", "pos-points"),
        (ledger.change_balance, balance, "pay", "pos-balance"),
    )
    try:
        for change, amount, kind, key in debits:
            if amount:
                await change(
                    merchant_id=purchase.merchant_id,
                    member_id=purchase.member_id,
                    delta=-amount,
                    kind=kind,
                    reason=f"POS order {purchase.id}",
                    idempotency_key=f"{key}:{purchase.id}",
                    ref_type="purchase",
                    ref_id=str(purchase.id),
                    operator_staff_id=staff_id,
                    savepoint=False,
                )
    except Conflict as exc:
        if exc.code in _CHANGED_CODES:
            raise _changed(_CHANGED_CODES[exc.code], exc.message) from None
        raise


async def settle(
    *,
    scope: Scope,
    order: OrderInput,
    idempotency_key: str,
    payments: list[dict[str, Any]],
    expect: dict[str, Any] | None = None,
    staff_id: int | None = None,
    api_key_id: int | None = None,
) -> tuple[Purchase, bool]:
    """Settle an order once per key, all or nothing: (the order, True when this call created it).

    expect: the quote's {due, points, balance} the till saw; a different figure now is 409 checkout.changed.
    A member whose points or stored value were spent meanwhile (read here or lost to a concurrent order at the
    guarded debit) is 409 checkout.changed and nothing is written.
    """
    merchant_id = scope.merchant_id
    _check_key(idempotency_key)
    if order.member_id is None:
        raise Unprocessable("a POS order needs a member", code="checkout.member_required", field="member_id")
    member_id = order.member_id
    order_no = f"pos:{idempotency_key}"
    digest = request_hash(order, payments, expect)
    config = await earn_batch.earn_config(merchant_id=merchant_id)  # configuration: cached per process
    rules = config.rules

    async def work() -> Purchase:
        when = clock.now()
        earn_reads = earn_batch.earn_reads(config, merchant_id=merchant_id, member_id=member_id, when=when, probe=True)
        reads = _settle_reads(scope=scope, order=order, order_no=order_no, earn_reads=earn_reads)
        async with sqlpath.transaction():  # BEGIN rides with the first round trip
            # the points account row lock serialises this member's orders (their points, the daily cap); the tier
            # row's their growth rows
            lock = earn_batch.lock_statement(merchant_id=merchant_id, member_id=member_id)
            lots = open_lots_statements(member_id=member_id) if order.points > 0 else []
            found = await sqlpath.run([lock, reads, *lots])
            locked, (figures_row,) = found.rows[:2]
            earlier, store_ok, staff_found, visible, member_points, member_balance = figures_row[:6]
            if earlier is not None:
                raise _Repeat
            _store_checked(scope=scope, store_id=order.store_id, found=store_ok is not None)
            _staff_checked(items=order.items, found={int(i) for i in str(staff_found or "").split(",") if i})
            if visible is None:
                raise NotFound("member not found", code="member.not_found", field="member_id")
            if not locked:
                raise Conflict("member has no points account", code="points.no_account")
            _, tier_row_id, tier_id = locked[0]
            earn = earn_batch.earn_figures(config, list(figures_row[6:]), tier_row_id=tier_row_id, tier_id=tier_id)
            tier = earn.tier
            off = pricing.off_permille_of(tier.discount_permille) if tier is not None else 0
            coupon = await _coupon(
                merchant_id=merchant_id,
                member_id=member_id,
                coupon_id=order.coupon_id,
                store_id=order.store_id,
                tier_id=tier.id if tier is not None else None,
            )
            try:
                priced = price_order(
                    order,
                    off_permille=off,
                    coupon=coupon,
                    rules=rules,
                    member_points=int(member_points or 0),
                    member_balance=int(member_balance or 0),
                )
            except Unprocessable as exc:
                if exc.code in _CHANGED_CODES and expect is not None:
                    raise _changed(_CHANGED_CODES[exc.code], exc.message) from None
                if exc.code == "coupon.not_applicable" and exc.extra.get("reason") in ("used", "expired"):
                    raise _changed("coupon", exc.message) from None  # used by another order since the quote
                raise
            if expect is not None:
                for name, now in (("due", priced.due), ("points", priced.points_used), ("balance", priced.balance_fen)):
                    if name in expect and expect[name] != now:
                        raise _changed(name, f"{name} is now {now}, the quote said {expect[name]}")
            _check_payments(payments, priced.due)
            points = 0
            if priced.earn_basis > 0:
                points = purchase_points(
                    rules,
                    amount=priced.earn_basis,
                    items=_earn_items(priced),
                    store_id=order.store_id,
                    multiplier_permille=earn.multiplier_permille,
                )
            points = earn_batch.capped(config, earn, points)
            growth = priced.earn_basis // config.policy.fen_per_growth if priced.earn_basis > 0 else 0
            created = clock.now()
            purchase = Purchase(
                merchant_id=merchant_id,
                member_id=member_id,
                store_id=order.store_id,
                order_no=order_no,
                amount=priced.earn_basis,
                items=_earn_items(priced),
                points=points,
                growth=growth,
                status="settled",
                occurred_at=when,
                created_at=created,
                source="pos",
                staff_id=staff_id,
                api_key_id=api_key_id,
                gross=priced.gross,
                tier_discount=priced.tier_discount,
                coupon_id=priced.coupon_id,
                coupon_discount=priced.coupon_discount,
                points_used=priced.points_used,
                points_fen=priced.points_fen,
                balance_fen=priced.balance_fen,
                due=priced.due,
                payments=payments,
                lines=_lines_json(priced),
                request_hash=digest,
                return_seq=0,
            )
            statements = [insert_statement(**{name: getattr(purchase, name) for name in _PURCHASE_COLUMNS})]
            guards: dict[int, tuple[str, str]] = {}  # a guard's statement index -> the checkout.changed reason
            if priced.coupon_id is not None:  # guarded status='usable': lost to another order, all of this rolls back
                guards[len(statements)] = ("coupon", "the coupon was used or expired meanwhile")
                statements += redemption.redeem_statements(
                    coupon_id=priced.coupon_id,
                    member_id=member_id,
                    order_ref=Ref("purchase", prefix="purchase:"),
                    now=created,
                    guard=True,
                )
                # the card's coupon count: queued in this transaction, rolled back with it if the guard fails
                await coupons_changed([(merchant_id, member_id)])
            points_debit = None
            if priced.points_used:  # the lots were read under the account lock with the figures
                points_debit = await ledger.debit_statements(
                    _debit_entry(purchase, amount=priced.points_used, lots=lots_in_order(*found.rows[2:4])),
                    operator_staff_id=staff_id,
                )
            if points_debit is not None:
                guards[len(statements)] = ("points", "not enough points for this change")
                statements += points_debit
            reason = f"Purchase {order_no}"
            # the earning rides in this batch unless an ORM debit must come between (the ledger rows' order)
            orm_points = bool(priced.points_used) and points_debit is None
            write = None
            if not orm_points and not priced.balance_fen:
                write = await _earn(purchase, config, earn_reads, earn, reason=reason, purchase_id=None)
            batched = write is not None
            if write is not None:
                statements += write.statements
            finish = write is None or earn_batch.must_finish(write)
            try:
                done = await sqlpath.run(statements, commit=not finish, keep=("purchase",))
            except GuardFailed as exc:
                if exc.index not in guards:
                    raise LotChanged(f"a points lot changed while POS order {order_no} was taking from it") from None
                raise _changed(*guards[exc.index]) from None
            purchase.id = done.ids["purchase"]
            await _debit(
                purchase, points=priced.points_used if orm_points else 0, balance=priced.balance_fen, staff_id=staff_id
            )
            if not batched:
                write = await _earn(purchase, config, earn_reads, earn, reason=reason, purchase_id=purchase.id)
                if write is None:  # a ledger listener cannot batch the credit: the ORM's earning, same rows
                    await _finish(purchase, fresh=True)
                    return purchase
                done = await sqlpath.run(write.statements, commit=not earn_batch.must_finish(write))
            if write is not None and earn_batch.must_finish(write):
                await earn_batch.finish_earn(
                    config, write, done, merchant_id=merchant_id, member_id=member_id,
                    detail=f"growth {purchase.growth:+d}: {reason}",
                )  # fmt: skip
            return purchase

    try:
        return await ledger.retrying(work, what="pos order"), True
    except (IntegrityError, _Repeat):
        earlier = await _repeat(scope=scope, order_no=order_no, digest=digest)
        if earlier is None:
            raise
        return earlier, False
