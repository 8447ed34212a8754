"""Points and stored-value changes by staff, and the ledgers behind them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictInt
from sanic import Blueprint
from sanic.request import Request

from handlers.schemas import ChangeOut, EntryOut, LedgerQuery
from models.ledger import books as ledger
from models.members import members
from server.api import Out, Schema, endpoint, ok
from server.auth import ALL_STAFF, MANAGERS, scope_of

bp = Blueprint("ledger", url_prefix="/api/members")


class _ChangeIn(Schema):
    delta: StrictInt = Field(
        ge=-ledger.MAX_DELTA, le=ledger.MAX_DELTA, description="Signed amount: points, or fen for balance; never zero"
    )
    reason: str = Field(min_length=1, max_length=255)
    idempotency_key: str = Field(
        min_length=1, max_length=128, description="Unique per merchant; a repeat returns the first result"
    )
    kind: str  # narrowed by each book's schema below


class PointsChangeIn(_ChangeIn):
    # expire, reverse and signin rows come only from their own rules, which keep the points lots true
    kind: Literal["earn", "spend", "adjust", "gift"] = "adjust"


class BalanceChangeIn(_ChangeIn):
    kind: Literal[ledger.BALANCE_KINDS] = "adjust"  # type: ignore[valid-type]


class LedgerPage(Out):
    items: list[EntryOut]
    next_before_id: int | None


async def _change(request: Request, member_id: int, body: _ChangeIn, change) -> ChangeOut:
    principal = request.ctx.principal
    await members.ensure_visible(scope=scope_of(principal), member_id=member_id)
    result = await change(
        merchant_id=principal.merchant_id,
        member_id=member_id,
        delta=body.delta,
        kind=body.kind,
        reason=body.reason,
        idempotency_key=body.idempotency_key,
        ref_type="staff",
        ref_id=str(principal.subject_id),
        operator_staff_id=principal.subject_id,
    )
    return ChangeOut(
        entry=EntryOut.model_validate(result.entry), replayed=result.replayed, balance=result.entry.balance_after
    )


@bp.post("/<member_id:int>/points")
@endpoint(
    summary="Change a member's points",
    tag="ledger",
    roles=MANAGERS,
    body=PointsChangeIn,
    response=ChangeOut,
    errors=(404, 409),
    description="One ledger row; never below zero (409 points.insufficient).",
)
async def change_points(request: Request, member_id: int, body: PointsChangeIn):
    return ok(await _change(request, member_id, body, ledger.change_points))


@bp.post("/<member_id:int>/balance")
@endpoint(
    summary="Change a member's stored value (fen)",
    tag="ledger",
    roles=MANAGERS,
    body=BalanceChangeIn,
    response=ChangeOut,
    errors=(404, 409),
    description="One ledger row; never below zero (409 balance.insufficient).",
)
async def change_balance(request: Request, member_id: int, body: BalanceChangeIn):
    return ok(await _change(request, member_id, body, ledger.change_balance))


async def _page(request: Request, member_id: int, book: str, query: LedgerQuery) -> LedgerPage:
    principal = request.ctx.principal
    await members.ensure_visible(scope=scope_of(principal), member_id=member_id)
    entries = await ledger.list_entries(
        book=book, merchant_id=principal.merchant_id, member_id=member_id, before_id=query.before_id, limit=query.limit
    )
    next_id = entries[-1].id if len(entries) == query.limit else None
    return LedgerPage(items=[EntryOut.model_validate(e) for e in entries], next_before_id=next_id)


@bp.get("/<member_id:int>/points/ledger")
@endpoint(
    summary="A member's points ledger",
    tag="ledger",
    roles=ALL_STAFF,
    query=LedgerQuery,
    response=LedgerPage,
    errors=(404,),
)
async def points_ledger(request: Request, member_id: int, query: LedgerQuery):
    return ok(await _page(request, member_id, "points", query))


@bp.get("/<member_id:int>/balance/ledger")
@endpoint(
    summary="A member's stored-value ledger",
    tag="ledger",
    roles=ALL_STAFF,
    query=LedgerQuery,
    response=LedgerPage,
    errors=(404,),
)
async def balance_ledger(request: Request, member_id: int, query: LedgerQuery):
    return ok(await _page(request, member_id, "balance", query))
