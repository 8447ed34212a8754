"""Orders of an external POS imported as consumption records: JSON lines or CSV, each line its own purchase.

Every line becomes the same record as the purchases endpoint (`record_purchase_once`: one table, one earning
rule), with order_no `ext:<external_order_id>` so the (merchant_id, order_no) key makes a file idempotent: a line
already recorded counts as `repeated`. Lines are checked and recorded one by one, each in its own transaction,
so a bad line is reported with its number and the others still land. The file is bounded (MAX_BYTES, MAX_LINES)
and decoded and validated in a worker thread, off the event loop; nothing is written when it is out of bounds.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from models.checkout.purchases import MAX_AMOUNT, Purchase, record_purchase_once
from models.kernel import clock
from models.kernel.errors import Conflict, DomainError, Unprocessable
from models.members.member_card import MemberCard
from models.members.members import Member
from models.tenancy.merchants import Store
from models.tenancy.visibility import Scope

MAX_BYTES = 8 * 1024 * 1024
MAX_LINES = 5_000
MAX_ERRORS = 100
KNOWN_BATCH = 500  # order numbers per query when reading which lines are already recorded
ORDER_PREFIX = "ext:"
NDJSON = "application/x-ndjson"
CSV_TYPES = ("text/csv", "application/csv")
MEDIA_TYPES = (NDJSON, *CSV_TYPES)
MEMBER_KEYS = ("member_id", "phone", "card_code")
STORE_KEYS = ("store_id", "store_code")
REQUIRED_COLUMNS = ("external_order_id", "occurred_at", "amount")
FUTURE_SLACK = timedelta(days=1)  # a till's clock may run a little ahead; an order a day ahead is a mistake
ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _iso_time(value: Any) -> Any:
    # text only: lax (CSV) validation would take a number as a unix time, strict (JSON) a str after this hook
    if not isinstance(value, str) or not ISO_TIME.match(value.strip()):
        raise ValueError("an ISO 8601 date and time with its offset, e.g. 2026-11-01T12:30:00+08:00")
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError("an ISO 8601 date and time with its offset, e.g. 2026-11-01T12:30:00+08:00") from None


class ImportItem(BaseModel):
    """A line of an external order, as the purchases endpoint takes it (bonus items and exclusions read it)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    sku: str = Field(min_length=1, max_length=64)
    category: str = Field("", max_length=64)
    amount: int = Field(ge=0, le=MAX_AMOUNT, description="Line total in fen")
    quantity: int = Field(1, ge=1, le=100_000)


class ExternalOrder(BaseModel):
    """One line of an import file: an order paid at an external POS."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    external_order_id: str = Field(
        min_length=1,
        max_length=48,
        pattern=r"^[^\x00-\x1f\x7f]+$",  # no control characters
        description="Unique per merchant: a repeat is kept once",
    )
    store_id: int | None = Field(None, ge=1, le=2**31 - 1)
    store_code: str | None = Field(None, min_length=1, max_length=32)
    member_id: int | None = Field(None, ge=1, le=2**31 - 1)
    phone: str | None = Field(None, min_length=1, max_length=24)
    card_code: str | None = Field(None, min_length=1, max_length=32)
    occurred_at: Annotated[AwareDatetime, BeforeValidator(_iso_time)]
    amount: int = Field(gt=0, le=MAX_AMOUNT, description="Fen actually paid")
    items: list[ImportItem] = Field(default_factory=list, max_length=500)


@dataclass(frozen=True)
class LineError:
    line: int  # 1-based physical line of the file; a CSV's header is line 1
    code: str
    message: str
    field: str | None = None


@dataclass(frozen=True)
class ParsedFile:
    orders: list[tuple[int, ExternalOrder]]
    errors: list[LineError]

    @property
    def total(self) -> int:
        return len(self.orders) + len(self.errors)


@dataclass
class ImportResult:
    total: int = 0
    created: int = 0
    repeated: int = 0
    rejected: int = 0
    errors: list[LineError] = field(default_factory=list)

    def reject(self, error: LineError) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(error)


def _too_many() -> Unprocessable:
    return Unprocessable(
        f"at most {MAX_LINES} orders per request: split the file",
        code="import.too_many_lines",
        field="body",
        limit=MAX_LINES,
    )


def _invalid(line: int, exc: ValidationError) -> LineError:
    err = exc.errors()[0]
    loc = [str(part) for part in err.get("loc", ())]
    name = ".".join(loc) or None
    code = f"import.{loc[0]}_invalid" if loc and loc[0] in ExternalOrder.model_fields else "import.line_invalid"
    message = f"{name}: {err.get('msg', 'invalid value')}" if name else str(err.get("msg", "invalid line"))
    return LineError(line=line, code=code, message=message, field=name)


def _ndjson_lines(body: bytes) -> list[tuple[int, ExternalOrder | LineError]]:
    found: list[tuple[int, ExternalOrder | LineError]] = []
    for number, raw in enumerate(body.removeprefix(b"\xef\xbb\xbf").splitlines(), start=1):
        if not raw.strip():
            continue
        if len(found) == MAX_LINES:
            raise _too_many()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            found.append((number, LineError(number, "import.encoding_invalid", "the line is not UTF-8")))
            continue
        try:
            # strict JSON: "500" is not an amount, as the purchases endpoint says
            found.append((number, ExternalOrder.model_validate_json(text, strict=True)))
        except ValidationError as exc:
            if exc.errors()[0].get("type") == "json_invalid":
                found.append((number, LineError(number, "import.json_invalid", "the line is not a JSON object")))
            else:
                found.append((number, _invalid(number, exc)))
    return found


def _csv_header(header: list[str]) -> list[str]:
    columns = [name.strip() for name in header]
    known = set(ExternalOrder.model_fields)
    unknown = [name for name in columns if name not in known]
    if unknown:
        shown = unknown[0][:64].encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # JSON-safe text
        raise Unprocessable(
            f"unknown column {shown!r}; the columns are {', '.join(ExternalOrder.model_fields)}",
            code="import.header_invalid",
            field="body",
        )
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing or len(set(columns)) != len(columns):
        raise Unprocessable(
            f"the header row needs {', '.join(REQUIRED_COLUMNS)}, each column once", code="import.header_invalid"
        )
    return columns


def _csv_row(number: int, columns: list[str], cells: list[str]) -> ExternalOrder | LineError:
    if any("\udc80" <= ch <= "\udcff" for cell in cells for ch in cell):
        return LineError(number, "import.encoding_invalid", "the line is not UTF-8")
    if len(cells) != len(columns):
        return LineError(number, "import.line_invalid", f"{len(cells)} cells for {len(columns)} columns")
    row: dict[str, Any] = {name: cell for name, cell in zip(columns, cells, strict=True) if cell.strip()}
    if "items" in row:
        try:
            row["items"] = json.loads(row["items"])
        except ValueError:
            return LineError(number, "import.items_invalid", "items: a JSON array of objects", "items")
    try:
        return ExternalOrder.model_validate(row)  # lax: a CSV cell is text, "500" is 500 fen
    except ValidationError as exc:
        return _invalid(number, exc)


def _csv_lines(body: bytes) -> list[tuple[int, ExternalOrder | LineError]]:
    # a stray non-UTF-8 byte rejects its row instead of the whole file (surrogateescape, as the member import)
    text_lines = (
        raw.decode("utf-8", "surrogateescape") for raw in body.removeprefix(b"\xef\xbb\xbf").splitlines(keepends=True)
    )
    reader = csv.reader(text_lines)
    found: list[tuple[int, ExternalOrder | LineError]] = []
    columns: list[str] | None = None
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if columns is None:
                raise Unprocessable(f"the header row is not CSV: {exc}", code="import.header_invalid") from None
            found.append((start, LineError(start, "import.line_invalid", f"not CSV: {exc}")))
            continue
        if not any(cell.strip() for cell in cells):
            continue
        if columns is None:
            columns = _csv_header(cells)
            continue
        if len(found) == MAX_LINES:
            raise _too_many()
        found.append((start, _csv_row(start, columns, cells)))
    if columns is None:
        raise Unprocessable("the file is empty: a header row, then one order a line", code="import.empty")
    return found


def parse_file(body: bytes, media_type: str) -> ParsedFile:
    """Decode and validate every line (blocking: run it in a thread); a repeated external id is a bad line."""
    lines = _ndjson_lines(body) if media_type == NDJSON else _csv_lines(body)
    orders: list[tuple[int, ExternalOrder]] = []
    errors: list[LineError] = []
    first_seen: dict[str, int] = {}
    for number, parsed in lines:
        if isinstance(parsed, LineError):
            errors.append(parsed)
            continue
        earlier = first_seen.setdefault(parsed.external_order_id, number)
        if earlier != number:
            errors.append(
                LineError(
                    number,
                    "import.duplicate_line",
                    f"external_order_id {parsed.external_order_id!r} is already on line {earlier}",
                    "external_order_id",
                )
            )
            continue
        orders.append((number, parsed))
    return ParsedFile(orders=orders, errors=errors)


class _Lookups:
    """Stores and members named by the lines, resolved once per file within the caller's scope."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.stores: dict[tuple[str, object], int | None] = {}
        self.members: dict[tuple[str, object], int | None] = {}

    async def store(self, order: ExternalOrder) -> int:
        scope = self.scope
        given = [key for key in STORE_KEYS if getattr(order, key) is not None]
        if len(given) > 1:
            raise Unprocessable(
                "give store_id or store_code, not both", code="import.store_ambiguous", field="store_code"
            )
        if not given:
            if scope.store_id is not None:  # a store's staff or key imports its own store's orders
                return scope.store_id
            raise Unprocessable("store_id or store_code is required", code="import.store_missing", field="store_code")
        key = (given[0], getattr(order, given[0]))
        if key not in self.stores:
            if key[0] == "store_id":
                found = await Store.filter(id=order.store_id, merchant_id=scope.merchant_id).first()
            else:
                found = await Store.filter(code=order.store_code, merchant_id=scope.merchant_id).first()
            self.stores[key] = None if found is None else found.id
        store_id = self.stores[key]
        if store_id is None and scope.store_id is None:
            raise Unprocessable("no such store", code="import.store_invalid", field=given[0])
        if store_id is None or not scope.sees_store(store_id):  # another store's: say nothing of it
            raise DomainError(
                "a store's staff or POS key imports that store's orders only",
                code="auth.store_scope",
                status=403,
                field=given[0],
            )
        return store_id

    async def member(self, order: ExternalOrder) -> int:
        given = [key for key in MEMBER_KEYS if getattr(order, key) is not None]
        if len(given) != 1:
            code = "import.member_missing" if not given else "import.member_ambiguous"
            raise Unprocessable("give exactly one of member_id, phone, card_code", code=code, field="member_id")
        key = (given[0], getattr(order, given[0]))
        if key not in self.members:
            self.members[key] = await self._find_member(kind=key[0], value=key[1])
        member_id = self.members[key]
        if member_id is None:
            raise DomainError("member not found", code="member.not_found", status=404, field=given[0])
        return member_id

    async def _find_member(self, *, kind: str, value: object) -> int | None:
        visible = Member.filter(**self.scope.members())
        if kind == "card_code":
            card = (
                await MemberCard.filter(merchant_id=self.scope.merchant_id, code=value)
                .order_by("-claimed_at", "-id")
                .first()
            )
            if card is None:
                return None
            value, kind = card.member_id, "member_id"
        found = await visible.filter(**{"id" if kind == "member_id" else "phone": value}).first()
        return None if found is None else found.id


def _check_time(occurred_at: datetime) -> datetime:
    if occurred_at.year < 2000:  # checked before the move to UTC, which overflows at year 1
        raise Unprocessable("occurred_at is before 2000", code="import.occurred_at_invalid", field="occurred_at")
    when = occurred_at.astimezone(UTC)
    if when.year < 2000:
        raise Unprocessable("occurred_at is before 2000", code="import.occurred_at_invalid", field="occurred_at")
    if when > clock.now() + FUTURE_SLACK:
        raise Unprocessable("occurred_at is in the future", code="import.occurred_at_invalid", field="occurred_at")
    return when


async def _recorded(*, merchant_id: int, order_nos: list[str]) -> dict[str, tuple[int, int]]:
    """(member_id, amount) of the orders already recorded, by order number: a file sent again is read, not redone."""
    found: dict[str, tuple[int, int]] = {}
    for start in range(0, len(order_nos), KNOWN_BATCH):
        rows = await Purchase.filter(
            merchant_id=merchant_id, order_no__in=order_nos[start : start + KNOWN_BATCH]
        ).values_list("order_no", "member_id", "amount")
        found.update({str(no): (int(member), int(amount)) for no, member, amount in rows})
    return found


async def _record(
    *, scope: Scope, order: ExternalOrder, store_id: int, member_id: int, known: tuple[int, int] | None
) -> bool:
    """Record one line (True) or recognise it as recorded before (False), as record_purchase_once tells them."""
    order_no = ORDER_PREFIX + order.external_order_id
    occurred_at = _check_time(order.occurred_at)
    if known is not None:  # the purchase and what it earned were committed together: nothing is left to finish
        if known != (member_id, order.amount):
            raise Conflict("order_no was already recorded for another purchase", code="purchase.order_no_taken")
        return False
    _, created = await record_purchase_once(
        merchant_id=scope.merchant_id,
        member_id=member_id,
        order_no=order_no,
        amount=order.amount,
        items=[item.model_dump() for item in order.items],
        store_id=store_id,
        occurred_at=occurred_at,
        scope=scope,
        source="import",
    )
    return created


async def import_orders(*, scope: Scope, body: bytes, media_type: str) -> ImportResult:
    """Record each order of the file once (a repeat is `repeated`), earning points and growth by the purchase rule."""
    if len(body) > MAX_BYTES:
        raise DomainError(
            f"the file is larger than {MAX_BYTES} bytes", code="request.too_large", status=413, limit=MAX_BYTES
        )
    parsed = await asyncio.to_thread(parse_file, body, media_type)
    result = ImportResult(total=parsed.total)
    errors = sorted(parsed.errors, key=lambda error: error.line)
    lookups = _Lookups(scope)
    recorded = await _recorded(
        merchant_id=scope.merchant_id, order_nos=[ORDER_PREFIX + order.external_order_id for _, order in parsed.orders]
    )
    for number, order in parsed.orders:
        while errors and errors[0].line < number:  # the errors stay in line order
            result.reject(errors.pop(0))
        try:
            store_id = await lookups.store(order)
            member_id = await lookups.member(order)
            known = recorded.get(ORDER_PREFIX + order.external_order_id)
            created = await _record(scope=scope, order=order, store_id=store_id, member_id=member_id, known=known)
        except DomainError as exc:
            field_name = exc.extra.get("field")
            result.reject(LineError(number, exc.code, exc.message, None if field_name is None else str(field_name)))
            continue
        if created:
            result.created += 1
        else:
            result.repeated += 1
    for error in errors:
        result.reject(error)
    return result
