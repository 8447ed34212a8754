"""Selling a package at the till (stored value or another payment method) and refunding what is unused."""

from __future__ import annotations

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from models.kernel import clock
from models.kernel.errors import Conflict, Forbidden, NotFound, Unprocessable
from models.ledger import books as ledger
from models.members import timeline
from models.members.members import member_rows
from models.packages.calendar import days_left, end_after
from models.packages.tables import PAY_METHODS, MemberPackage
from models.packages.templates import Terms, terms_on_sale
from models.tenancy.merchants import merchant_zone
from models.tenancy.visibility import Scope

REFUNDABLE = ("active",)
PAY_KEY_PREFIX, MP_KEY_PREFIX = "pay:", "mp:"  # sale keys of WeChat Pay orders and of mini-program purchases
RESERVED_KEY_PREFIXES = (PAY_KEY_PREFIX, MP_KEY_PREFIX)


def _check_payments(payments: list[dict[str, int | str]], price: int) -> int:
    """The stored-value part of payments that must add up to the price exactly (422 otherwise)."""
    for index, payment in enumerate(payments):
        if payment.get("method") not in PAY_METHODS:
            raise Unprocessable("unknown payment method", code="package.payment_invalid", field=f"payments.{index}")
    total = sum(int(p["amount"]) for p in payments)
    if total != price:
        raise Unprocessable(
            f"payments add up to {total} fen, the price is {price}", code="package.payments_mismatch", field="payments"
        )
    return sum(int(p["amount"]) for p in payments if p["method"] == "balance")


async def _replay(*, merchant_id: int, member_id: int, template_id: int, sale_key: str) -> MemberPackage | None:
    package = await MemberPackage.get_or_none(merchant_id=merchant_id, sale_key=sale_key)
    if package is not None and (package.member_id, package.template_id) != (member_id, template_id):
        raise Conflict("idempotency_key was already used for another sale", code="idempotency.key_reused")
    return package


async def sell_package(
    *,
    merchant_id: int,
    member_id: int,
    template_id: int,
    sale_key: str,
    payments: list[dict[str, int | str]],
    store_id: int | None,
    staff_id: int | None,
    terms: Terms | None = None,
    channel: str = "till",
) -> tuple[MemberPackage, bool]:
    """Sell a package once per sale key; stored value is debited in the same transaction. (package, created).

    terms: what a paid order bought (its snapshot), sold as it was even if the template changed or was retired
    since; otherwise the template as it is now, active. A till's key may not take another channel's prefix.
    """
    if channel == "till" and sale_key.startswith(RESERVED_KEY_PREFIXES):
        raise Unprocessable(
            f"idempotency keys starting with {', '.join(RESERVED_KEY_PREFIXES)} are reserved",
            code="package.sale_key_reserved",
            field="idempotency_key",
        )
    first = await _replay(merchant_id=merchant_id, member_id=member_id, template_id=template_id, sale_key=sale_key)
    if first is not None:
        return first, False
    if terms is None:
        terms = await terms_on_sale(merchant_id=merchant_id, template_id=template_id, store_id=store_id)
    return await _sell(
        merchant_id=merchant_id,
        member_id=member_id,
        terms=terms,
        sale_key=sale_key,
        payments=payments,
        store_id=store_id,
        staff_id=staff_id,
        actor=f"staff:{staff_id}" if staff_id else ("member" if channel in ("mp", "pay") else "system"),
    )


async def buy_with_balance(
    *, merchant_id: int, member_id: int, template_id: int, store_id: int | None, idempotency_key: str
) -> tuple[MemberPackage, bool]:
    """A member buys an active package with stored value at its current price, once per key (409 too little)."""
    sale_key = f"{MP_KEY_PREFIX}{member_id}:{idempotency_key}"
    first = await _replay(merchant_id=merchant_id, member_id=member_id, template_id=template_id, sale_key=sale_key)
    if first is not None:
        return first, False
    terms = await terms_on_sale(merchant_id=merchant_id, template_id=template_id, store_id=store_id)
    return await sell_package(
        merchant_id=merchant_id,
        member_id=member_id,
        template_id=template_id,
        sale_key=sale_key,
        payments=[{"method": "balance", "amount": terms.price}],
        store_id=store_id,
        staff_id=None,
        terms=terms,
        channel="mp",
    )


def pay_order_key(order_id: int) -> str:
    """The sale key of the package a WeChat Pay order delivers."""
    return f"{PAY_KEY_PREFIX}{order_id}"


def pay_order_of(package: MemberPackage) -> int | None:
    """The WeChat Pay order that paid for the package, if one did (its refund goes back through WeChat Pay)."""
    number = package.sale_key.removeprefix(PAY_KEY_PREFIX)
    return int(number) if package.sale_key.startswith(PAY_KEY_PREFIX) and number.isdigit() else None


async def package_of_pay_order(*, merchant_id: int, order_id: int) -> MemberPackage:
    """The package a paid order delivered (404 when none was)."""
    package = await MemberPackage.get_or_none(merchant_id=merchant_id, sale_key=pay_order_key(order_id))
    if package is None:
        raise NotFound("the order delivered no package", code="package.not_found")
    return package


async def _sell(
    *,
    merchant_id: int,
    member_id: int,
    terms: Terms,
    sale_key: str,
    payments: list[dict[str, int | str]],
    store_id: int | None,
    staff_id: int | None,
    actor: str,
) -> tuple[MemberPackage, bool]:
    balance_paid = _check_payments(payments, terms.price)
    now = clock.now()
    zone = await merchant_zone(merchant_id=merchant_id)
    length = terms.days if terms.kind == "time" else terms.valid_days
    uses = int(terms.uses or 0) if terms.kind == "uses" else 0
    try:
        async with in_transaction():
            package = await MemberPackage.create(
                merchant_id=merchant_id,
                member_id=member_id,
                template_id=terms.template_id,
                kind=terms.kind,
                name=terms.name,
                uses_total=uses,
                uses_left=uses,
                days_total=int(terms.days or 0),
                store_ids=list(terms.store_ids),
                valid_from=now,
                valid_until=end_after(now, length, zone) if length else None,
                price_paid=terms.price,
                payments=payments,
                balance_paid=balance_paid,
                sale_key=sale_key,
                sold_at=now,
                sold_by=staff_id,
                store_id=store_id,
            )
            if balance_paid:
                debit = await ledger.change_balance(
                    merchant_id=merchant_id,
                    member_id=member_id,
                    delta=-balance_paid,
                    kind="pay",
                    reason=f"套餐 {terms.name}",
                    idempotency_key=f"package:{sale_key}",
                    ref_type="member_package",
                    ref_id=str(package.id),
                    operator_staff_id=staff_id,
                    savepoint=False,
                )
                package.balance_entry_id = debit.entry.id
                await MemberPackage.filter(id=package.id).update(balance_entry_id=debit.entry.id)
            await timeline.record(
                merchant_id=merchant_id,
                member_id=member_id,
                kind="package_sold",
                actor=actor,
                detail={"package_id": package.id, "template_id": terms.template_id, "price": terms.price},
            )
    except IntegrityError:
        first = await _replay(
            merchant_id=merchant_id, member_id=member_id, template_id=terms.template_id, sale_key=sale_key
        )
        if first is None:
            raise
        return first, False
    return package, True


async def get_package(*, scope: Scope, member_id: int, package_id: int) -> MemberPackage:
    """A package of a member the scope sees (404 otherwise)."""
    package = await MemberPackage.get_or_none(id=package_id, member_id=member_id, **member_rows(scope))
    if package is None:
        raise NotFound("package not found", code="package.not_found")
    return package


async def list_packages(
    *, merchant_id: int, member_id: int, status: str | None, limit: int = 100
) -> list[MemberPackage]:
    """A member's packages, newest first (bounded)."""
    query = MemberPackage.filter(merchant_id=merchant_id, member_id=member_id)
    if status:
        query = query.filter(status=status)
    return await query.order_by("-sold_at", "-id").limit(limit)


def refund_due(package: MemberPackage, *, now_days_left: int) -> int:
    """Unused share of the price, floored: uses left of uses total, or days left of the pass's days."""
    if package.kind == "time":
        total = package.days_total
        return package.price_paid * min(now_days_left, total) // total if total else 0
    return package.price_paid * package.uses_left // package.uses_total if package.uses_total else 0


def check_refund(package: MemberPackage, *, refund_key: str, store_id: int | None) -> bool:
    """True for a repeat of the package's own refund (nothing to do); 409 refunded or used up, 403 another store."""
    if package.status == "refunded":
        if package.refund_key == refund_key:
            return True
        raise Conflict("the package was already refunded", code="package.refunded")
    if package.status not in REFUNDABLE:
        raise Conflict(f"a package that is {package.status} is not refunded", code=f"package.{package.status}")
    if store_id is not None and package.store_id not in (None, store_id):
        raise Forbidden("staff of one store refund packages sold there", code="auth.store_scope")
    return False


async def refund_quote(package: MemberPackage) -> tuple[int, int]:
    """What refunding the package now gives back: (amount, of which to stored value)."""
    zone = await merchant_zone(merchant_id=package.merchant_id)
    left = days_left(now=clock.now(), valid_until=package.valid_until, zone=zone) if package.valid_until else 0
    amount = refund_due(package, now_days_left=left)
    to_balance = amount * package.balance_paid // package.price_paid if package.price_paid else 0
    return amount, to_balance


async def refund_package(
    *, scope: Scope, member_id: int, package_id: int, refund_key: str, staff_id: int | None, store_id: int | None
) -> tuple[MemberPackage, bool]:
    """Refund the unused part once; stored value goes back to the lots it came from. (package, refunded now)."""
    package = await get_package(scope=scope, member_id=member_id, package_id=package_id)
    if check_refund(package, refund_key=refund_key, store_id=store_id):
        return package, False
    if pay_order_of(package) is not None:  # its money goes back through WeChat Pay (models.payments.refunds)
        raise Conflict("a package paid with WeChat Pay is refunded through WeChat Pay", code="package.paid_by_wechat")
    amount, to_balance = await refund_quote(package)
    try:
        return await write_refund(
            package, amount=amount, to_balance=to_balance, refund_key=refund_key, staff_id=staff_id
        )
    except _Changed:
        again = await MemberPackage.get(id=package.id)
        if again.status == "refunded" and again.refund_key == refund_key:
            return again, False  # the same refund, sent twice at once
        if again.status == "refunded":
            raise Conflict("the package was already refunded", code="package.refunded") from None
        raise


async def write_refund(
    package: MemberPackage, *, amount: int, to_balance: int, refund_key: str, staff_id: int | None
) -> tuple[MemberPackage, bool]:
    """Close the package as refunded (a savepoint inside a caller's transaction, e.g. a WeChat Pay refund's),
    putting `to_balance` back on the sale's lots; 409 package.changed if a use or a refund came in between."""
    now, member_id = clock.now(), package.member_id
    async with in_transaction():
        # the read values are the guard: a use or a refund in between changes them, and this refund writes nothing
        changed = await MemberPackage.filter(
            id=package.id, status="active", uses_left=package.uses_left, uses_count=package.uses_count
        ).update(
            status="refunded", refund_key=refund_key, refund_amount=amount, refund_balance=to_balance, refunded_at=now
        )
        if changed != 1:
            raise _Changed
        if to_balance and package.balance_entry_id:
            await ledger.change_balance(
                merchant_id=package.merchant_id,
                member_id=member_id,
                delta=to_balance,
                kind="reverse",
                reason=f"套餐退款 {package.name}",
                idempotency_key=f"package-refund:{package.id}",
                ref_type="balance_entry",  # restores the sale's debit to the same lots
                ref_id=str(package.balance_entry_id),
                operator_staff_id=staff_id,
                savepoint=False,
            )
        await timeline.record(
            merchant_id=package.merchant_id,
            member_id=member_id,
            kind="package_refunded",
            actor=f"staff:{staff_id}" if staff_id else "system",
            detail={"package_id": package.id, "amount": amount, "to_balance": to_balance},
        )
    return await MemberPackage.get(id=package.id), True


class _Changed(Conflict):
    def __init__(self) -> None:
        super().__init__("the package changed while refunding; try again", code="package.changed")
