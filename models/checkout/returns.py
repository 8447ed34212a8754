"""Returns of POS orders: reverse exactly what the returned units did, proportionally, once per key.

A line's figures are returned by cumulative floor: after k of q units are back, c * k // q of each of the line's
figures c is back, so the last unit returns the remainder and a whole return is exact. The order row's
return_seq is the guard (a conditional UPDATE): two concurrent returns of one order cannot both count the same
units; the loser is rolled back and retried by ledger.retrying or answers 409.
"""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.checkout.pricing import allocate
from models.checkout.purchases import Purchase
from models.coupons import redemption
from models.kernel import clock
from models.kernel.errors import Conflict, NotFound, Unprocessable
from models.ledger import books as ledger
from models.points.expiry import _restorable
from models.points.lots import PointsLot, PointsLotUse, change_expiry, consume_lots
from models.tenancy.visibility import Scope
from models.tiers import earning

# figures of a line that go back with its units (keys of the order's lines JSON)
FIGURES = (
    "gross",
    "tier_discount",
    "coupon_discount",
    "points",
    "points_fen",
    "balance_fen",
    "due",
    "earned",
    "growth",
)


class PurchaseReturn(Model):
    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    purchase_id = fields.BigIntField()
    member_id = fields.IntField()
    idempotency_key = fields.CharField(max_length=128)
    request_hash = fields.CharField(max_length=64)
    gross = fields.BigIntField(default=0)
    points_back = fields.BigIntField(default=0)  # points given back to the member (expired lots excepted)
    points_lost = fields.BigIntField(default=0)  # points of lots expired since: not resurrected
    balance_back = fields.BigIntField(default=0)  # stored value back to its lots
    earned_back = fields.BigIntField(default=0)  # earned points taken back
    growth_back = fields.BigIntField(default=0)
    refund_due = fields.BigIntField(default=0)  # money to hand back by other means
    whole = fields.BooleanField(default=False)  # this return completed the whole order
    coupon_back = fields.BooleanField(default=False)  # ... and gave the order's coupon back to the member
    staff_id = fields.IntField(null=True)
    api_key_id = fields.IntField(null=True)  # the store's POS key that called, when no staff login did
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "purchase_return"
        unique_together = (("purchase_id", "idempotency_key"),)
        indexes = (("merchant_id", "created_at"),)  # the roll-up job's scan by time


class PurchaseReturnLine(Model):
    id = fields.BigIntField(primary_key=True)
    return_id = fields.BigIntField(db_index=True)
    purchase_id = fields.BigIntField(db_index=True)
    line_index = fields.IntField()
    sku = fields.CharField(max_length=64)
    quantity = fields.IntField()
    gross = fields.BigIntField(default=0)
    tier_discount = fields.BigIntField(default=0)
    coupon_discount = fields.BigIntField(default=0)
    points = fields.BigIntField(default=0)
    points_fen = fields.BigIntField(default=0)
    balance_fen = fields.BigIntField(default=0)
    due = fields.BigIntField(default=0)

    class Meta:
        table = "purchase_return_line"


def _share(total: int, quantity: int, before: int, after: int) -> int:
    return total * after // quantity - total * before // quantity


def _plan(lines: list[dict[str, Any]], items: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(line index, units) to return: a sku's units go to its lines in order; 422 beyond what is left."""
    wanted: dict[str, int] = {}
    for index, item in enumerate(items):
        sku, quantity = item.get("sku"), item.get("quantity")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
            raise Unprocessable(
                "quantity must be a positive whole number",
                code="checkout.return_invalid",
                field=f"items.{index}.quantity",
            )
        if not any(ln["sku"] == sku for ln in lines):
            raise Unprocessable("the order has no such sku", code="checkout.return_invalid", field=f"items.{index}.sku")
        wanted[str(sku)] = wanted.get(str(sku), 0) + quantity
    plan: list[tuple[int, int]] = []
    for sku, quantity in wanted.items():
        for line in lines:
            if line["sku"] != sku or quantity == 0:
                continue
            take = min(quantity, line["quantity"] - line["returned"])
            if take > 0:
                plan.append((line["index"], take))
                quantity -= take
        if quantity:
            raise Unprocessable(
                f"{quantity} more of {sku} than bought and not yet returned",
                code="checkout.return_exceeds",
                field="items",
                sku=sku,
            )
    return plan


async def _give_points_back(
    *, purchase: Purchase, already: int, amount: int, key: str, reason: str, staff_id: int | None
) -> int:
    """Points the order spent, back to the lots they came from unless those expired; returns what came back.

    The debit's uses, in id order, are one sequence of points: earlier returns covered its first `already`
    points, this one the next `amount`; the part of a use on a lot expired by now is lost, never resurrected."""
    debit = await ledger.PointsEntry.get_or_none(
        merchant_id=purchase.merchant_id, idempotency_key=f"pos-points:{purchase.id}"
    )
    if debit is None or amount <= 0:
        return 0
    now = clock.now()
    uses = await PointsLotUse.filter(debit_entry_id=debit.id).order_by("id").select_for_update()
    lots = {lot.id: lot for lot in await PointsLot.filter(id__in=[u.lot_id for u in uses]).select_for_update()}
    plan: list[tuple[PointsLotUse, int]] = []
    start, end, at = already, already + amount, 0
    for use in uses:
        give = min(end, at + use.amount) - max(start, at)
        at += use.amount
        if give > 0 and _restorable(lots[use.lot_id], now):
            plan.append((use, give))
    total = sum(give for _, give in plan)
    if total == 0:
        return 0

    async def restore(entry: ledger._Entry) -> None:
        for use, give in plan:
            await PointsLotUse.filter(id=use.id).update(restored=F("restored") + give)
            await PointsLot.filter(id=use.lot_id).update(remaining=F("remaining") + give, status="open")
        await change_expiry(
            merchant_id=purchase.merchant_id,
            member_id=purchase.member_id,
            changes=[(lots[use.lot_id].expires_at, give) for use, give in plan],
        )

    await ledger.change_points(
        merchant_id=purchase.merchant_id,
        member_id=purchase.member_id,
        delta=total,
        kind="reverse",
        reason=reason,
        idempotency_key=key,
        ref_type="points_debit",
        ref_id=str(debit.id),
        operator_staff_id=staff_id,
        within=restore,
        savepoint=False,
    )
    return total


async def _take_earned_back(*, purchase: Purchase, amount: int, key: str, reason: str, staff_id: int | None) -> int:
    """Earned points taken back as reverse_purchase does: never below zero, the order's own lot first."""
    if amount <= 0:
        return 0
    earned = await ledger.PointsEntry.get_or_none(
        merchant_id=purchase.merchant_id, idempotency_key=f"purchase:{purchase.id}"
    )
    held = await ledger.get_balance(book="points", member_id=purchase.member_id)
    take = min(amount, held)
    if take <= 0:
        return 0
    lot = await PointsLot.get_or_none(entry_id=earned.id) if earned is not None else None
    first = lot.id if lot is not None else None

    async def consume(entry: ledger._Entry) -> None:
        await consume_lots(entry, take, first_lot_id=first)

    await ledger.change_points(
        merchant_id=purchase.merchant_id,
        member_id=purchase.member_id,
        delta=-take,
        kind="reverse",
        reason=reason,
        idempotency_key=key,
        ref_type="purchase",
        ref_id=str(purchase.id),
        operator_staff_id=staff_id,
        within=consume,
        savepoint=False,
    )
    return take


def _with_earnings(purchase: Purchase) -> list[dict[str, Any]]:
    """The order's lines with the earned points and growth allocated to them (by what each line earned on)."""
    lines = [dict(line) for line in purchase.lines or []]
    basis = [ln["gross"] - ln["tier_discount"] - ln["coupon_discount"] - ln["points_fen"] for ln in lines]
    for ln, earned, growth in zip(
        lines, allocate(int(purchase.points), basis), allocate(int(purchase.growth), basis), strict=True
    ):
        ln.setdefault("earned", earned)
        ln.setdefault("growth", growth)
    return lines


async def return_items(
    *,
    scope: Scope,
    order_id: int,
    items: list[dict[str, Any]],
    idempotency_key: str,
    request_hash: str,
    staff_id: int | None = None,
    api_key_id: int | None = None,
) -> tuple[PurchaseReturn, list[PurchaseReturnLine], bool]:
    """Return units of an order once per key: (the return, its lines, True when this call made it)."""
    if not idempotency_key or len(idempotency_key) > 100:
        raise Unprocessable(
            "idempotency_key must be 1-100 characters", code="idempotency.key_invalid", field="idempotency_key"
        )
    if not items:
        raise Unprocessable("nothing to return", code="checkout.return_invalid", field="items")

    async def earlier() -> tuple[PurchaseReturn, list[PurchaseReturnLine], bool] | None:
        found = await PurchaseReturn.get_or_none(purchase_id=order_id, idempotency_key=idempotency_key)
        if found is None:
            return None
        if found.request_hash != request_hash or found.merchant_id != scope.merchant_id:
            raise Conflict(
                "idempotency_key was already used for a different return",
                code="checkout.key_reused",
                return_id=found.id,
            )
        return found, await PurchaseReturnLine.filter(return_id=found.id).order_by("id"), False

    async def work() -> tuple[PurchaseReturn, list[PurchaseReturnLine], bool]:
        async with in_transaction():
            purchase = await Purchase.get_or_none(id=order_id, merchant_id=scope.merchant_id, source="pos")
            if purchase is None or not scope.sees_store(purchase.store_id):
                raise NotFound("no such order", code="checkout.order_not_found")
            # lock order: points account first, as every points change takes it
            await ledger.PointsAccount.filter(member_id=purchase.member_id).select_for_update().first()
            purchase = await Purchase.filter(id=order_id).select_for_update().first()
            assert purchase is not None
            repeat = await earlier()
            if repeat is not None:
                return repeat
            lines = _with_earnings(purchase)
            plan = _plan(lines, items)
            seq = int(purchase.return_seq or 0)
            earlier_rows = await PurchaseReturn.filter(purchase_id=purchase.id).values_list(
                "points_back", "points_lost"
            )
            already = sum(int(b) + int(lost) for b, lost in earlier_rows)  # type: ignore[misc]
            ret = await PurchaseReturn.create(
                merchant_id=purchase.merchant_id,
                purchase_id=purchase.id,
                member_id=purchase.member_id,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                staff_id=staff_id,
                api_key_id=api_key_id,
            )
            back = dict.fromkeys(FIGURES, 0)
            rows: list[PurchaseReturnLine] = []
            for index, units in plan:
                line = lines[index]
                before, after = line["returned"], line["returned"] + units
                shares = {name: _share(int(line.get(name, 0)), line["quantity"], before, after) for name in FIGURES}
                for name, value in shares.items():
                    back[name] += value
                line["returned"] = after
                rows.append(
                    PurchaseReturnLine(
                        return_id=ret.id,
                        purchase_id=purchase.id,
                        line_index=index,
                        sku=line["sku"],
                        quantity=units,
                        **{k: shares[k] for k in ("gross", "tier_discount", "coupon_discount", "points")},
                        points_fen=shares["points_fen"],
                        balance_fen=shares["balance_fen"],
                        due=shares["due"],
                    )
                )
            whole = all(ln["returned"] == ln["quantity"] for ln in lines)
            stored = [{k: v for k, v in ln.items() if k not in ("earned", "growth")} for ln in lines]
            guarded = Purchase.filter(id=purchase.id, return_seq=seq) if purchase.return_seq is not None else None
            changes: dict[str, Any] = {"return_seq": seq + 1, "lines": stored}
            if whole:
                changes["status"] = "returned"  # out of the daily cap's sum, as a reversed purchase
            if guarded is None or await guarded.update(**changes) != 1:
                raise Conflict("the order changed while returning", code="checkout.changed", reason="returns")
            await PurchaseReturnLine.bulk_create(rows)
            reason = f"Return {ret.id} of POS order {purchase.id}"
            points_back = await _give_points_back(
                purchase=purchase,
                already=already,
                amount=back["points"],
                key=f"pos-return:{ret.id}:points",
                reason=reason,
                staff_id=staff_id,
            )
            if back["balance_fen"] > 0:
                debit = await ledger.BalanceEntry.get(
                    merchant_id=purchase.merchant_id, idempotency_key=f"pos-balance:{purchase.id}"
                )
                await ledger.change_balance(
                    merchant_id=purchase.merchant_id,
                    member_id=purchase.member_id,
                    delta=back["balance_fen"],
                    kind="reverse",
                    reason=reason,
                    idempotency_key=f"pos-return:{ret.id}:balance",
                    ref_type="balance_entry",  # back to the lots the debit took (balance_lots._restore)
                    ref_id=str(debit.id),
                    operator_staff_id=staff_id,
                    savepoint=False,
                )
            earned_back = await _take_earned_back(
                purchase=purchase,
                amount=back["earned"],
                key=f"pos-return:{ret.id}:earned",
                reason=reason,
                staff_id=staff_id,
            )
            if back["growth"] > 0:
                await earning.add_growth(
                    merchant_id=purchase.merchant_id,
                    member_id=purchase.member_id,
                    delta=-back["growth"],
                    kind="reverse",
                    reason=reason,
                    idempotency_key=f"pos-return:{ret.id}",
                    ref_type="purchase",
                    ref_id=str(purchase.id),
                    occurred_at=clock.now(),
                    savepoint=False,
                )
            coupon_back = False
            if whole and purchase.coupon_id is not None:  # back to the member if still valid and returnable
                coupon_back = await redemption.restore(
                    coupon_id=purchase.coupon_id, order_ref=f"purchase:{purchase.id}"
                )
            ret.gross = back["gross"]
            ret.points_back = points_back
            ret.points_lost = back["points"] - points_back
            ret.balance_back = back["balance_fen"]
            ret.earned_back = earned_back
            ret.growth_back = back["growth"]
            ret.refund_due = back["due"]
            ret.whole = whole
            ret.coupon_back = coupon_back
            await ret.save(
                update_fields=[
                    "gross",
                    "points_back",
                    "points_lost",
                    "balance_back",
                    "earned_back",
                    "growth_back",
                    "refund_due",
                    "whole",
                    "coupon_back",
                ]
            )
            return ret, rows, True

    repeat = await earlier()
    if repeat is not None:
        return repeat
    try:
        return await ledger.retrying(work, what="pos return")
    except IntegrityError:
        repeat = await earlier()
        if repeat is None:
            raise
        return repeat
