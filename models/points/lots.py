"""Points lots: every credit is a lot with an expiry, every debit records the lots it used."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from tortoise import connections, fields
from tortoise.expressions import F, Q, Subquery
from tortoise.functions import Min, Sum
from tortoise.models import Model

from models.kernel import clock, sqlpath
from models.kernel.errors import Unprocessable
from models.kernel.sqlpath import Ref, Stmt
from models.ledger import books as ledger
from models.points.rules import cash_quote, expiry_for, get_points_rules, last_valid_day
from models.tenancy.merchants import merchant_zone

log = logging.getLogger("huiyuan.points")


class PointsLot(Model):
    """Points credited by one ledger row, spent oldest-expiry first and expired by what remains."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    entry_id = fields.BigIntField(unique=True)  # the points_ledger row that credited it
    amount = fields.BigIntField()
    remaining = fields.BigIntField()
    expired = fields.BigIntField(default=0)  # what the expiry job took: amount = remaining + net uses + expired
    expires_at = fields.DatetimeField(null=True)  # UTC, from the merchant-local policy; null never expires
    status = fields.CharField(max_length=8, default="open")  # open | spent | expired
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "points_lot"
        # remaining in the member index: spending order and the expiring-soon SUM read the index alone
        indexes = (("member_id", "status", "expires_at", "id", "remaining"), ("status", "expires_at", "id"))


class PointsExpiry(Model):
    """A member's open points per expiry instant, kept with every lot change: "expiring soon" reads instants, not lots.

    points = SUM(remaining) of the member's open lots whose expires_at is exactly this instant; never-expiring lots
    are not counted and a row that reaches 0 is deleted, so a member holds one row per instant their open points
    expire at (the policy's expiries are merchant-local midnights: at most one a day), whatever their history.
    """

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    expires_at = fields.DatetimeField()  # UTC, the lots' own expires_at
    points = fields.BigIntField(default=0)

    class Meta:
        table = "points_expiry"
        unique_together = (("member_id", "expires_at"),)


class PointsLotUse(Model):
    """How much of a lot one debit consumed (and how much a reversal has given back)."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    debit_entry_id = fields.BigIntField(db_index=True)
    lot_id = fields.BigIntField(db_index=True)
    amount = fields.BigIntField()
    restored = fields.BigIntField(default=0)

    class Meta:
        table = "points_lot_use"


class PointsReminder(Model):
    """One expiry reminder per member, expiry day and lead time, so a rerun never sends it twice."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    expires_on = fields.DateField()  # merchant-local day the points expire
    days_before = fields.IntField()
    points = fields.BigIntField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "points_reminder"
        unique_together = (("member_id", "expires_on", "days_before"),)


# (idempotency key, expiry) of the earn_points call in progress: only its own lot takes the explicit expiry
_expiry_override: ContextVar[tuple[str, datetime] | None] = ContextVar("points_expiry_override", default=None)
_SELF_MANAGED = ("expire", "reverse")  # their lots are changed by this module's own `within` callbacks

# points += delta on a member's row for one expiry instant, created at delta (in the caller's transaction)
_ADD_TO_EXPIRY = {
    "mysql": "INSERT INTO points_expiry (member_id, expires_at, merchant_id, points) VALUES (%s, %s, %s, %s)"
    " ON DUPLICATE KEY UPDATE points = points + VALUES(points)",
    "sqlite": "INSERT INTO points_expiry (member_id, expires_at, merchant_id, points) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (member_id, expires_at) DO UPDATE SET points = points + excluded.points",
}
# rows a debit emptied go, so the expiring-soon read never walks instants that hold nothing
_DROP_EMPTY = "DELETE FROM points_expiry WHERE member_id = %s AND points = 0 AND expires_at IN ({marks})"


def expiry_statements(*, merchant_id: int, member_id: int, changes: Iterable[tuple[Any, int]]) -> list[Stmt]:
    """The points_expiry upserts for lots' changes (expires_at, delta): one per distinct instant, never-expiring
    lots skipped, then one DELETE of the rows a negative change may have emptied."""
    by_instant: dict[datetime, int] = {}
    for at, delta in changes:
        moment = clock.as_utc(at)
        if moment is not None and delta:
            key = sqlpath.db_time(moment)
            by_instant[key] = by_instant.get(key, 0) + delta
    upsert = _ADD_TO_EXPIRY[sqlpath.dialect()]
    statements = [Stmt(upsert, (member_id, at, merchant_id, delta)) for at, delta in by_instant.items() if delta]
    emptied = [at for at, delta in by_instant.items() if delta < 0]
    if emptied:
        marks = ", ".join([sqlpath.PLACEHOLDER] * len(emptied))
        statements.append(Stmt(_DROP_EMPTY.format(marks=marks), (member_id, *emptied)))
    return statements


async def change_expiry(*, merchant_id: int, member_id: int, changes: Iterable[tuple[Any, int]]) -> None:
    """Apply lots' changes (expires_at, delta) to points_expiry in the caller's transaction (the ORM path)."""
    statements = expiry_statements(merchant_id=merchant_id, member_id=member_id, changes=changes)
    if not statements:
        return
    client = connections.get("default")
    mysql = client.capabilities.dialect == "mysql"
    for stmt in statements:
        await client.execute_query(stmt.sql if mysql else stmt.sql.replace(sqlpath.PLACEHOLDER, "?"), stmt.params)


async def _new_lot(entry: ledger._Entry) -> None:
    override = _expiry_override.get()
    expires_at = override[1] if override is not None and override[0] == entry.idempotency_key else None
    if expires_at is None:
        rules = await get_points_rules(merchant_id=entry.merchant_id)
        zone = await merchant_zone(merchant_id=entry.merchant_id)
        expires_at = expiry_for(rules.expiry, earned_at=clock.now(), zone=zone)
    await PointsLot.create(
        merchant_id=entry.merchant_id,
        member_id=entry.member_id,
        entry_id=entry.id,
        amount=entry.delta,
        remaining=entry.delta,
        expires_at=expires_at,
    )
    await change_expiry(merchant_id=entry.merchant_id, member_id=entry.member_id, changes=[(expires_at, entry.delta)])


SPEND_BATCH = 32  # open lots read per query while a debit is being covered


class LotChanged(RuntimeError):
    """A lot no longer held what was read: the member's lots changed outside their account lock (rolls back)."""


_Lot = tuple[int, int, Any]  # (lot id, remaining, expires_at) as read


def _takes(lots: Iterable[_Lot], left: int) -> list[tuple[int, int, int, Any]]:
    """(lot id, remaining, take, expires_at) of each lot a debit of `left` takes from, in the lots' order."""
    takes = []
    for lot_id, remaining, expires_at in lots:
        if left == 0:
            break
        take = min(remaining, left)
        if take > 0:
            takes.append((lot_id, remaining, take, expires_at))
            left -= take
    return takes


async def _take(
    entry: ledger._Entry, lots: list[_Lot], left: int, taken: list[tuple[Any, int]]
) -> tuple[int, list[PointsLotUse]]:
    """Take up to `left` from the lots in order, each by a conditional UPDATE; returns (left, uses).

    Appends (expires_at, -take) of each lot taken from to `taken`, for the caller's points_expiry change."""
    uses: list[PointsLotUse] = []
    for lot_id, remaining, take, expires_at in _takes(lots, left):
        # remaining was read under the member's account lock: the guard only fails if something bypassed it
        if take == remaining:
            changed = await PointsLot.filter(id=lot_id, status="open", remaining=take).update(
                remaining=0, status="spent"
            )
        else:
            guard = PointsLot.filter(id=lot_id, status="open", remaining__gt=take)
            changed = await guard.update(remaining=F("remaining") - take)
        if changed != 1:
            raise LotChanged(f"points lot {lot_id} changed while debit {entry.id} was taking {take} from it")
        left -= take
        taken.append((expires_at, -take))
        uses.append(PointsLotUse(merchant_id=entry.merchant_id, debit_entry_id=entry.id, lot_id=lot_id, amount=take))
    return left, uses


async def _open_lots(member_id: int, *, expiring: bool, after: tuple[datetime | None, int] | None) -> list[Any]:
    """One batch of open lots in spending order, after the cursor, on the (member, status, expires_at, id) index."""
    query = PointsLot.filter(member_id=member_id, status="open", expires_at__isnull=not expiring)
    if after is not None:
        at, lot_id = after
        if expiring:
            query = query.filter(Q(expires_at__gt=at) | Q(expires_at=at, id__gt=lot_id))
        else:
            query = query.filter(id__gt=lot_id)
    order = ("expires_at", "id") if expiring else ("id",)
    return await query.order_by(*order).limit(SPEND_BATCH).values_list("id", "remaining", "expires_at")


async def consume_lots(entry: ledger._Entry, amount: int, *, first_lot_id: int | None = None) -> None:
    """Take `amount` from the member's open lots for this debit (a given lot first), recording each use.

    Lots are read in spending order (earliest expiry first, never-expiring last, then oldest) a batch at a time
    until the debit is covered, so the cost follows the lots used, not the member's history. The caller holds the
    member's points account row (the ledger's guarded UPDATE), which serialises every change to their lots.
    Balance held before lots existed became legacy lots in migration 0009; should the lots still fall short, the
    rest of the balance becomes one non-expiring legacy lot linked to this debit, as before that migration.
    """
    left, uses = amount, []
    changes: list[tuple[Any, int]] = []  # (expires_at, -take) per lot used: points_expiry at the end, per instant
    if first_lot_id is not None:
        first = await PointsLot.filter(id=first_lot_id, member_id=entry.member_id, status="open").values_list(
            "id", "remaining", "expires_at"
        )
        left, taken = await _take(entry, [(int(i), int(r), e) for i, r, e in first], left, changes)  # type: ignore[misc]
        uses += taken
    for expiring in (True, False):
        after: tuple[datetime | None, int] | None = None
        while left:
            rows = await _open_lots(entry.member_id, expiring=expiring, after=after)
            batch = [(int(i), int(r), e) for i, r, e in rows if i != first_lot_id]
            left, taken = await _take(entry, batch, left, changes)
            uses += taken
            if len(rows) < SPEND_BATCH:
                break
            after = (rows[-1][2], int(rows[-1][0]))
    if left:
        # every open lot is now empty: what the balance held beyond them predates lots
        legacy = await PointsLot.create(
            merchant_id=entry.merchant_id,
            member_id=entry.member_id,
            entry_id=entry.id,
            amount=entry.balance_after + left,
            remaining=entry.balance_after,
            expires_at=None,
            status="open" if entry.balance_after else "spent",
        )
        log.warning("member %s: %s points had no lot; legacy lot %s", entry.member_id, legacy.amount, legacy.id)
        uses.append(PointsLotUse(merchant_id=entry.merchant_id, debit_entry_id=entry.id, lot_id=legacy.id, amount=left))
    if uses:
        await PointsLotUse.bulk_create(uses)
    await change_expiry(merchant_id=entry.merchant_id, member_id=entry.member_id, changes=changes)


async def on_ledger_entry(book: str, entry: ledger._Entry) -> None:
    """Every points credit becomes a lot and every debit consumes lots, whoever writes the ledger row."""
    if book != "points" or entry.kind in _SELF_MANAGED:
        return
    if entry.delta > 0:
        await _new_lot(entry)
    else:
        await consume_lots(entry, -entry.delta)


def open_lots_statements(*, member_id: int) -> list[Stmt]:
    """The reads a batched debit takes its lots from (sent under the member's account lock): a batch of expiring
    lots, earliest first, then one of never-expiring lots, oldest first, as consume_lots reads them."""
    columns = "SELECT id, remaining, expires_at FROM points_lot WHERE member_id = %s AND status = 'open'"
    return [
        Stmt(
            f"{columns} AND expires_at IS NOT NULL ORDER BY expires_at, id LIMIT {SPEND_BATCH}", (member_id,), rows=True
        ),  # noqa: S608
        Stmt(f"{columns} AND expires_at IS NULL ORDER BY id LIMIT {SPEND_BATCH}", (member_id,), rows=True),  # noqa: S608
    ]


def lots_in_order(expiring: list[tuple[Any, ...]], never: list[tuple[Any, ...]]) -> tuple[tuple[int, int, Any], ...]:
    """The open_lots_statements rows as one spending order (ledger.NewEntry.lots)."""
    return tuple((int(i), int(r), e) for i, r, e in (*expiring, *never))


def _consume_statements(entry: ledger.NewEntry, lots: tuple[tuple[int, int, Any], ...]) -> list[Stmt] | None:
    """consume_lots for a batched debit, from lots read under the account lock; None when they do not cover it
    (the ORM path then reads further or makes the legacy lot). Each lot's UPDATE is a sqlpath guard: it fails
    (LotChanged on the ORM path) only if something changed the lots outside the account lock."""
    left, statements, uses, changes = -entry.delta, [], [], []
    for lot_id, remaining, take, expires_at in _takes(lots, left):
        if take == remaining:
            emptied = "SET remaining = 0, status = 'spent' WHERE id = %s AND status = 'open' AND remaining = %s"
            statements.append(Stmt("UPDATE points_lot " + emptied, (lot_id, take), guard=True))
        else:
            part = "SET remaining = remaining - %s WHERE id = %s AND status = 'open' AND remaining > %s"
            statements.append(Stmt("UPDATE points_lot " + part, (take, lot_id, take), guard=True))
        left -= take
        changes.append((expires_at, -take))
        uses.append((lot_id, take))
    if left or not uses:
        return None
    marks = ", ".join(["(%s, %s, %s, %s, 0)"] * len(uses))
    params = [value for lot_id, take in uses for value in (entry.merchant_id, Ref("entry"), lot_id, take)]
    statements.append(
        Stmt(
            f"INSERT INTO points_lot_use (merchant_id, debit_entry_id, lot_id, amount, restored) VALUES {marks}",  # noqa: S608
            tuple(params),
        )
    )
    return statements + expiry_statements(merchant_id=entry.merchant_id, member_id=entry.member_id, changes=changes)


async def entry_statements(book: str, entry: ledger.NewEntry) -> list[Stmt] | None:
    """on_ledger_entry for a batched write: a credit's new lot as one INSERT, a debit's lots taken from the lots
    it carries (None without them, or when they fall short: the ORM path)."""
    if book != "points" or entry.kind in _SELF_MANAGED:
        return []
    if entry.delta < 0:
        return None if entry.lots is None else _consume_statements(entry, entry.lots)
    rules = await get_points_rules(merchant_id=entry.merchant_id)
    zone = await merchant_zone(merchant_id=entry.merchant_id)
    expires_at = expiry_for(rules.expiry, earned_at=clock.now(), zone=zone)
    counted = expiry_statements(
        merchant_id=entry.merchant_id, member_id=entry.member_id, changes=[(expires_at, entry.delta)]
    )
    return [
        Stmt(
            "INSERT INTO points_lot (merchant_id, member_id, entry_id, amount, remaining, expired, expires_at, status,"
            " created_at) VALUES (%s, %s, %s, %s, %s, 0, %s, 'open', %s)",
            (
                entry.merchant_id,
                entry.member_id,
                Ref("entry"),
                entry.delta,
                entry.delta,
                sqlpath.db_time(expires_at) if expires_at is not None else None,
                sqlpath.db_time(entry.at),
            ),
        ),
        *counted,
    ]


async def earn_points(
    *,
    merchant_id: int,
    member_id: int,
    points: int,
    reason: str,
    idempotency_key: str,
    kind: str = "earn",
    ref_type: str = "",
    ref_id: str = "",
    operator_staff_id: int | None = None,
    expires_at: datetime | None = None,
    savepoint: bool = True,  # False inside a caller's transaction that a failure rolls back whole (books.py)
) -> ledger.LedgerResult:
    """Credit points as a new lot expiring by the merchant's policy (or at expires_at); a repeated key is a replay."""
    _positive(points)
    if kind in _SELF_MANAGED:
        raise Unprocessable(f"kind {kind} cannot earn", code="points.kind_invalid", field="kind")
    token = _expiry_override.set((idempotency_key, expires_at) if expires_at is not None else None)
    try:
        return await ledger.change_points(
            merchant_id=merchant_id,
            member_id=member_id,
            delta=points,
            kind=kind,
            reason=reason,
            idempotency_key=idempotency_key,
            ref_type=ref_type,
            ref_id=ref_id,
            operator_staff_id=operator_staff_id,
            savepoint=savepoint,
        )
    finally:
        _expiry_override.reset(token)


async def spend_points(
    *,
    merchant_id: int,
    member_id: int,
    points: int,
    reason: str,
    idempotency_key: str,
    kind: str = "spend",
    ref_type: str = "",
    ref_id: str = "",
    operator_staff_id: int | None = None,
) -> ledger.LedgerResult:
    """Debit points from the lots expiring first; never below zero (409 points.insufficient); a repeat is a replay."""
    _positive(points)
    if kind in _SELF_MANAGED:
        raise Unprocessable(f"kind {kind} cannot spend", code="points.kind_invalid", field="kind")
    return await ledger.change_points(
        merchant_id=merchant_id,
        member_id=member_id,
        delta=-points,
        kind=kind,
        reason=reason,
        idempotency_key=idempotency_key,
        ref_type=ref_type,
        ref_id=ref_id,
        operator_staff_id=operator_staff_id,
    )


def _positive(points: int) -> None:
    if isinstance(points, bool) or not isinstance(points, int) or not 0 < points <= ledger.MAX_DELTA:
        raise Unprocessable("points must be a positive whole number", code="points.amount_invalid", field="points")


@dataclass(frozen=True)
class PointsSummary:
    balance: int
    expiring_points: int  # open points that expire within EXPIRING_SOON_DAYS
    expires_on: date | None  # the last merchant-local day the earliest of them can be used
    entries: list[ledger.PointsEntry]
    next_before_id: int | None


EXPIRING_SOON_DAYS = 30


async def points_summary(
    *, merchant_id: int, member_id: int, before_id: int | None = None, limit: int = 50
) -> PointsSummary:
    """Why a member has their points: the balance, what expires within 30 days, and the ledger with reasons."""
    # one aggregate on the (member, status, expires_at) index, the balance folded in as a subquery
    row = await (
        PointsLot.filter(
            member_id=member_id, status="open", expires_at__lte=clock.now() + timedelta(days=EXPIRING_SOON_DAYS)
        )
        .annotate(
            soon=Sum("remaining"),
            first=Min("expires_at"),
            held=Subquery(ledger.PointsAccount.filter(member_id=member_id).values("balance")),
        )
        .values("soon", "first", "held")
    )
    balance = int(row[0]["held"] or 0) if row else 0
    expiring = int(row[0]["soon"] or 0) if row else 0
    first = clock.as_utc(row[0]["first"]) if row else None
    expires_on = None
    if first is not None:
        zone = await merchant_zone(merchant_id=merchant_id)
        expires_on = last_valid_day(first, zone)
    entries = await ledger.list_entries(
        book="points", merchant_id=merchant_id, member_id=member_id, before_id=before_id, limit=limit
    )
    return PointsSummary(
        balance=balance,
        expiring_points=expiring,
        expires_on=expires_on,
        entries=entries,  # type: ignore[arg-type]
        next_before_id=entries[-1].id if len(entries) == limit else None,
    )


async def quote_points_cash(*, merchant_id: int, member_id: int, order_amount: int) -> tuple[int, int]:
    """(points, fen) a member may pay an order with: whole units of the rate, within balance and per-order cap."""
    if isinstance(order_amount, bool) or not isinstance(order_amount, int) or order_amount <= 0:
        raise Unprocessable(
            "order_amount must be a positive number of fen", code="points.amount_invalid", field="order_amount"
        )
    balance = await ledger.get_balance(book="points", member_id=member_id)
    rules = await get_points_rules(merchant_id=merchant_id)
    return cash_quote(rules, balance=balance, order_amount=order_amount)


async def find_expiry_mismatches(*, batch: int = 1000) -> AsyncIterator[ledger.Mismatch | int]:
    """Recompute every member's points_expiry rows from their open lots (SUM(remaining) per expires_at). Yields
    mismatches (book "points_expiry:<instant>", kept = the row's points, ledger_sum = the lots' sum) and, per batch,
    the count of members checked."""
    last_id = 0
    while True:
        rows = await (
            ledger.PointsAccount.filter(id__gt=last_id).order_by("id").limit(batch).values_list("id", "member_id")
        )
        if not rows:
            break
        last_id = rows[-1][0]
        members = [int(member_id) for _, member_id in rows]
        held: dict[tuple[int, datetime], int] = {}
        for member_id, at, total in await (
            PointsLot.filter(member_id__in=members, status="open", expires_at__isnull=False)
            .group_by("member_id", "expires_at")
            .annotate(total=Sum("remaining"))
            .values_list("member_id", "expires_at", "total")
        ):
            moment = clock.as_utc(at)
            assert moment is not None
            held[(int(member_id), moment)] = int(total or 0)  # type: ignore[call-overload]
        kept: dict[tuple[int, datetime], int] = {}
        for member_id, at, points in await PointsExpiry.filter(member_id__in=members).values_list(
            "member_id", "expires_at", "points"
        ):
            moment = clock.as_utc(at)
            assert moment is not None
            kept[(int(member_id), moment)] = int(points)  # type: ignore[call-overload]
        for member_id, at in sorted(set(held) | set(kept)):
            if held.get((member_id, at), 0) != kept.get((member_id, at), 0):
                yield ledger.Mismatch(
                    f"points_expiry:{at.astimezone(UTC).isoformat()}",
                    member_id,
                    kept.get((member_id, at), 0),
                    held.get((member_id, at), 0),
                )
        yield len(members)
