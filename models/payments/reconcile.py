"""Reconciliation: unpaid orders asked of WeChat and settled or closed; the daily statement of orders vs ledger."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tortoise.expressions import Q

from models.kernel import clock
from models.ledger.books import BalanceEntry
from models.payments.orders import PayOrder, record_anomaly
from models.payments.settle import PAID_STATUSES, settle_paid
from models.tenancy.merchants import Merchant
from wechat import payapi
from wechat.errors import WeChatPayError
from wechat.payapi import Trade

log = logging.getLogger("huiyuan.payments")

QUERY_AFTER = timedelta(minutes=5)  # the notify usually lands within seconds; after this we ask
QUERY_RETRY_PAUSE = timedelta(minutes=1)  # after a failed query, doubled each time it fails again
RECONCILE_MAX_PAUSE = timedelta(hours=1)
RECONCILE_ANOMALY_AFTER = 5  # failed queries in a row before staff are shown a reconcile_failing anomaly
PAID_AT_WECHAT = frozenset({"SUCCESS", "REFUND"})
CLOSABLE = frozenset({"NOTPAY", "PAYERROR", "REVOKED", "CLOSED", "MISSING"})
MISSING = Trade("MISSING")  # WeChat does not know the order (the prepay never reached it)


async def query_trade(*, client: Any, order: PayOrder) -> Trade:
    """Where WeChat says the order stands; MISSING when WeChat does not know it."""
    trade = await payapi.query_order(client, appid=order.appid, out_trade_no=order.out_trade_no)
    return MISSING if trade is None else trade


async def _settle_from(order: PayOrder, trade: Trade) -> str:
    return await settle_paid(
        merchant_id=order.merchant_id,
        out_trade_no=order.out_trade_no,
        amount=trade.amount,
        transaction_id=trade.transaction_id,
        appid=trade.appid,
        mch_id=order.mch_id,
        source="query",
    )


async def reconcile_order(*, gateway: Any, order: PayOrder, now: datetime) -> str:
    """Ask WeChat about one CREATED order: settle it when paid, close it when expired unpaid, else leave it."""
    client = await gateway.pay_client(order.mch_id, version=order.api_version)
    trade = await query_trade(client=client, order=order)
    if trade.state in PAID_AT_WECHAT:
        return await _settle_from(order, trade)
    if now < order.expires_at or trade.state not in CLOSABLE:
        return "open"  # USERPAYING and friends: the member is still at it
    if trade.state not in ("CLOSED", "MISSING"):
        try:
            await payapi.close_order(client, appid=order.appid, out_trade_no=order.out_trade_no)
        except WeChatPayError as exc:
            if exc.code != "ORDERPAID":
                raise
            # paid between our query and the close: never close a paid order
            trade = await query_trade(client=client, order=order)
            return await _settle_from(order, trade) if trade.state in PAID_AT_WECHAT else "open"
    closed = await PayOrder.filter(id=order.id, status="CREATED").update(status="CLOSED", closed_at=now)
    return "closed" if closed else "raced"


async def reconcile_open_orders(*, gateway: Any, batch: int = 100) -> Counter[str]:
    """CREATED orders older than QUERY_AFTER and not backing off: each settled, closed or left open; by outcome."""
    now = clock.now()
    outcomes: Counter[str] = Counter()
    last_id = 0
    due = Q(next_reconcile_at__isnull=True) | Q(next_reconcile_at__lte=now)
    while True:
        orders = (
            await PayOrder.filter(due, status="CREATED", created_at__lte=now - QUERY_AFTER, id__gt=last_id)
            .order_by("id")
            .limit(batch)
        )
        if not orders:
            return outcomes
        last_id = orders[-1].id
        for order in orders:
            try:
                outcomes[await reconcile_order(gateway=gateway, order=order, now=now)] += 1
            except Exception as exc:  # noqa: BLE001 - one order's failure (WeChat away) must not stop the others
                await _query_failed(order=order, exc=exc, now=now)
                outcomes["failed"] += 1
                continue
            if order.reconcile_failures:
                await PayOrder.filter(id=order.id).update(reconcile_failures=0, next_reconcile_at=None)


async def _query_failed(*, order: PayOrder, exc: Exception, now: datetime) -> None:
    """One log line with the reason, a growing pause before the next query, and an anomaly once it keeps failing."""
    failures = order.reconcile_failures + 1
    pause = min(RECONCILE_MAX_PAUSE, QUERY_RETRY_PAUSE * 2 ** (failures - 1))
    await PayOrder.filter(id=order.id, reconcile_failures=order.reconcile_failures).update(
        reconcile_failures=failures, next_reconcile_at=now + pause
    )
    reason = f"{type(exc).__name__}: {exc}"
    log.warning("pay order %s not reconciled (failure %d, next in %s): %s", order.id, failures, pause, reason)
    if failures == RECONCILE_ANOMALY_AFTER:
        await record_anomaly(
            merchant_id=order.merchant_id,
            kind="reconcile_failing",
            dedupe_key=f"reconcile_failing:{order.id}",
            out_trade_no=order.out_trade_no,
            detail={"failures": failures, "last_error": reason[:500]},
        )


def _local_day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)  # the database compares UTC
    return start, start + timedelta(days=1)


async def statement_for_day(*, merchant_id: int, day: date) -> tuple[int, int]:
    """Recharge orders paid on a merchant-local day vs their ledger rows; each mismatch becomes an anomaly.

    Returns (orders checked, mismatches found).
    """
    merchant = await Merchant.get(id=merchant_id)
    start, end = _local_day_bounds(day, ZoneInfo(merchant.timezone))
    orders = await PayOrder.filter(
        merchant_id=merchant_id, kind="recharge", status__in=PAID_STATUSES, paid_at__gte=start, paid_at__lt=end
    )
    rows = await BalanceEntry.filter(
        merchant_id=merchant_id, kind="recharge", ref_type="pay_order", created_at__gte=start, created_at__lt=end
    ).values("id", "ref_id", "delta", "member_id")
    credited: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        credited.setdefault(row["ref_id"], []).append(row)
    mismatches = 0
    for order in orders:
        entries = credited.pop(str(order.id), None)
        if entries is None:  # credited on another day (a row right after midnight) is still a credit
            entries = await BalanceEntry.filter(
                merchant_id=merchant_id, kind="recharge", ref_type="pay_order", ref_id=str(order.id)
            ).values("id", "ref_id", "delta", "member_id")
        problem = _order_problem(order, entries)
        if problem:
            mismatches += 1
            await _statement_anomaly(order.merchant_id, f"order:{order.id}", order.out_trade_no, problem, day)
    for ref_id, entries in credited.items():
        other = await PayOrder.get_or_none(id=int(ref_id)) if ref_id.isdigit() else None
        if other is not None and other.status in PAID_STATUSES and other.merchant_id == merchant_id:
            continue  # paid on another day, checked with that day
        mismatches += 1
        problem = {"problem": "ledger credit without a paid order", "entry_ids": [e["id"] for e in entries]}
        await _statement_anomaly(
            merchant_id, f"entry:{entries[0]['id']}", other.out_trade_no if other else "", problem, day
        )
    return len(orders), mismatches


def _order_problem(order: PayOrder, entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not entries:
        return {"problem": "paid order without a recharge credit", "amount": order.amount}
    total = sum(int(e["delta"]) for e in entries)
    if len(entries) != 1 or total != order.amount or entries[0]["member_id"] != order.member_id:
        return {"problem": "recharge credit differs from the order", "amount": order.amount, "credited": total}
    return None


async def _statement_anomaly(merchant_id: int, key: str, out_trade_no: str, problem: dict, day: date) -> None:
    await record_anomaly(
        merchant_id=merchant_id,
        kind="statement_mismatch",
        dedupe_key=f"statement_mismatch:{key}",
        out_trade_no=out_trade_no,
        detail={**problem, "day": day.isoformat()},
    )


async def daily_statement() -> tuple[int, int, int]:
    """Yesterday's statement (merchant-local) for every merchant with orders: (merchants, orders, mismatches)."""
    merchant_ids = await PayOrder.all().distinct().values_list("merchant_id", flat=True)
    merchants = await Merchant.filter(id__in=list(merchant_ids)).order_by("id")
    checked = mismatches = 0
    for merchant in merchants:
        yesterday = clock.now().astimezone(ZoneInfo(merchant.timezone)).date() - timedelta(days=1)
        orders, found = await statement_for_day(merchant_id=merchant.id, day=yesterday)
        checked, mismatches = checked + orders, mismatches + found
    return len(merchants), checked, mismatches
