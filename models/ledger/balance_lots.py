"""Stored-value lots: every balance credit keeps its principal and bonus apart, for refunds and reports."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from tortoise import fields
from tortoise.models import Model

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
Part = Literal["principal", "bonus"]


class LotsDoNotCover(Exception):
    """The lots named for a refund or forfeit hold less than its amount (rolls the change back)."""


@dataclass(frozen=True)
class Split:
    principal: int
    bonus: int


async def _open_lots(*, member_id: int, order_id: int | None = None) -> list[BalanceLot]:
    """The member's open lots, oldest first, row-locked (the account row is already locked: account -> lots)."""
    query = BalanceLot.filter(member_id=member_id, status="open")
    if order_id is not None:
        query = query.filter(order_id=order_id)
    return list(await query.order_by("id").select_for_update())


def _share(lot: BalanceLot, take: int, part: Part | None) -> Split:
    """What `take` fen from a lot is made of: one part only, or pro rata with the bonus share rounded down."""
    if part == "principal":
        return Split(take, 0)
    if part == "bonus":
        return Split(0, take)
    bonus = take * lot.bonus_remaining // (lot.principal_remaining + lot.bonus_remaining)
    return Split(take - bonus, bonus)


async def _take(entry: ledger._Entry, lots: Iterable[BalanceLot], amount: int, part: Part | None) -> int:
    """Consume up to amount fen from the lots in order, writing one use per lot; returns what is still owed."""
    for lot in lots:
        if amount == 0:
            break
        available = {
            "principal": lot.principal_remaining,
            "bonus": lot.bonus_remaining,
            None: lot.principal_remaining + lot.bonus_remaining,
        }[part]
        take = min(amount, available)
        if take <= 0:
            continue
        split = _share(lot, take, part)
        lot.principal_remaining -= split.principal
        lot.bonus_remaining -= split.bonus
        if lot.principal_remaining == 0 and lot.bonus_remaining == 0:
            lot.status = "refunded" if part is not None else "spent"
        await lot.save(update_fields=["principal_remaining", "bonus_remaining", "status"])
        await BalanceLotUse.create(
            merchant_id=entry.merchant_id,
            debit_entry_id=entry.id,
            lot_id=lot.id,
            principal=split.principal,
            bonus=split.bonus,
        )
        amount -= take
    return amount


async def _cover_legacy(entry: ledger._Entry, lots: list[BalanceLot]) -> None:
    """A balance from before lots existed becomes one principal lot, so lots always add up to the balance."""
    before = entry.balance_after - entry.delta
    untracked = before - sum(lot.principal_remaining + lot.bonus_remaining for lot in lots)
    if untracked > 0:
        lots.insert(
            0,
            await BalanceLot.create(
                merchant_id=entry.merchant_id,
                member_id=entry.member_id,
                entry_id=None,
                source="legacy",
                principal=untracked,
                principal_remaining=untracked,
            ),
        )


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
            await BalanceLotUse.create(
                merchant_id=use.merchant_id,
                debit_entry_id=debit_entry_id,
                lot_id=use.lot_id,
                principal=back.principal,
                bonus=back.bonus,
                restored=True,
            )
        else:
            await BalanceLotUse.filter(id=use.id).update(restored=True)
        lot = await BalanceLot.filter(id=use.lot_id).select_for_update().first()
        assert lot is not None
        lot.principal_remaining += back.principal
        lot.bonus_remaining += back.bonus
        lot.status = "open"
        await lot.save(update_fields=["principal_remaining", "bonus_remaining", "status"])
        await BalanceLotUse.create(
            merchant_id=entry.merchant_id,
            debit_entry_id=entry.id,
            lot_id=lot.id,
            principal=-back.principal,
            bonus=-back.bonus,
            restored=True,
        )
        amount -= take
    return amount


async def _reversed_debit(entry: ledger._Entry) -> int | None:
    """The id of the member's debit a "reverse" row names (ref_type "balance_entry"), if it is one."""
    if entry.ref_type != "balance_entry" or not entry.ref_id.isdigit():
        return None
    debit = await ledger.BalanceEntry.get_or_none(id=int(entry.ref_id), member_id=entry.member_id, delta__lt=0)
    return debit.id if debit is not None else None


async def on_ledger_entry(book: str, entry: ledger._Entry) -> None:
    """Every balance row moves lots: credits add a lot (or restore a reversed debit), debits use lots oldest first."""
    if book != "balance":
        return
    if entry.delta > 0:
        lots = await _open_lots(member_id=entry.member_id)
        await _cover_legacy(entry, lots)
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
    lots = await _open_lots(member_id=entry.member_id)
    await _cover_legacy(entry, lots)
    if await _take(entry, lots, -entry.delta, None):
        raise LotsDoNotCover(f"balance lots of member {entry.member_id} do not cover entry {entry.id}")


async def take_order_lots(*, entry: ledger._Entry, order_id: int, part: Part) -> None:
    """Inside a refund/forfeit change: take exactly -entry.delta from one part of the order's lots."""
    lots = await _open_lots(member_id=entry.member_id, order_id=order_id)
    if await _take(entry, lots, -entry.delta, part):
        raise LotsDoNotCover(f"the lots of order {order_id} hold less {part} than {-entry.delta} fen")


async def _open_split(**where: int) -> Split:
    rows = await BalanceLot.filter(status="open", **where).values_list("principal_remaining", "bonus_remaining")
    return Split(sum(int(r[0]) for r in rows), sum(int(r[1]) for r in rows))


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
    principal: int  # includes a balance from before lots existed (not yet turned into a legacy lot)
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
