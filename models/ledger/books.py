"""Points and stored-value accounts with append-only ledgers; the only way balances change."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from tortoise import connections, fields
from tortoise.backends.base.client import TransactionalDBClient
from tortoise.exceptions import IntegrityError, OperationalError
from tortoise.expressions import F
from tortoise.functions import Sum
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.kernel import sqlpath
from models.kernel.errors import Conflict, Unprocessable
from models.kernel.hooks import Hook, StatementHook
from models.kernel.sqlpath import Ref, Stmt

log = logging.getLogger("huiyuan.ledger")

POINTS_KINDS = ("earn", "spend", "adjust", "expire", "reverse", "gift", "import", "signin", "activity")
BALANCE_KINDS = ("recharge", "pay", "refund", "adjust", "gift", "import", "forfeit", "reverse")
MAX_DELTA = 1_000_000_000
_RETRYABLE_MYSQL = (1205, 1213)  # lock wait timeout, deadlock


class _Account(Model):
    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id: int  # created by Tortoise for the subclasses' member FK
    balance = fields.BigIntField(default=0)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        abstract = True


class _Entry(Model):
    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id: int  # created by Tortoise for the subclasses' member FK
    delta = fields.BigIntField()
    balance_after = fields.BigIntField()
    kind = fields.CharField(max_length=16)
    reason = fields.CharField(max_length=255)
    ref_type = fields.CharField(max_length=32, default="")
    ref_id = fields.CharField(max_length=64, default="")
    idempotency_key = fields.CharField(max_length=128)
    operator_staff_id = fields.IntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        abstract = True


class PointsAccount(_Account):
    member: fields.OneToOneRelation = fields.OneToOneField("models.Member", related_name="points_account")

    class Meta:
        table = "points_account"


class PointsEntry(_Entry):
    member: fields.ForeignKeyRelation = fields.ForeignKeyField("models.Member", related_name="points_entries")

    class Meta:
        table = "points_ledger"
        unique_together = (("merchant_id", "idempotency_key"),)
        indexes = (("member_id", "id"),)


class BalanceAccount(_Account):
    member: fields.OneToOneRelation = fields.OneToOneField("models.Member", related_name="balance_account")

    class Meta:
        table = "balance_account"


class BalanceEntry(_Entry):
    member: fields.ForeignKeyRelation = fields.ForeignKeyField("models.Member", related_name="balance_entries")

    class Meta:
        table = "balance_ledger"
        unique_together = (("merchant_id", "idempotency_key"),)
        indexes = (("member_id", "id"),)


@dataclass(frozen=True)
class _Book:
    name: str
    account: type[_Account]
    entry: type[_Entry]
    kinds: tuple[str, ...]
    unit: str


POINTS = _Book("points", PointsAccount, PointsEntry, POINTS_KINDS, "points")
BALANCE = _Book("balance", BalanceAccount, BalanceEntry, BALANCE_KINDS, "fen")


Within = Callable[["_Entry"], Awaitable[None]]
# listeners (book name, entry) run inside the transaction of every new ledger row; see server/wiring.py
ENTRY_WRITTEN = Hook("ledger.entry_written")
# the same listeners as statements, for a ledger row written by a batched write (credit_statements below)
ENTRY_STATEMENTS = StatementHook("ledger.entry_statements")


@dataclass(frozen=True)
class NewEntry:
    """A ledger row a batched write is about to insert: its id will be Ref("entry") in the batch."""

    book: str
    merchant_id: int
    member_id: int
    delta: int
    kind: str
    reason: str | Ref  # a Ref: the captured id with its prefix as the text ("POS order <id>")
    idempotency_key: str | Ref
    ref_type: str
    ref_id: str | Ref
    at: datetime
    # a points debit: the member's open lots (id, remaining, expires_at) in spending order, read under the account
    # lock, that the listeners consume (models/points/lots.py); None for a credit
    lots: tuple[tuple[int, int, Any], ...] | None = None


def _table(model: type[Model]) -> str:
    return str(model._meta.db_table)


async def credit_statements(entry: NewEntry) -> list[Stmt] | None:
    """The statements of a credit to the member's account, in the caller's transaction; the first is the account's
    update (a caller that has not read the account under its lock makes it a sqlpath guard: a missing account
    would otherwise insert no ledger row and the batch would go on).

    The same writes as change_points/change_balance for a credit: the account's balance, one ledger row carrying
    the new balance (read from the locked row in the same statement) and every ENTRY_WRITTEN listener's
    statements. None when a listener cannot batch it: write through change_points/change_balance instead.
    The idempotency key is the ledger's unique key, as on the ORM path: a used key fails the batch.
    """
    if entry.delta <= 0:
        raise ValueError("credit_statements writes credits only")
    return await _entry_statements(entry, operator_staff_id=None)


async def debit_statements(entry: NewEntry, *, operator_staff_id: int | None) -> list[Stmt] | None:
    """The statements of a debit, as change_points/change_balance write it: the first is the account's guarded
    UPDATE (balance >= the debit, a sqlpath guard: the batch stops with GuardFailed at index 0 when the member
    cannot afford it), then the ledger row and the listeners' statements; None when a listener cannot batch it."""
    if entry.delta >= 0:
        raise ValueError("debit_statements writes debits only")
    return await _entry_statements(entry, operator_staff_id=operator_staff_id)


async def _entry_statements(entry: NewEntry, *, operator_staff_id: int | None) -> list[Stmt] | None:
    book = POINTS if entry.book == "points" else BALANCE
    validate_change(
        name=book.name,
        unit=book.unit,
        kinds=book.kinds,
        delta=entry.delta,
        kind=entry.kind,
        reason=entry.reason if isinstance(entry.reason, str) else "batched",
        idempotency_key=entry.idempotency_key if isinstance(entry.idempotency_key, str) else "batched",
    )
    listeners = await ENTRY_STATEMENTS.collect(book.name, entry)
    if listeners is None:
        return None
    account, ledger_table = _table(book.account), _table(book.entry)
    when = sqlpath.db_time(entry.at)
    debit = entry.delta < 0
    return [
        Stmt(
            f"UPDATE {account} SET balance = balance + %s WHERE member_id = %s AND merchant_id = %s"  # noqa: S608
            + (" AND balance >= %s" if debit else ""),
            (entry.delta, entry.member_id, entry.merchant_id, *((-entry.delta,) if debit else ())),
            guard=debit,
        ),
        Stmt(
            f"INSERT INTO {ledger_table} (merchant_id, member_id, delta, balance_after, kind, reason, ref_type, ref_id,"  # noqa: S608
            " idempotency_key, operator_staff_id, created_at)"
            f" SELECT merchant_id, member_id, %s, balance, %s, %s, %s, %s, %s, %s, %s FROM {account}"
            " WHERE member_id = %s",
            (
                entry.delta,
                entry.kind,
                entry.reason.strip() if isinstance(entry.reason, str) else entry.reason,
                entry.ref_type,
                entry.ref_id,
                entry.idempotency_key,
                operator_staff_id,
                when,
                entry.member_id,
            ),
            capture="entry",
        ),
        *listeners,
    ]


@dataclass(frozen=True)
class LedgerResult:
    entry: _Entry
    replayed: bool  # True when the idempotency key had been used and nothing changed


def _is_retryable(exc: OperationalError) -> bool:
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    if code is None and exc.__cause__ is not None and getattr(exc.__cause__, "args", None):
        code = exc.__cause__.args[0]
    return code in _RETRYABLE_MYSQL


def validate_change(
    *, name: str, unit: str, kinds: tuple[str, ...], delta: int, kind: str, reason: str, idempotency_key: str
) -> None:
    """The input rules every ledger shares (points, balance, growth): codes are "<name>.delta_invalid" etc."""
    if isinstance(delta, bool) or not isinstance(delta, int) or delta == 0 or abs(delta) > MAX_DELTA:
        raise Unprocessable(
            f"delta must be a non-zero integer of at most {MAX_DELTA} {unit}",
            code=f"{name}.delta_invalid",
            field="delta",
        )
    if kind not in kinds:
        raise Unprocessable(f"kind must be one of {', '.join(kinds)}", code=f"{name}.kind_invalid", field="kind")
    if not reason.strip():
        raise Unprocessable("reason is required", code=f"{name}.reason_required", field="reason")
    if not idempotency_key or len(idempotency_key) > 128:
        raise Unprocessable(
            "idempotency_key must be 1-128 characters", code="idempotency.key_invalid", field="idempotency_key"
        )


async def _replay(
    book: _Book, *, merchant_id: int, member_id: int, delta: int, idempotency_key: str
) -> LedgerResult | None:
    entry = await book.entry.get_or_none(merchant_id=merchant_id, idempotency_key=idempotency_key)
    if entry is None:
        return None
    if entry.member_id != member_id or entry.delta != delta:
        raise Conflict(
            "idempotency_key was already used for a different change", code="idempotency.key_reused", entry_id=entry.id
        )
    return LedgerResult(entry=entry, replayed=True)


async def _change(
    book: _Book,
    *,
    merchant_id: int,
    member_id: int,
    delta: int,
    kind: str,
    reason: str,
    idempotency_key: str,
    ref_type: str = "",
    ref_id: str = "",
    operator_staff_id: int | None = None,
    within: Within | None = None,  # runs in the same transaction after the row is written; raising rolls back
    savepoint: bool = True,
) -> LedgerResult:
    validate_change(
        name=book.name,
        unit=book.unit,
        kinds=book.kinds,
        delta=delta,
        kind=kind,
        reason=reason,
        idempotency_key=idempotency_key,
    )

    async def apply() -> LedgerResult:
        # savepoint=False inside a caller's transaction: no SAVEPOINT/RELEASE; any failure aborts that whole transaction
        own = savepoint or not in_outer_transaction()
        try:
            async with in_transaction() if own else nullcontext():  # as it is, no savepoint
                guard = book.account.filter(member_id=member_id, merchant_id=merchant_id)
                if delta < 0:
                    guard = guard.filter(balance__gte=-delta)
                if await guard.update(balance=F("balance") + delta) != 1:
                    # a replay of a debit that emptied the account must still return its first result
                    replay = await _replay(
                        book, merchant_id=merchant_id, member_id=member_id, delta=delta, idempotency_key=idempotency_key
                    )
                    if replay is not None:
                        return replay
                    if not await book.account.exists(member_id=member_id, merchant_id=merchant_id):
                        raise Conflict(f"member has no {book.name} account", code=f"{book.name}.no_account")
                    raise Conflict(f"not enough {book.name} for this change", code=f"{book.name}.insufficient")
                balance_after = (await book.account.filter(member_id=member_id).values_list("balance", flat=True))[0]
                # a used idempotency key fails this insert; the except below rolls back and replays
                entry = await book.entry.create(
                    merchant_id=merchant_id,
                    member_id=member_id,
                    delta=delta,
                    balance_after=balance_after,
                    kind=kind,
                    reason=reason.strip(),
                    ref_type=ref_type,
                    ref_id=ref_id,
                    idempotency_key=idempotency_key,
                    operator_staff_id=operator_staff_id,
                )
                if within is not None:
                    await within(entry)
                await ENTRY_WRITTEN.emit(book.name, entry)
            return LedgerResult(entry=entry, replayed=False)
        except IntegrityError:
            if not own:  # the account row was already changed in the caller's transaction: it must roll back
                raise
            replay = await _replay(
                book, merchant_id=merchant_id, member_id=member_id, delta=delta, idempotency_key=idempotency_key
            )
            if replay is not None:
                return replay
            raise

    return await retrying(apply, what=f"{book.name} change")


T = TypeVar("T")


def in_outer_transaction() -> bool:
    """True inside `async with in_transaction()`: a nested one is a savepoint, and only the outermost may retry."""
    return isinstance(connections.get("default"), TransactionalDBClient)


async def retrying(work: Callable[[], Awaitable[T]], *, what: str = "transaction") -> T:
    """Run work (which opens its own transaction) again after a deadlock or lock wait timeout, up to 5 times.

    Inside an outer transaction it runs once: MySQL has already rolled the whole transaction back, so only the
    outermost caller can retry (compose several changes by wrapping them all in one `retrying`).
    """
    if in_outer_transaction():
        return await work()
    for attempt in range(5):
        try:
            return await work()
        except OperationalError as exc:
            if not _is_retryable(exc) or attempt == 4:
                raise
            log.info("retrying %s after lock conflict (attempt %d)", what, attempt + 1)
            await asyncio.sleep(0.005 * (2**attempt))
    raise AssertionError("unreachable")


async def change_points(
    *,
    merchant_id: int,
    member_id: int,
    delta: int,
    kind: str,
    reason: str,
    idempotency_key: str,
    ref_type: str = "",
    ref_id: str = "",
    operator_staff_id: int | None = None,
    within: Within | None = None,
    savepoint: bool = True,  # False inside a caller's transaction that a failure rolls back whole
) -> LedgerResult:
    """Add or take points as one ledger row; never below zero; a repeated key changes nothing."""
    return await _change(
        POINTS,
        merchant_id=merchant_id,
        member_id=member_id,
        delta=delta,
        kind=kind,
        reason=reason,
        idempotency_key=idempotency_key,
        ref_type=ref_type,
        ref_id=ref_id,
        operator_staff_id=operator_staff_id,
        within=within,
        savepoint=savepoint,
    )


async def change_balance(
    *,
    merchant_id: int,
    member_id: int,
    delta: int,
    kind: str,
    reason: str,
    idempotency_key: str,
    ref_type: str = "",
    ref_id: str = "",
    operator_staff_id: int | None = None,
    within: Within | None = None,
    savepoint: bool = True,  # False inside a caller's transaction that a failure rolls back whole
) -> LedgerResult:
    """Add or take stored value (fen) as one ledger row; never below zero; a repeated key changes nothing."""
    return await _change(
        BALANCE,
        merchant_id=merchant_id,
        member_id=member_id,
        delta=delta,
        kind=kind,
        reason=reason,
        idempotency_key=idempotency_key,
        ref_type=ref_type,
        ref_id=ref_id,
        operator_staff_id=operator_staff_id,
        within=within,
        savepoint=savepoint,
    )


async def get_balance(*, book: str, member_id: int) -> int:
    """A member's points, or stored value in fen (book "points" or "balance"); 0 without an account."""
    account = (POINTS if book == "points" else BALANCE).account
    rows = await account.filter(member_id=member_id).values_list("balance", flat=True)
    return int(rows[0]) if rows else 0  # type: ignore[call-overload]


async def get_balances(*, member_id: int) -> tuple[int, int]:
    """(points, balance in fen) of a member."""
    return await get_balance(book="points", member_id=member_id), await get_balance(book="balance", member_id=member_id)


async def list_entries(
    *, book: str, merchant_id: int, member_id: int, before_id: int | None, limit: int
) -> list[_Entry]:
    """A member's ledger, newest first, paged by id."""
    model = POINTS.entry if book == "points" else BALANCE.entry
    query = model.filter(merchant_id=merchant_id, member_id=member_id)
    if before_id:
        query = query.filter(id__lt=before_id)
    return await query.order_by("-id").limit(limit)


@dataclass(frozen=True)
class Mismatch:
    book: str
    member_id: int
    balance: int
    ledger_sum: int


async def find_mismatches(*, batch: int = 1000) -> AsyncIterator[Mismatch | int]:
    """Recompute every balance from its ledger; yields mismatches and, per batch, the count checked."""
    for book in (POINTS, BALANCE):
        last_id = 0
        while True:
            accounts = await book.account.filter(id__gt=last_id).order_by("id").limit(batch)
            if not accounts:
                break
            last_id = accounts[-1].id
            member_ids = [a.member_id for a in accounts]
            rows = await (
                book.entry.filter(member_id__in=member_ids)
                .group_by("member_id")
                .annotate(total=Sum("delta"))
                .values("member_id", "total")
            )
            sums = {row["member_id"]: int(row["total"] or 0) for row in rows}
            for account in accounts:
                total = sums.get(account.member_id, 0)
                if total != account.balance or account.balance < 0:
                    yield Mismatch(book.name, account.member_id, account.balance, total)
            yield len(accounts)
