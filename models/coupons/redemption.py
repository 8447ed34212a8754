"""What a coupon takes off an order, and its guarded redemption and restoration (the interface checkout codes to)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from models.coupons.changes import coupons_changed
from models.coupons.tables import Coupon, CouponTemplate
from models.kernel import clock
from models.kernel.errors import NotFound, Unprocessable
from models.kernel.sqlpath import Ref, Stmt, db_time


@dataclass(frozen=True)
class Line:
    """One order line after the tier discount."""

    index: int  # position in the order's items
    sku: str
    category: str | None
    amount: int  # fen, after the tier discount (what the coupon may reduce)
    unit_price: int  # fen, before any discount
    quantity: int


@dataclass(frozen=True)
class CouponTerms:
    """A member's coupon with its template's terms, read once."""

    coupon_id: int
    template_id: int
    member_id: int
    kind: str  # full_reduction | discount | cash | gift
    name: str
    threshold: int  # fen (0 = none)
    reduction: int  # fen (full_reduction, cash)
    discount_permille: int  # permille OFF (discount): 150 = 15 % off = 85折
    max_discount: int | None
    gift_sku: str | None
    stackable: bool  # usable together with the tier discount
    status: str  # usable | used | expired | voided
    valid_from: datetime  # UTC
    valid_until: datetime  # UTC
    returnable: bool  # goes back to the member when the whole order is returned (still valid)
    # applicability, checked by offer() (empty = all)
    store_ids: tuple[int, ...] = ()
    sku_include: tuple[str, ...] = ()
    sku_exclude: tuple[str, ...] = ()
    category_include: tuple[str, ...] = ()
    category_exclude: tuple[str, ...] = ()
    tier_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Offer:
    discount: int  # fen, total taken off by the coupon
    per_line: dict[int, int]  # line index -> fen of the discount on that line (sums to discount)


class CouponNotApplicable(Unprocessable):
    code = "coupon.not_applicable"


def terms_of(coupon: Coupon, template: CouponTemplate) -> CouponTerms:
    return CouponTerms(
        coupon_id=coupon.id,
        template_id=template.id,
        member_id=coupon.member_id,
        kind=template.kind,
        name=template.name,
        threshold=template.threshold,
        reduction=template.reduction,
        discount_permille=template.discount_permille,
        max_discount=template.max_discount,
        gift_sku=template.gift_sku,
        stackable=template.stackable,
        status=coupon.status,
        valid_from=coupon.valid_from,
        valid_until=coupon.valid_until,
        returnable=template.returnable,
        store_ids=tuple(template.store_ids or ()),
        sku_include=tuple(template.sku_include or ()),
        sku_exclude=tuple(template.sku_exclude or ()),
        category_include=tuple(template.category_include or ()),
        category_exclude=tuple(template.category_exclude or ()),
        tier_ids=tuple(template.tier_ids or ()),
    )


async def usable_coupon(*, merchant_id: int, member_id: int, coupon_id: int) -> CouponTerms:
    """The member's coupon with its terms; NotFound coupon.not_found for another member's or merchant's."""
    coupon = await Coupon.get_or_none(id=coupon_id, merchant_id=merchant_id, member_id=member_id)
    if coupon is None:
        raise NotFound("no such coupon for this member", code="coupon.not_found", field="coupon_id")
    template = await CouponTemplate.get(id=coupon.template_id)
    return terms_of(coupon, template)


def _eligible(terms: CouponTerms, line: Line) -> bool:
    """Included when no include list is set or the sku or category is listed; then never when excluded."""
    included = (not terms.sku_include and not terms.category_include) or (
        line.sku in terms.sku_include or (line.category is not None and line.category in terms.category_include)
    )
    excluded = line.sku in terms.sku_exclude or (line.category is not None and line.category in terms.category_exclude)
    return included and not excluded


def allocate(discount: int, lines: list[Line]) -> dict[int, int]:
    """Split a discount over lines in proportion to their amounts, largest remainder first (exact, deterministic)."""
    total = sum(line.amount for line in lines)
    if discount == 0 or total == 0:
        return {}
    shares = {line.index: discount * line.amount // total for line in lines}
    left = discount - sum(shares.values())
    by_remainder = sorted(lines, key=lambda line: (-(discount * line.amount % total), line.index))
    for line in by_remainder[:left]:
        shares[line.index] += 1
    return {index: fen for index, fen in shares.items() if fen}


def offer(terms: CouponTerms, lines: list[Line], *, store_id: int, tier_id: int | None, now: datetime) -> Offer:
    """What the coupon takes off these lines (pure); raises CouponNotApplicable with the reason."""
    if terms.status == "used":
        raise CouponNotApplicable("the coupon was used", reason="used")
    if terms.status != "usable" or now >= terms.valid_until:
        raise CouponNotApplicable("the coupon has expired", reason="expired")
    if now < terms.valid_from:
        raise CouponNotApplicable("the coupon is not valid yet", reason="not_yet_valid")
    if terms.store_ids and store_id not in terms.store_ids:
        raise CouponNotApplicable("the coupon is not for this store", reason="store")
    if terms.tier_ids and tier_id not in terms.tier_ids:
        raise CouponNotApplicable("the coupon is not for the member's tier", reason="tier")
    eligible = [line for line in lines if line.amount > 0 and _eligible(terms, line)]
    if not eligible:
        raise CouponNotApplicable("no item of the order is one the coupon applies to", reason="sku")
    base = sum(line.amount for line in eligible)
    if base < terms.threshold:
        raise CouponNotApplicable(f"the coupon needs {terms.threshold} fen of eligible items", reason="threshold")
    if terms.kind == "gift":
        gift = next((line for line in eligible if line.sku == terms.gift_sku and line.quantity > 0), None)
        if gift is None:
            raise CouponNotApplicable("the order has no gift item", reason="sku")
        one = gift.amount - gift.amount * (gift.quantity - 1) // gift.quantity  # one unit, after the tier discount
        return Offer(discount=one, per_line={gift.index: one} if one else {})
    if terms.kind == "discount":
        discount = base * terms.discount_permille // 1000
        if terms.max_discount is not None:
            discount = min(discount, terms.max_discount)
    else:  # full_reduction, cash
        discount = min(terms.reduction, base)
    return Offer(discount=discount, per_line=allocate(discount, eligible))


def redeem_statements(
    *, coupon_id: int, member_id: int, order_ref: str | Ref, now: datetime, guard: bool = False
) -> list[Stmt]:
    """redeem() as one statement for a sqlpath batch: its row count (1 or 0) says whether the batch took it
    (guard: a sqlpath guard, the batch stops with GuardFailed when another order used it or it expired).

    The batch's caller emits COUPONS_CHANGED (models.coupons.changes) in the same transaction when it took it.
    """
    return [
        Stmt(
            "UPDATE coupon SET status = 'used', used_at = %s, order_ref = %s"
            " WHERE id = %s AND member_id = %s AND status = 'usable' AND valid_until > %s",
            (db_time(now), order_ref, coupon_id, member_id, db_time(now)),
            guard=guard,
        )
    ]


async def redeem(*, merchant_id: int, coupon_id: int, member_id: int, order_ref: str) -> bool:
    """Take the coupon for this order, once: the guarded UPDATE's row count says whether this call took it.

    Call it inside the order's transaction: a taken coupon emits COUPONS_CHANGED there.
    """
    now = clock.now()
    taken = await Coupon.filter(id=coupon_id, member_id=member_id, status="usable", valid_until__gt=now).update(
        status="used", used_at=now, order_ref=order_ref
    )
    if taken == 1:
        await coupons_changed([(merchant_id, member_id)])
    return taken == 1


async def restore(*, coupon_id: int, order_ref: str) -> bool:
    """Back to usable when used by this order, still valid and its template returnable; False otherwise.

    A coupon whose pack was taken back while it was used (its recharge refunded) is voided instead: the member
    already kept it once, through the refund.
    """
    coupon = await Coupon.get_or_none(id=coupon_id)
    if coupon is None:
        return False
    used_here = Coupon.filter(id=coupon_id, status="used", order_ref=order_ref)
    if coupon.taken_back_at is not None:
        await used_here.filter(taken_back_at__isnull=False).update(status="voided", used_at=None, order_ref=None)
        return False
    if not await CouponTemplate.exists(id=coupon.template_id, returnable=True):
        return False
    back = await used_here.filter(taken_back_at__isnull=True, valid_until__gt=clock.now()).update(
        status="usable", used_at=None, order_ref=None
    )
    if back == 1:
        await coupons_changed([(coupon.merchant_id, coupon.member_id)])
    return back == 1


async def usable_for_member(*, merchant_id: int, member_id: int, now: datetime | None = None) -> list[CouponTerms]:
    """The member's usable coupons (status usable, valid now), soonest expiring first (bounded: LIMIT 100)."""
    at = now or clock.now()
    coupons = (
        await Coupon.filter(
            merchant_id=merchant_id, member_id=member_id, status="usable", valid_until__gt=at, valid_from__lte=at
        )
        .order_by("valid_until", "id")
        .limit(100)
    )
    templates = {t.id: t for t in await CouponTemplate.filter(id__in={c.template_id for c in coupons})}
    return [terms_of(coupon, templates[coupon.template_id]) for coupon in coupons]


async def count_usable(*, member_id: int, now: datetime | None = None) -> int:
    """How many coupons the member holds that are usable and unexpired now (what the member card shows).

    One not valid yet is counted: no event fires when its window opens, so the card could not catch up.
    """
    return await Coupon.filter(member_id=member_id, status="usable", valid_until__gt=now or clock.now()).count()
