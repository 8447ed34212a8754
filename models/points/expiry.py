"""What happens to lots after they are earned: reversal of a debit, expiry, and reminders before expiry."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q
from tortoise.functions import Sum
from tortoise.transactions import in_transaction

from models.kernel import clock
from models.kernel.errors import Conflict, Unprocessable
from models.kernel.outbox import enqueue
from models.ledger import books as ledger
from models.points.lots import PointsLot, PointsLotUse, PointsReminder, change_expiry
from models.points.rules import get_points_rules, local_day, local_midnight
from models.tenancy.merchants import Merchant

log = logging.getLogger("huiyuan.points")

NOTICE_TOPIC = "member.notice"
_EXPIRE_ATTEMPTS = 20


class LotChanged(Exception):
    """A lot changed between reading and expiring it (a concurrent spend): read it again."""


def _restorable(lot: PointsLot, now: datetime) -> bool:
    """A lot can take points back only while it has not expired: a refund never resurrects expired points."""
    return lot.status != "expired" and (lot.expires_at is None or lot.expires_at > now)


async def reverse_spend(
    *,
    merchant_id: int,
    member_id: int,
    debit_entry_id: int,
    idempotency_key: str,
    reason: str,
    operator_staff_id: int | None = None,
) -> ledger.LedgerResult:
    """Give a debit's points back to the lots it took them from, except lots expired by now; each point once."""
    debit = await ledger.PointsEntry.get_or_none(id=debit_entry_id, merchant_id=merchant_id, member_id=member_id)
    if debit is None:
        raise Unprocessable(
            "no such points debit for this member", code="points.debit_not_found", field="debit_entry_id"
        )
    if debit.delta >= 0 or debit.kind in ("expire", "reverse"):
        raise Unprocessable("only a spend can be reversed", code="points.not_reversible", field="debit_entry_id")

    async def work() -> ledger.LedgerResult:
        async with in_transaction():
            # lock order account -> uses -> lots, as every points change takes them
            await ledger.PointsAccount.filter(member_id=member_id).select_for_update().first()
            earlier = await ledger.PointsEntry.get_or_none(merchant_id=merchant_id, idempotency_key=idempotency_key)
            if earlier is not None:
                if earlier.member_id != member_id or earlier.kind != "reverse" or earlier.ref_id != str(debit.id):
                    raise Conflict(
                        "idempotency_key was already used for a different change",
                        code="idempotency.key_reused",
                        entry_id=earlier.id,
                    )
                return ledger.LedgerResult(entry=earlier, replayed=True)
            now = clock.now()
            uses = await PointsLotUse.filter(debit_entry_id=debit.id).order_by("id").select_for_update()
            lot_ids = [use.lot_id for use in uses]
            lots = {lot.id: lot for lot in await PointsLot.filter(id__in=lot_ids).select_for_update()}
            plan = [
                (use, use.amount - use.restored)
                for use in uses
                if use.amount > use.restored and _restorable(lots[use.lot_id], now)
            ]
            total = sum(give for _, give in plan)
            if total == 0:
                raise Conflict(
                    "nothing of this debit can be given back: it was reversed already or its lots have expired",
                    code="points.nothing_to_reverse",
                    field="debit_entry_id",
                )

            async def restore(entry: ledger._Entry) -> None:
                for use, give in plan:
                    await PointsLotUse.filter(id=use.id).update(restored=F("restored") + give)
                    await PointsLot.filter(id=use.lot_id).update(remaining=F("remaining") + give, status="open")
                await change_expiry(
                    merchant_id=merchant_id,
                    member_id=member_id,
                    changes=[(lots[use.lot_id].expires_at, give) for use, give in plan],
                )

            return await ledger.change_points(
                merchant_id=merchant_id,
                member_id=member_id,
                delta=total,
                kind="reverse",
                reason=reason,
                idempotency_key=idempotency_key,
                ref_type="points_debit",
                ref_id=str(debit.id),
                operator_staff_id=operator_staff_id,
                within=restore,
            )

    return await ledger.retrying(work, what="points reversal")


async def expire_member_lots(*, member_id: int, lot_ids: list[int], now: datetime) -> int:
    """Expire what is left of a member's due lots as one "expire" ledger row, exactly once; returns lots expired.

    Every change to a member's lots happens under the member's points account row lock, which the ledger's
    conditional UPDATE takes first: inside `within` the lots cannot move, so re-reading them there is the guard.
    """
    for _ in range(_EXPIRE_ATTEMPTS):
        lots = await PointsLot.filter(id__in=lot_ids, member_id=member_id, status="open", expires_at__lte=now).order_by(
            "id"
        )
        if not lots:
            return 0
        empty = [lot.id for lot in lots if lot.remaining == 0]
        if empty:
            await PointsLot.filter(id__in=empty, status="open", remaining=0).update(status="spent")
        due = [lot for lot in lots if lot.remaining > 0]
        if not due:
            return 0
        ids, total = [lot.id for lot in due], sum(lot.remaining for lot in due)

        async def mark_expired(entry: ledger._Entry, due: list[PointsLot] = due) -> None:
            by_remaining: dict[int, list[int]] = {}
            for lot in due:
                by_remaining.setdefault(lot.remaining, []).append(lot.id)
            for remaining, same in by_remaining.items():
                # each lot must still hold what was read: spent or expired since, the change rolls back and reruns
                changed = await PointsLot.filter(id__in=same, status="open", remaining=remaining).update(
                    expired=remaining, remaining=0, status="expired"
                )
                if changed != len(same):
                    raise LotChanged()
            await change_expiry(
                merchant_id=entry.merchant_id,
                member_id=member_id,
                changes=[(lot.expires_at, -lot.remaining) for lot in due],
            )

        try:
            result = await ledger.change_points(
                merchant_id=due[0].merchant_id,
                member_id=member_id,
                delta=-total,
                kind="expire",
                reason="Points expired" if len(ids) == 1 else f"Points expired ({len(ids)} lots)",
                # the same lots give the same key: a concurrent run over them replays instead of expiring twice
                idempotency_key=f"expire:{ids[0]}" if len(ids) == 1 else f"expire:{ids[0]}:{ids[-1]}:{len(ids)}",
                ref_type="points_lot",
                ref_id=",".join(map(str, ids))[:64],
                within=mark_expired,
            )
        except LotChanged:
            continue
        except Conflict as exc:
            if exc.code == "idempotency.key_reused":  # another run expired these lots after a spend changed them
                continue
            if exc.code == "points.insufficient":
                log.error(
                    "member %s: the account holds less than its due lots' %s points; not expired", member_id, total
                )
                return 0
            raise
        return 0 if result.replayed else len(ids)
    raise RuntimeError(f"points lots of member {member_id} kept changing while they were being expired")


async def expire_due_lots(*, now: datetime, batch: int = 2000) -> int:
    """Expire every open lot due by now, a batch at a time, one ledger row per member and batch.

    Paged by (expires_at, id) on the (status, expires_at, id) index, so each batch is an index range read and a
    run over a million due lots stays linear.
    """
    expired = 0
    after: tuple[datetime, int] | None = None
    while True:
        query = PointsLot.filter(status="open", expires_at__lte=now)
        if after is not None:
            query = query.filter(Q(expires_at__gt=after[0]) | Q(expires_at=after[0], id__gt=after[1]))
        rows = await query.order_by("expires_at", "id").limit(batch).values_list("id", "member_id", "expires_at")
        if not rows:
            return expired
        by_member: dict[int, list[int]] = {}
        for lot_id, member_id, _ in rows:
            by_member.setdefault(int(member_id), []).append(int(lot_id))  # type: ignore[call-overload]
        for member_id, lot_ids in by_member.items():
            expired += await expire_member_lots(member_id=member_id, lot_ids=sorted(lot_ids), now=now)
        last = rows[-1]
        after = (last[2], int(last[0]))  # type: ignore[arg-type, call-overload]
        log.info("points expiry: %d lots expired so far", expired)


async def send_expiry_reminders(*, now: datetime) -> int:
    """For each lead time, one outbox notice per member whose points expire on that merchant-local day."""
    sent = 0
    for merchant_id, timezone in await Merchant.all().order_by("id").values_list("id", "timezone"):
        zone = ZoneInfo(timezone)
        rules = await get_points_rules(merchant_id=merchant_id)
        today = local_day(now, zone)
        for days_before in rules.reminder_days:
            day = today + timedelta(days=days_before)
            # points usable through `day` expire at the midnight that ends it
            start, end = local_midnight(day, zone), local_midnight(day + timedelta(days=1), zone)
            rows = await (
                PointsLot.filter(merchant_id=merchant_id, status="open", expires_at__gt=start, expires_at__lte=end)
                .annotate(points=Sum("remaining"))
                .group_by("member_id")
                .values("member_id", "points")
            )
            for row in rows:
                if await _remind(
                    merchant_id=merchant_id,
                    member_id=row["member_id"],
                    expires_on=day,
                    days_before=days_before,
                    points=int(row["points"] or 0),
                ):
                    sent += 1
    return sent


async def _remind(*, merchant_id: int, member_id: int, expires_on: date, days_before: int, points: int) -> bool:
    if points <= 0:
        return False
    try:
        async with in_transaction():
            await PointsReminder.create(
                merchant_id=merchant_id,
                member_id=member_id,
                expires_on=expires_on,
                days_before=days_before,
                points=points,
            )
            await enqueue(
                merchant_id=merchant_id,
                topic=NOTICE_TOPIC,
                payload={
                    "member_id": member_id,
                    "kind": "points_expiring",
                    "points": points,
                    "expires_on": str(expires_on),
                },
            )
    except IntegrityError:
        return False  # this reminder was sent by an earlier or concurrent run
    return True
