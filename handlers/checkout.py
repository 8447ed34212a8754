"""POS checkout: quote an order, settle it once per key, read it, return some of its units."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, StrictInt
from sanic import Blueprint
from sanic.request import Request
from sanic_ext.extensions.openapi.builders import OperationStore
from sanic_ext.extensions.openapi.definitions import RequestBody

from models.checkout import imports, orders, pricing, settling
from models.checkout.purchases import MAX_AMOUNT, Purchase
from models.checkout.returns import PurchaseReturn, PurchaseReturnLine, return_items
from models.kernel.errors import DomainError, Forbidden
from models.pos import tickets
from models.tenancy.visibility import Scope
from server.api import Out, Schema, endpoint, ok
from server.auth import POS, Principal, scope_of

bp = Blueprint("checkout")

POS_ROLES = ("owner", "hq_admin", "store_manager", "cashier", POS)  # POS: a store's API key, scoped like a cashier
IMPORT_ROLES = ("owner", "hq_admin", "store_manager", POS)  # a back-office or till batch, not a cashier's act
ID = Field(ge=1, le=2**31 - 1)


class ItemIn(Schema):
    sku: str = Field(min_length=1, max_length=64)
    name: str = Field("", max_length=64)
    category: str | None = Field(None, max_length=64)
    unit_price: StrictInt = Field(gt=0, le=MAX_AMOUNT, description="Fen per unit, before any discount")
    quantity: StrictInt = Field(ge=1, le=100_000)
    kind: Literal["product", "service"] = "product"
    staff_id: int | None = Field(None, ge=1, le=2**31 - 1, description="Who served a service line")
    minutes: StrictInt | None = Field(None, ge=1, le=24 * 60, description="Duration of a service line")


class QuoteIn(Schema):
    store_id: int = ID
    member_id: int | None = Field(None, ge=1, le=2**31 - 1)
    items: list[ItemIn] = Field(min_length=1, max_length=200)
    coupon_id: int | None = Field(
        None, ge=1, le=2**63 - 1, description="One of the member's usable coupons (GET /api/pos/member lists them)"
    )
    points: StrictInt = Field(0, ge=0, le=10**9, description="Points to pay with: a multiple of the rate")
    balance: StrictInt = Field(0, ge=0, le=MAX_AMOUNT, description="Stored value (fen) to pay with")
    member_ticket: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="For a member of another store of the chain: the till ticket GET /api/pos/member gave when"
        " they showed their QR code or card here (a cashier or POS key serves its own store's members without one)",
    )


class PaymentIn(Schema):
    method: Literal["cash", "card", "wechat", "alipay", "other"]
    amount: StrictInt = Field(gt=0, le=MAX_AMOUNT)


class ExpectIn(Schema):
    due: StrictInt | None = Field(None, ge=0, le=MAX_AMOUNT)
    points: StrictInt | None = Field(None, ge=0, le=10**9)
    balance: StrictInt | None = Field(None, ge=0, le=MAX_AMOUNT)


class OrderIn(QuoteIn):
    member_id: int = ID  # type: ignore[assignment]
    idempotency_key: str = Field(min_length=1, max_length=settling.KEY_MAX)
    payments: list[PaymentIn] = Field(default_factory=list, max_length=20)
    expect: ExpectIn | None = Field(None, description="The quote's figures; a different one now is 409")


class LineOut(Out):
    index: int
    sku: str
    name: str
    category: str | None
    kind: str
    staff_id: int | None
    minutes: int | None
    unit_price: int
    quantity: int
    gross: int
    tier_discount: int
    coupon_discount: int
    points_fen: int
    balance_fen: int
    due: int


class QuoteOut(Out):
    store_id: int
    member_id: int | None
    tier_id: int | None
    tier_discount_permille: int = Field(description="Permille OFF by the member's tier")
    lines: list[LineOut]
    gross: int
    tier_discount: int
    coupon_id: int | None
    coupon_discount: int
    points: int
    points_fen: int
    points_max: int = Field(description="Most points this order may take (a multiple of the rate)")
    member_points: int
    balance: int
    balance_max: int
    member_balance: int
    due: int = Field(description="Left to pay by other means")
    points_earned: int
    growth_earned: int


class OrderLineOut(LineOut):
    points: int
    returned: int


class PaymentOut(Out):
    method: str
    amount: int


class OrderOut(Out):
    id: int
    order_no: str
    store_id: int | None
    member_id: int
    staff_id: int | None = Field(description="The staff login that settled it (null when a POS key did)")
    api_key_id: int | None = Field(description="The store's POS key that settled it (null when staff did)")
    status: str
    lines: list[OrderLineOut]
    gross: int
    tier_discount: int
    coupon_id: int | None
    coupon_discount: int
    points_used: int
    points_fen: int
    balance_fen: int
    due: int
    payments: list[PaymentOut]
    amount: int = Field(description="Fen that earned points and growth: money and stored value")
    points_earned: int
    growth_earned: int
    occurred_at: datetime


class ReturnItemIn(Schema):
    sku: str = Field(min_length=1, max_length=64)
    quantity: StrictInt = Field(ge=1, le=100_000)


class ReturnIn(Schema):
    items: list[ReturnItemIn] = Field(min_length=1, max_length=200)
    idempotency_key: str = Field(min_length=1, max_length=100)


class ReturnLineOut(Out):
    line_index: int
    sku: str
    quantity: int
    gross: int
    tier_discount: int
    coupon_discount: int
    points: int
    points_fen: int
    balance_fen: int
    due: int


class ReturnOut(Out):
    id: int
    order_id: int
    lines: list[ReturnLineOut]
    gross: int
    points_back: int = Field(description="Points spent that came back (lots expired since excepted)")
    points_lost: int = Field(description="Points spent from lots that expired since: not given back")
    balance_back: int
    earned_back: int
    growth_back: int
    refund_due: int = Field(description="Money to hand back by other means")
    whole: bool
    coupon_back: bool = Field(description="The whole order is back and its coupon returned to the member")


def _who(principal: Principal) -> dict[str, int | None]:
    """Who settles or returns: a staff login, or a store's POS key (never recorded as a staff member)."""
    if principal.kind == "api_key":
        return {"staff_id": None, "api_key_id": principal.subject_id}
    return {"staff_id": principal.subject_id, "api_key_id": None}


def _order_scope(request: Request, body: QuoteIn) -> Scope:
    """The caller's scope; for a store-scoped caller with a valid till ticket, that member served at this store."""
    scope = scope_of(request.ctx.principal)
    if body.member_ticket is None or scope.store_id is None or body.member_id is None:
        return scope
    tickets.check_ticket(  # 403 pos.ticket_invalid
        body.member_ticket,
        secret=request.app.ctx.settings.security.jwt_secret,
        merchant_id=scope.merchant_id,
        store_id=scope.store_id,
        member_id=body.member_id,
    )
    if body.store_id != scope.store_id:
        raise Forbidden("staff of one store settle orders of that store", code="auth.store_scope", field="store_id")
    return Scope(merchant_id=scope.merchant_id)  # the ticket's member, at the one store just checked


def _order_input(body: QuoteIn) -> orders.OrderInput:
    return orders.OrderInput(
        store_id=body.store_id,
        member_id=body.member_id,
        items=[
            pricing.Item(
                sku=i.sku,
                name=i.name,
                category=i.category,
                unit_price=i.unit_price,
                quantity=i.quantity,
                kind=i.kind,
                staff_id=i.staff_id,
                minutes=i.minutes,
            )
            for i in body.items
        ],
        coupon_id=body.coupon_id,
        points=body.points,
        balance=body.balance,
    )


def _line(ln: pricing.PricedLine) -> dict[str, Any]:
    return asdict(ln)


def _order_out(purchase: Purchase) -> OrderOut:
    return OrderOut(
        id=purchase.id,
        order_no=purchase.order_no,
        store_id=purchase.store_id,
        member_id=purchase.member_id,
        staff_id=purchase.staff_id,
        api_key_id=purchase.api_key_id,
        status=purchase.status,
        lines=[OrderLineOut.model_validate(line) for line in purchase.lines or []],
        gross=int(purchase.gross or 0),
        tier_discount=int(purchase.tier_discount or 0),
        coupon_id=purchase.coupon_id,
        coupon_discount=int(purchase.coupon_discount or 0),
        points_used=int(purchase.points_used or 0),
        points_fen=int(purchase.points_fen or 0),
        balance_fen=int(purchase.balance_fen or 0),
        due=int(purchase.due or 0),
        payments=[PaymentOut.model_validate(p) for p in purchase.payments or []],
        amount=purchase.amount,
        points_earned=purchase.points,
        growth_earned=purchase.growth,
        occurred_at=purchase.occurred_at,
    )


@bp.post("/api/pos/quote")
@endpoint(
    summary="Quote an order: tier discount, coupon, points and stored value, line by line",
    tag="pos",
    roles=POS_ROLES,
    body=QuoteIn,
    response=QuoteOut,
    errors=(403, 404),
    description="Applies, in order: the tier discount per line (floored), the coupon, points as cash (a multiple"
    " of the rate, capped per order), stored value; every figure allocated back to the lines by largest"
    " remainder. 422 with the field for what cannot be paid (checkout.points_over_cap,"
    " checkout.points_insufficient, checkout.balance_insufficient, checkout.balance_over_due).",
)
async def quote(request: Request, body: QuoteIn):
    scope = _order_scope(request, body)
    q = await orders.quote(scope=scope, order=_order_input(body))
    p = q.priced
    return ok(
        QuoteOut(
            store_id=q.store_id,
            member_id=q.member_id,
            tier_id=q.tier_id,
            tier_discount_permille=q.off_permille,
            lines=[LineOut.model_validate(_line(ln)) for ln in p.lines],
            gross=p.gross,
            tier_discount=p.tier_discount,
            coupon_id=p.coupon_id,
            coupon_discount=p.coupon_discount,
            points=p.points_used,
            points_fen=p.points_fen,
            points_max=p.points_max,
            member_points=q.member_points,
            balance=p.balance_fen,
            balance_max=p.balance_max,
            member_balance=q.member_balance,
            due=p.due,
            points_earned=q.points_earned,
            growth_earned=q.growth_earned,
        )
    )


@bp.post("/api/pos/orders")
@endpoint(
    summary="Settle an order atomically: the record, points and stored value debited, points and growth earned",
    tag="pos",
    roles=POS_ROLES,
    body=OrderIn,
    response=OrderOut,
    status=201,
    also=(200,),
    errors=(403, 404, 409),
    description="201 when new, 200 for a repeat of the idempotency key (409 checkout.key_reused with another"
    " body). Payments must add up to what is due (422 checkout.payments_mismatch). 409 checkout.changed with"
    " `reason` when the figures differ from `expect` or the points/stored value were spent meanwhile; nothing"
    " is written.",
)
async def settle(request: Request, body: OrderIn):
    principal = request.ctx.principal
    purchase, created = await settling.settle(
        scope=_order_scope(request, body),
        order=_order_input(body),
        idempotency_key=body.idempotency_key,
        payments=[p.model_dump() for p in body.payments],
        expect=body.expect.model_dump(exclude_none=True) if body.expect is not None else None,
        **_who(principal),
    )
    return ok(_order_out(purchase), status=201 if created else 200)


@bp.get("/api/pos/orders/<pos_order_id:int>")
@endpoint(summary="A POS order with its lines, allocations and payments", tag="pos", roles=POS_ROLES, response=OrderOut)
async def get_order(request: Request, pos_order_id: int):
    purchase = await orders.get_order(scope=scope_of(request.ctx.principal), order_id=pos_order_id)
    return ok(_order_out(purchase))


def _return_out(ret: PurchaseReturn, lines: list[PurchaseReturnLine]) -> ReturnOut:
    return ReturnOut(
        id=ret.id,
        order_id=ret.purchase_id,
        lines=[ReturnLineOut.model_validate(line) for line in lines],
        gross=ret.gross,
        points_back=ret.points_back,
        points_lost=ret.points_lost,
        balance_back=ret.balance_back,
        earned_back=ret.earned_back,
        growth_back=ret.growth_back,
        refund_due=ret.refund_due,
        whole=ret.whole,
        coupon_back=ret.coupon_back,
    )


@bp.post("/api/pos/orders/<pos_order_id:int>/returns")
@endpoint(
    summary="Return units of an order: points, stored value, earned points and growth reversed proportionally",
    tag="pos",
    roles=POS_ROLES,
    body=ReturnIn,
    response=ReturnOut,
    status=201,
    also=(200,),
    errors=(403, 404, 409),
    description="Never beyond what was bought minus what was returned (422 checkout.return_exceeds); the last"
    " unit of a line returns its remainder, so a whole return is exact. Points go back to the lots they came"
    " from unless those expired; stored value to its principal/bonus lots. 200 for a repeat of the key.",
)
async def return_order(request: Request, pos_order_id: int, body: ReturnIn):
    principal = request.ctx.principal
    items = [i.model_dump() for i in body.items]
    digest = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()
    ret, lines, created = await return_items(
        scope=scope_of(principal),
        order_id=pos_order_id,
        items=items,
        idempotency_key=body.idempotency_key,
        request_hash=digest,
        **_who(principal),
    )
    return ok(_return_out(ret, lines), status=201 if created else 200)


class ImportErrorOut(Out):
    line: int = Field(description="1-based physical line of the file (a CSV's header is line 1)")
    code: str
    message: str
    field: str | None


class ImportOut(Out):
    total: int = Field(description="Orders in the file (blank lines and a CSV's header excluded)")
    created: int = Field(description="Recorded now, earning points and growth")
    repeated: int = Field(description="Already recorded (by external_order_id): nothing earned twice")
    rejected: int
    errors: list[ImportErrorOut] = Field(
        description=f"The rejected lines in line order, the first {imports.MAX_ERRORS}"
    )


IMPORT_LINE = (
    "One order per line: external_order_id (1-48 characters, unique per merchant), store_id or store_code (a"
    " store-scoped caller may leave both out: its own store), exactly one of member_id, phone, card_code,"
    " occurred_at (ISO 8601 with offset), amount (fen actually paid, > 0), items (optional: [{sku, category,"
    " amount, quantity}], as the purchases endpoint takes them)."
)


def _import_document(handler: Any) -> Any:
    """The OpenAPI says JSON lines or CSV (not JSON) for this endpoint's request body."""
    binary = {"type": "string", "format": "binary"}
    OperationStore()[handler].requestBody = RequestBody.make(
        {
            imports.NDJSON: {
                "schema": {**binary, "description": "JSON lines, one order object a line. " + IMPORT_LINE}
            },
            "text/csv": {
                "schema": {
                    **binary,
                    "description": "UTF-8 CSV (optional BOM), a header row naming the columns, then one order a"
                    " row; an items cell holds the JSON array. " + IMPORT_LINE,
                }
            },
        },
        required=True,
    )
    return handler


async def _bounded_body(request: Request) -> bytes:
    """The request body as it arrives, refused once past the import's size limit (nothing is written)."""
    chunks, size = [], 0
    while (chunk := await request.stream.read()) is not None:  # type: ignore[union-attr]  # stream=True route
        size += len(chunk)
        if size > imports.MAX_BYTES:
            raise DomainError(
                f"the file is larger than {imports.MAX_BYTES} bytes: split it",
                code="request.too_large",
                status=413,
                limit=imports.MAX_BYTES,
            )
        chunks.append(chunk)
    return b"".join(chunks)


@bp.post("/api/pos/orders/import", stream=True)
@_import_document
@endpoint(
    summary="Import orders of an external POS as consumption records that earn points and growth",
    tag="pos",
    roles=IMPORT_ROLES,
    response=ImportOut,
    errors=(413, 415, 422),
    description="Each line is recorded as the purchases endpoint records a purchase (order_no"
    " `ext:<external_order_id>`, source `import`): the same points rule, daily cap and growth value, each line"
    " in its own transaction. A line already recorded counts as `repeated`, so sending a file again changes"
    " nothing. A bad line (unknown member, bad amount or date, another store for a store-scoped caller"
    " (auth.store_scope), an external id twice in the file (import.duplicate_line)) is reported with its line"
    f" number and the other lines still land. At most {imports.MAX_BYTES} bytes (413 request.too_large) and"
    f" {imports.MAX_LINES} orders (422 import.too_many_lines) per request: beyond either nothing is written. 415"
    " import.media_type unless the body is application/x-ndjson or text/csv; 422 import.header_invalid for a"
    " CSV header with an unknown or missing column.",
)
async def import_orders(request: Request):
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in imports.MEDIA_TYPES:
        raise DomainError("send the orders as application/x-ndjson or text/csv", code="import.media_type", status=415)
    result = await imports.import_orders(
        scope=scope_of(request.ctx.principal), body=await _bounded_body(request), media_type=media_type
    )
    return ok(
        ImportOut(
            total=result.total,
            created=result.created,
            repeated=result.repeated,
            rejected=result.rejected,
            errors=[ImportErrorOut.model_validate(error) for error in result.errors],
        )
    )
