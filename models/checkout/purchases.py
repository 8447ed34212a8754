"""Consumption records: what a member bought, and the points and growth value it earned."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.functions import Sum
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.checkout import earn_batch
from models.kernel import clock, sqlpath
from models.kernel.errors import Conflict, NotFound, Unprocessable
from models.kernel.sqlpath import Stmt
from models.ledger import books as ledger
from models.points.lots import PointsLot, consume_lots, earn_points
from models.points.rules import get_points_rules, local_day, local_midnight, purchase_points
from models.tenancy.merchants import Store, merchant_zone
from models.tenancy.visibility import Scope
from models.tiers import earning
from models.tiers import standing as tier_rules
from models.tiers.growth import growth_for_amount

MAX_AMOUNT = 10**12  # fen


class Purchase(Model):
    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    store_id = fields.IntField(null=True)
    order_no = fields.CharField(max_length=64)  # the caller's order number, unique per merchant
    amount = fields.BigIntField()  # fen actually paid
    items: list[dict[str, Any]] = fields.JSONField(default=list)  # sku, category, amount, quantity
    points = fields.BigIntField(default=0)
    growth = fields.BigIntField(default=0)
    status = fields.CharField(max_length=12, default="settled")  # settled | reversed
    occurred_at = fields.DatetimeField()
    created_at = fields.DatetimeField(auto_now_add=True)
    # a POS order (models/checkout/orders.py); NULL for a purchase recorded through the purchases endpoint
    source = fields.CharField(max_length=8, null=True)  # pos | import (models/checkout/imports.py)
    staff_id = fields.IntField(null=True)
    api_key_id = fields.IntField(null=True)  # the store's POS key that called, when no staff login did
    gross = fields.BigIntField(null=True)  # fen before any discount
    tier_discount = fields.BigIntField(null=True)
    coupon_id = fields.BigIntField(null=True)
    coupon_discount = fields.BigIntField(null=True)
    points_used = fields.BigIntField(null=True)
    points_fen = fields.BigIntField(null=True)
    balance_fen = fields.BigIntField(null=True)
    due = fields.BigIntField(null=True)  # paid by other means (the payments)
    payments: list[dict[str, Any]] | None = fields.JSONField(null=True)
    lines: list[dict[str, Any]] | None = fields.JSONField(null=True)  # every line with its allocations, returned
    request_hash = fields.CharField(max_length=64, null=True)  # the settling request: a reused key is refused
    return_seq = fields.IntField(null=True)  # bumped by each return, a guard on the lines' returned counters
    reversed_at = fields.DatetimeField(null=True)  # set by reverse_purchase: the roll-up job reads by it

    class Meta:
        table = "purchase"
        unique_together = (("merchant_id", "order_no"),)
        # the second covers the RFM cuts' per-member aggregate of a merchant's window (models/portrait/rfm.py)
        # the third covers a segment's per-member purchase window (models/segments/rules_sql.py); the last two
        # serve the roll-up job's scans by time (models/analytics/rollup.py)
        indexes = (
            ("member_id", "occurred_at"),
            ("merchant_id", "status", "occurred_at", "member_id", "amount"),
            ("member_id", "status", "occurred_at", "amount"),
            ("merchant_id", "created_at"),
            ("merchant_id", "reversed_at"),
        )


async def multiplier_permille(*, merchant_id: int, member_id: int) -> int:
    """The member's points multiplier in per-mille (1000 = x1): the tier's, or a paid plan's when larger."""
    return int(await tier_rules.points_multiplier_permille(merchant_id=merchant_id, member_id=member_id))


def _check_input(*, order_no: str, amount: int, items: list[dict[str, Any]]) -> None:
    if not order_no or len(order_no) > 64:
        raise Unprocessable("order_no must be 1-64 characters", code="purchase.order_no_invalid", field="order_no")
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= MAX_AMOUNT:
        raise Unprocessable("amount must be a positive number of fen", code="purchase.amount_invalid", field="amount")
    for index, item in enumerate(items):
        line_amount, quantity = item.get("amount", 0), item.get("quantity", 1)
        if not isinstance(line_amount, int) or line_amount < 0 or not isinstance(quantity, int) or quantity < 1:
            raise Unprocessable(
                "item amount must be >= 0 fen and quantity >= 1", code="purchase.item_invalid", field=f"items.{index}"
            )


async def _earned_today(*, merchant_id: int, member_id: int, occurred_at: datetime, zone: ZoneInfo) -> int:
    day = local_day(occurred_at, zone)
    start, end = local_midnight(day, zone), local_midnight(day + timedelta(days=1), zone)
    rows = await (
        Purchase.filter(
            merchant_id=merchant_id, member_id=member_id, status="settled", occurred_at__gte=start, occurred_at__lt=end
        )
        .annotate(total=Sum("points"))
        .values("total")
    )
    return int(rows[0]["total"] or 0) if rows else 0


async def _finish(purchase: Purchase, *, fresh: bool = False) -> None:
    """Earn what a settled purchase earns; each step is keyed by the purchase, so a retry completes a crash.

    fresh: the purchase row was inserted in this transaction, so no row can carry its keys yet: no savepoints
    (a used key would raise and roll the whole purchase back, never half-write it).
    """
    if purchase.status != "settled":
        return
    reason = f"Purchase {purchase.order_no}"
    if purchase.points > 0:
        await earn_points(
            merchant_id=purchase.merchant_id,
            member_id=purchase.member_id,
            points=purchase.points,
            reason=reason,
            idempotency_key=f"purchase:{purchase.id}",
            ref_type="purchase",
            ref_id=str(purchase.id),
            savepoint=not fresh,
        )
    if purchase.growth > 0:
        await earning.add_growth(
            merchant_id=purchase.merchant_id,
            member_id=purchase.member_id,
            delta=purchase.growth,
            kind="spend",
            reason=reason,
            idempotency_key=f"purchase:{purchase.id}",
            ref_type="purchase",
            ref_id=str(purchase.id),
            occurred_at=purchase.occurred_at,
            savepoint=not fresh,
        )


async def _existing(*, merchant_id: int, member_id: int, order_no: str, amount: int) -> Purchase | None:
    purchase = await Purchase.get_or_none(merchant_id=merchant_id, order_no=order_no)
    if purchase is None:
        return None
    if purchase.member_id != member_id or purchase.amount != amount:
        raise Conflict("order_no was already recorded for another purchase", code="purchase.order_no_taken")
    await ledger.retrying(lambda: _finish(purchase), what="purchase")
    return purchase


class _Repeat(Exception):
    """The order number is already recorded: leave the batched write and answer from the earlier purchase."""


class _NotBatchable(Exception):
    """A listener cannot batch this purchase's ledger row: write it through the ORM path instead."""


def member_visible_sql(*, scope: Scope | None, member_id: int, merchant_id: int) -> tuple[str, tuple[Any, ...]]:
    """A SELECT of 1 when the member is the merchant's and visible in the scope (a store's staff: its members)."""
    visible = "SELECT 1 FROM member WHERE id = %s AND merchant_id = %s"
    params: tuple[Any, ...] = (member_id, merchant_id)
    if scope is not None and scope.limited:
        visible, params = visible + " AND origin_store_id = %s", (*params, scope.store_id)
    return visible, params


_JSON_COLUMNS = ("items", "payments", "lines")


def insert_statement(**columns: Any) -> Stmt:
    """A purchase row's INSERT for a sqlpath batch, its id captured as "purchase" (JSON and times as the ORM's).

    Column names are quoted (`lines` is a MySQL keyword); SQLite reads backquotes the same way."""
    values = []
    for name, value in columns.items():
        if name in _JSON_COLUMNS and value is not None:
            value = Purchase._meta.fields_map[name].to_db_value(value, Purchase)
        elif isinstance(value, datetime):
            value = sqlpath.db_time(value)
        values.append(value)
    names, marks = ", ".join(f"`{name}`" for name in columns), ", ".join(["%s"] * len(columns))
    return Stmt(
        f"INSERT INTO purchase ({names}) VALUES ({marks})",  # noqa: S608
        tuple(values),
        capture="purchase",
    )


async def _record_batched(
    *,
    merchant_id: int,
    member_id: int,
    order_no: str,
    amount: int,
    items: list[dict[str, Any]],
    store_id: int | None,
    when: datetime,
    scope: Scope | None,
    source: str | None = None,
) -> Purchase:
    """A fresh purchase as one deliberate SQL path: BEGIN, one round trip of locks and reads, one of writes + COMMIT.

    The same rows and guards as the ORM path: the (merchant_id, order_no) key makes the order exactly-once, the
    ledger and growth keys theirs; what the rules need is read under the member's account and tier row locks.
    A member whose tier may go up gets upgrade_in_transaction (the ORM) before the COMMIT.
    """
    config = await earn_batch.earn_config(merchant_id=merchant_id)  # configuration: cached per process
    growth_amount = amount // config.policy.fen_per_growth
    visible, visible_params = member_visible_sql(scope=scope, member_id=member_id, merchant_id=merchant_id)
    columns = [f"({visible})", "(SELECT id FROM purchase WHERE merchant_id = %s AND order_no = %s)"]
    params: list[Any] = [*visible_params, merchant_id, order_no]
    columns.append("(SELECT 1 FROM store WHERE id = %s AND merchant_id = %s)")
    params += [store_id, merchant_id]
    earn_reads = earn_batch.earn_reads(
        config, merchant_id=merchant_id, member_id=member_id, when=when, probe=growth_amount > 0
    )
    reads = Stmt("SELECT " + ", ".join(columns + earn_reads.columns), (*params, *earn_reads.params), rows=True)
    lock = earn_batch.lock_statement(merchant_id=merchant_id, member_id=member_id)

    async with sqlpath.transaction():  # BEGIN rides with the first round trip
        locked, found = (await sqlpath.run([lock, reads])).rows
        is_visible, earlier, store_ok = found[0][:3]
        if not is_visible:
            raise NotFound("member not found", code="member.not_found")
        if earlier is not None:
            raise _Repeat
        if store_id is not None and not store_ok:
            raise Unprocessable("no such store", code="purchase.store_invalid", field="store_id")
        if not locked:
            raise Conflict("member has no points account", code="points.no_account")
        _, tier_row_id, tier_id = locked[0]
        figures = earn_batch.earn_figures(config, list(found[0][3:]), tier_row_id=tier_row_id, tier_id=tier_id)
        points = purchase_points(
            config.rules, amount=amount, items=items, store_id=store_id, multiplier_permille=figures.multiplier_permille
        )
        points = earn_batch.capped(config, figures, points)
        now = clock.now()
        row: dict[str, Any] = dict(
            merchant_id=merchant_id,
            member_id=member_id,
            store_id=store_id,
            order_no=order_no,
            amount=amount,
            items=items,
            points=points,
            growth=growth_amount,
            status="settled",
            occurred_at=when,
            created_at=now,
            source=source,
        )
        statements = [insert_statement(**row)]
        reason = f"Purchase {order_no}"
        earn = await earn_batch.earn_statements(
            config,
            earn_reads,
            figures,
            merchant_id=merchant_id,
            member_id=member_id,
            points=points,
            growth=growth_amount,
            reason=reason,
            when=when,
            now=now,
        )
        if earn is None:
            raise _NotBatchable
        finish = earn_batch.must_finish(earn)
        done = await sqlpath.run(statements + earn.statements, commit=not finish, keep=("purchase",))
        if finish:
            await earn_batch.finish_earn(
                config,
                earn,
                done,
                merchant_id=merchant_id,
                member_id=member_id,
                detail=f"growth {growth_amount:+d}: {reason}",
            )
    return Purchase(id=done.ids["purchase"], **row)


async def _record_orm(
    *,
    merchant_id: int,
    member_id: int,
    order_no: str,
    amount: int,
    items: list[dict[str, Any]],
    store_id: int | None,
    when: datetime,
    source: str | None = None,
) -> Purchase:
    """The same purchase through the ORM (a ledger listener that cannot batch): several round trips, same rows."""
    async with in_transaction():
        await ledger.PointsAccount.filter(member_id=member_id, merchant_id=merchant_id).select_for_update().first()
        rules = await get_points_rules(merchant_id=merchant_id)
        points = purchase_points(
            rules,
            amount=amount,
            items=items,
            store_id=store_id,
            multiplier_permille=await multiplier_permille(merchant_id=merchant_id, member_id=member_id),
        )
        if rules.daily_cap is not None and points > 0:
            zone = await merchant_zone(merchant_id=merchant_id)
            used = await _earned_today(merchant_id=merchant_id, member_id=member_id, occurred_at=when, zone=zone)
            points = max(0, min(points, rules.daily_cap - used))
        growth_amount = int(await growth_for_amount(merchant_id=merchant_id, amount=amount))
        purchase = await Purchase.create(
            merchant_id=merchant_id,
            member_id=member_id,
            store_id=store_id,
            order_no=order_no,
            amount=amount,
            items=items,
            points=points,
            growth=growth_amount,
            occurred_at=when,
            source=source,
        )
        await _finish(purchase, fresh=True)
        return purchase


async def record_purchase_once(
    *,
    merchant_id: int,
    member_id: int,
    order_no: str,
    amount: int,
    items: list[dict[str, Any]],
    store_id: int | None = None,
    occurred_at: datetime | None = None,
    scope: Scope | None = None,
    source: str | None = None,
) -> tuple[Purchase, bool]:
    """record_purchase, also telling whether this call created the record (False: a repeat of the order).

    scope: the staff principal's; the member must be visible in it (404 member.not_found), checked in the
    purchase's own reads. source: None (the purchases endpoint) or 'import' (an external POS's order file).
    """
    _check_input(order_no=order_no, amount=amount, items=items)
    when = occurred_at or clock.now()
    args: dict[str, Any] = dict(
        merchant_id=merchant_id,
        member_id=member_id,
        order_no=order_no,
        amount=amount,
        items=items,
        store_id=store_id,
        when=when,
        source=source,
    )

    async def work() -> Purchase:
        try:
            return await _record_batched(**args, scope=scope)
        except _NotBatchable:
            if store_id is not None and not await Store.exists(id=store_id, merchant_id=merchant_id):
                raise Unprocessable("no such store", code="purchase.store_invalid", field="store_id") from None
            return await _record_orm(**args)

    try:
        return await ledger.retrying(work, what="purchase"), True
    except (IntegrityError, _Repeat):
        earlier = await _existing(merchant_id=merchant_id, member_id=member_id, order_no=order_no, amount=amount)
        if earlier is None:
            raise
        return earlier, False


async def record_purchase(
    *,
    merchant_id: int,
    member_id: int,
    order_no: str,
    amount: int,
    items: list[dict[str, Any]],
    store_id: int | None = None,
    occurred_at: datetime | None = None,
) -> Purchase:
    """Record a consumption once per order number, earning its points (rules, tier, cap) and growth value."""
    purchase, _ = await record_purchase_once(
        merchant_id=merchant_id,
        member_id=member_id,
        order_no=order_no,
        amount=amount,
        items=items,
        store_id=store_id,
        occurred_at=occurred_at,
    )
    return purchase


async def reverse_purchase(
    *, merchant_id: int, member_id: int, order_no: str, operator_staff_id: int | None = None
) -> Purchase:
    """Take back a purchase's points (never below zero, never what already expired) and growth; once."""

    async def work() -> Purchase:
        async with in_transaction():
            account = await ledger.PointsAccount.filter(member_id=member_id).select_for_update().first()
            purchase = await (
                Purchase.filter(merchant_id=merchant_id, member_id=member_id, order_no=order_no)
                .select_for_update()
                .first()
            )
            if purchase is None:
                raise NotFound("no such purchase for this member", code="purchase.not_found")
            if purchase.status == "reversed":
                return purchase
            if purchase.source == "pos":  # its units are returned line by line (models/checkout/returns.py)
                raise Conflict(
                    "a POS order is returned through POST /api/pos/orders/<id>/returns", code="purchase.pos_order"
                )
            reason = f"Refund of order {order_no}"
            key = f"purchase-reverse:{purchase.id}"
            earned = await ledger.PointsEntry.get_or_none(
                merchant_id=merchant_id, idempotency_key=f"purchase:{purchase.id}"
            )
            if earned is not None and account is not None:
                lot = await PointsLot.get_or_none(entry_id=earned.id)
                expired = await ledger.PointsEntry.get_or_none(
                    merchant_id=merchant_id, idempotency_key=f"expire:{lot.id}" if lot else ""
                )
                take = min(earned.delta + (expired.delta if expired else 0), account.balance)
                if take > 0:
                    first_lot = lot.id if lot else None

                    async def consume(entry: ledger._Entry) -> None:
                        await consume_lots(entry, take, first_lot_id=first_lot)

                    await ledger.change_points(
                        merchant_id=merchant_id,
                        member_id=member_id,
                        delta=-take,
                        kind="reverse",
                        reason=reason,
                        idempotency_key=key,
                        ref_type="purchase",
                        ref_id=str(purchase.id),
                        operator_staff_id=operator_staff_id,
                        within=consume,
                    )
            if purchase.growth > 0:
                await earning.add_growth(
                    merchant_id=merchant_id,
                    member_id=member_id,
                    delta=-purchase.growth,
                    kind="reverse",
                    reason=reason,
                    idempotency_key=key,
                    ref_type="purchase",
                    ref_id=str(purchase.id),
                    occurred_at=clock.now(),
                )
            await Purchase.filter(id=purchase.id).update(status="reversed", reversed_at=clock.now())
            purchase.status = "reversed"
            return purchase

    return await ledger.retrying(work, what="purchase reversal")
