"""Stored-value lots: every balance credit keeps its principal and bonus apart, for refunds and reports."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from tortoise import fields
from tortoise.expressions import F
from tortoise.functions import Sum
from tortoise.models import Model

from models.kernel import sqlpath
from models.kernel.sqlpath import Ref, Stmt
from models.ledger import books as ledger


class BalanceLot(Model):
    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    entry_id = fields.BigIntField(null=True, unique=True)  # the balance_ledger row that credited it (null: legacy)
    source = fields.CharField(max_length=8, default="recharge")  # recharge | import | gift | adjust | reverse | legacy
    order_id = fields.BigIntField(null=True, db_index=True)  # the pay order it came from, if any
    principal = fields.BigIntField(default=0)  # fen paid by the member (refundable)
    bonus = fields.BigIntField(default=0)  # fen given by the merchant (forfeited on refund)
    principal_remaining = fields.BigIntField(default=0)
    bonus_remaining = fields.BigIntField(default=0)
    status = fields.CharField(max_length=8, default="open")  # open | spent | refunded
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "balance_lot"
        indexes = (("member_id", "status", "id"),)


class BalanceLotUse(Model):
    """What one ledger row took from one lot (a restoring row writes negative amounts, marked restored)."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    debit_entry_id = fields.BigIntField(db_index=True)
    lot_id = fields.BigIntField(db_index=True)
    principal = fields.BigIntField(default=0)
    bonus = fields.BigIntField(default=0)
    restored = fields.BooleanField(default=False)

    class Meta:
        table = "balance_lot_use"


PRINCIPAL_KINDS = ("recharge", "import")  # money the member paid; every other credit is bonus
OWN_LOTS_KINDS = ("refund", "forfeit")  # written with a `within` that picks the order's lots itself
LOT_BATCH = 50  # open lots a debit reads per statement, oldest first, until it is covered
Part = Literal["principal", "bonus"]

log = logging.getLogger("huiyuan.ledger")


class LotsDoNotCover(Exception):
    """The lots named for a refund or forfeit hold less than its amount (rolls the change back)."""


class LotChanged(Exception):
    """A lot no longer held what was read under the account lock (rolls the change back; never expected)."""


@dataclass(frozen=True)
class Split:
    principal: int
    bonus: int


async def _open_lots(
    *, member_id: int, order_id: int | None = None, after_id: int = 0, limit: int | None = None
) -> list[BalanceLot]:
    """Open lots, oldest first, after_id onwards, row-locked (the account row is already locked: account -> lots)."""
    query = BalanceLot.filter(member_id=member_id, status="open")
    if order_id is not None:
        query = query.filter(order_id=order_id)
    if after_id:
        query = query.filter(id__gt=after_id)
    query = query.order_by("id")
    if limit is not None:
        query = query.limit(limit)
    return list(await query.select_for_update())


def _share(lot: BalanceLot, take: int, part: Part | None) -> Split:
    """What `take` fen from a lot is made of: one part only, or pro rata with the bonus share rounded down."""
    if part == "principal":
        return Split(take, 0)
    if part == "bonus":
        return Split(0, take)
    bonus = take * lot.bonus_remaining // (lot.principal_remaining + lot.bonus_remaining)
    return Split(take - bonus, bonus)


async def _use_lot(lot: BalanceLot, split: Split, emptied: str) -> None:
    """Take split from a lot with a conditional UPDATE on the values read; the row count is the guard."""
    principal, bonus = lot.principal_remaining - split.principal, lot.bonus_remaining - split.bonus
    status = emptied if principal == 0 and bonus == 0 else "open"
    changed = await BalanceLot.filter(
        id=lot.id, status="open", principal_remaining=lot.principal_remaining, bonus_remaining=lot.bonus_remaining
    ).update(principal_remaining=principal, bonus_remaining=bonus, status=status)
    if changed != 1:
        raise LotChanged(f"balance lot {lot.id} changed under the account lock")
    lot.principal_remaining, lot.bonus_remaining, lot.status = principal, bonus, status


def _available(lot: BalanceLot, part: Part | None) -> int:
    if part == "principal":
        return lot.principal_remaining
    if part == "bonus":
        return lot.bonus_remaining
    return lot.principal_remaining + lot.bonus_remaining


async def _take(
    entry: ledger._Entry, lots: Iterable[BalanceLot], amount: int, part: Part | None, uses: list[BalanceLotUse]
) -> int:
    """Consume up to amount fen from the lots in order, adding one use per lot to uses; returns what is still owed."""
    for lot in lots:
        if amount == 0:
            break
        take = min(amount, _available(lot, part))
        if take <= 0:
            continue
        split = _share(lot, take, part)
        await _use_lot(lot, split, "refunded" if part is not None else "spent")
        uses.append(
            BalanceLotUse(
                merchant_id=entry.merchant_id,
                debit_entry_id=entry.id,
                lot_id=lot.id,
                principal=split.principal,
                bonus=split.bonus,
            )
        )
        amount -= take
    return amount


async def _cover_from_legacy(entry: ledger._Entry, held: int, amount: int, uses: list[BalanceLotUse]) -> int:
    """Safety net for data written around the legacy migration: a balance no lot holds becomes a principal lot."""
    untracked = entry.balance_after - entry.delta - held
    if untracked < amount:
        return amount
    legacy = await BalanceLot.create(
        merchant_id=entry.merchant_id,
        member_id=entry.member_id,
        entry_id=None,
        source="legacy",
        principal=untracked,
        principal_remaining=untracked - amount,
        status="open" if untracked > amount else "spent",
    )
    log.warning("member %s: %s fen of balance had no lot; legacy lot %s", entry.member_id, untracked, legacy.id)
    uses.append(
        BalanceLotUse(merchant_id=entry.merchant_id, debit_entry_id=entry.id, lot_id=legacy.id, principal=amount)
    )
    return 0


async def _take_oldest(entry: ledger._Entry, amount: int) -> int:
    """Take amount fen from the member's oldest open lots, LOT_BATCH at a time; returns what is still owed."""
    uses: list[BalanceLotUse] = []
    after_id, held = 0, 0
    while amount > 0:
        lots = await _open_lots(member_id=entry.member_id, after_id=after_id, limit=LOT_BATCH)
        held += sum(lot.principal_remaining + lot.bonus_remaining for lot in lots)
        amount = await _take(entry, lots, amount, None, uses)
        if len(lots) < LOT_BATCH:  # every open lot was read: held is all they hold
            if amount > 0:
                amount = await _cover_from_legacy(entry, held, amount, uses)
            break
        after_id = lots[-1].id
    if uses:
        await BalanceLotUse.bulk_create(uses)
    return amount


async def _credit(entry: ledger._Entry, source: str, *, principal: int, bonus: int) -> None:
    order_id = int(entry.ref_id) if entry.ref_type == "pay_order" and entry.ref_id.isdigit() else None
    await BalanceLot.create(
        merchant_id=entry.merchant_id,
        member_id=entry.member_id,
        entry_id=entry.id,
        source=source[:8],
        order_id=order_id,
        principal=principal,
        bonus=bonus,
        principal_remaining=principal,
        bonus_remaining=bonus,
    )


async def _restore(entry: ledger._Entry, debit_entry_id: int, amount: int) -> int:
    """Give back what a debit took, to the same lots (newest use first); returns what could not be restored."""
    uses = await BalanceLotUse.filter(debit_entry_id=debit_entry_id, restored=False).order_by("-id")
    restoring: list[BalanceLotUse] = []
    for use in uses:
        if amount == 0:
            break
        total = use.principal + use.bonus
        take = min(amount, total)
        bonus = take * use.bonus // total if total else 0
        back = Split(take - bonus, bonus)
        if take < total:  # split the use: the restored part becomes its own row
            kept = Split(use.principal - back.principal, use.bonus - back.bonus)
            await BalanceLotUse.filter(id=use.id).update(principal=kept.principal, bonus=kept.bonus)
            restoring.append(
                BalanceLotUse(
                    merchant_id=use.merchant_id,
                    debit_entry_id=debit_entry_id,
                    lot_id=use.lot_id,
                    principal=back.principal,
                    bonus=back.bonus,
                    restored=True,
                )
            )
        else:
            await BalanceLotUse.filter(id=use.id).update(restored=True)
        changed = await BalanceLot.filter(id=use.lot_id).update(
            principal_remaining=F("principal_remaining") + back.principal,
            bonus_remaining=F("bonus_remaining") + back.bonus,
            status="open",
        )
        if changed != 1:
            raise LotChanged(f"balance lot {use.lot_id} of a restored use is missing")
        restoring.append(
            BalanceLotUse(
                merchant_id=entry.merchant_id,
                debit_entry_id=entry.id,
                lot_id=use.lot_id,
                principal=-back.principal,
                bonus=-back.bonus,
                restored=True,
            )
        )
        amount -= take
    if restoring:
        await BalanceLotUse.bulk_create(restoring)
    return amount


async def _reversed_debit(entry: ledger._Entry) -> int | None:
    """The id of the member's debit a "reverse" row names (ref_type "balance_entry"), if it is one."""
    if entry.ref_type != "balance_entry" or not entry.ref_id.isdigit():
        return None
    debit = await ledger.BalanceEntry.get_or_none(id=int(entry.ref_id), member_id=entry.member_id, delta__lt=0)
    return debit.id if debit is not None else None


async def entry_statements(book: str, entry: ledger.NewEntry) -> list[Stmt] | None:
    """on_ledger_entry for a batched credit: its own lot as one INSERT (debits and reversals: None, the ORM path)."""
    if book != "balance":
        return []
    if entry.delta < 0 or entry.kind == "reverse" or isinstance(entry.ref_id, Ref):
        return None
    principal = entry.delta if entry.kind in PRINCIPAL_KINDS else 0
    order_id = int(entry.ref_id) if entry.ref_type == "pay_order" and entry.ref_id.isdigit() else None
    return [
        Stmt(
            "INSERT INTO balance_lot (merchant_id, member_id, entry_id, source, order_id, principal, bonus,"
            " principal_remaining, bonus_remaining, status, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " 'open', %s)",
            (
                entry.merchant_id,
                entry.member_id,
                Ref("entry"),
                entry.kind[:8],
                order_id,
                principal,
                entry.delta - principal,
                principal,
                entry.delta - principal,
                sqlpath.db_time(entry.at),
            ),
        )
    ]


async def on_ledger_entry(book: str, entry: ledger._Entry) -> None:
    """Every balance row moves lots: credits add a lot (or restore a reversed debit), debits use lots oldest first.

    A credit writes its own lot only: it never reads or locks the member's other lots (legacy balances were made
    lots by migration 0009), so it costs the same whatever the member's history.
    """
    if book != "balance":
        return
    if entry.delta > 0:
        rest = entry.delta
        debit_id = await _reversed_debit(entry) if entry.kind == "reverse" else None
        if debit_id is not None:
            rest = await _restore(entry, debit_id, rest)
        if rest > 0:
            principal = rest if entry.kind in PRINCIPAL_KINDS or entry.kind == "reverse" else 0
            await _credit(entry, entry.kind, principal=principal, bonus=rest - principal)
        return
    if entry.kind in OWN_LOTS_KINDS:
        taken = await BalanceLotUse.filter(debit_entry_id=entry.id).values_list("principal", "bonus")
        if taken and sum(int(p) + int(b) for p, b in taken) == -entry.delta:
            return  # its `within` already took the order's lots
    if await _take_oldest(entry, -entry.delta):
        raise LotsDoNotCover(f"balance lots of member {entry.member_id} do not cover entry {entry.id}")


async def take_order_lots(*, entry: ledger._Entry, order_id: int, part: Part) -> None:
    """Inside a refund/forfeit change: take exactly -entry.delta from one part of the order's lots."""
    lots = await _open_lots(member_id=entry.member_id, order_id=order_id)
    uses: list[BalanceLotUse] = []
    if await _take(entry, lots, -entry.delta, part, uses):
        raise LotsDoNotCover(f"the lots of order {order_id} hold less {part} than {-entry.delta} fen")
    await BalanceLotUse.bulk_create(uses)


async def _open_split(**where: int) -> Split:
    """The sums of open lots' principal and bonus, added up in SQL."""
    rows = await (
        BalanceLot.filter(status="open", **where)
        .annotate(held_principal=Sum("principal_remaining"), held_bonus=Sum("bonus_remaining"))
        .values("held_principal", "held_bonus")
    )
    row = rows[0] if rows else {}
    return Split(int(row.get("held_principal") or 0), int(row.get("held_bonus") or 0))


async def order_unspent(*, order_id: int) -> Split:
    """What is left of an order's lots: refundable principal and the bonus a refund forfeits."""
    return await _open_split(order_id=order_id)


async def member_split(*, member_id: int) -> Split:
    """Principal and bonus a member holds now (the sums of open lots)."""
    return await _open_split(member_id=member_id)


async def entry_splits(*, entry_ids: list[int]) -> dict[int, Split]:
    """Principal/bonus of each ledger row: the lot a credit made minus what the row took from lots."""
    if not entry_ids:
        return {}
    result: dict[int, list[int]] = {}
    for lot in await BalanceLot.filter(entry_id__in=entry_ids).values("entry_id", "principal", "bonus"):
        acc = result.setdefault(int(lot["entry_id"]), [0, 0])
        acc[0] += int(lot["principal"])
        acc[1] += int(lot["bonus"])
    for use in await BalanceLotUse.filter(debit_entry_id__in=entry_ids).values("debit_entry_id", "principal", "bonus"):
        acc = result.setdefault(int(use["debit_entry_id"]), [0, 0])
        acc[0] -= int(use["principal"])
        acc[1] -= int(use["bonus"])
    return {entry_id: Split(p, b) for entry_id, (p, b) in result.items()}


@dataclass(frozen=True)
class StatementRow:
    entry: ledger._Entry
    split: Split | None  # None for rows from before lots existed


@dataclass(frozen=True)
class Statement:
    balance: int
    principal: int  # includes a balance no lot holds yet (written around the legacy migration)
    bonus: int
    rows: list[StatementRow]


async def balance_statement(*, merchant_id: int, member_id: int, before_id: int | None, limit: int) -> Statement:
    """Balance = principal + bonus (open lots), with a page of the ledger and each row's principal/bonus split."""
    balance = await ledger.get_balance(book="balance", member_id=member_id)
    held = await member_split(member_id=member_id)
    entries = await ledger.list_entries(
        book="balance", merchant_id=merchant_id, member_id=member_id, before_id=before_id, limit=limit
    )
    splits = await entry_splits(entry_ids=[e.id for e in entries])
    untracked = balance - held.principal - held.bonus
    return Statement(
        balance=balance,
        principal=held.principal + untracked,
        bonus=held.bonus,
        rows=[StatementRow(entry=e, split=splits.get(e.id)) for e in entries],
    )
