"""Coupon templates: create, update, void, list and get, with the rules their terms must follow."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from models.coupons.tables import CHANNELS, KINDS, CouponTemplate
from models.kernel import clock
from models.kernel.errors import Conflict, NotFound, Unprocessable
from models.tenancy.merchants import merchant_zone

AMOUNT_FIELDS = ("kind", "threshold", "reduction", "discount_permille", "max_discount", "gift_sku")
LIST_FIELDS = ("store_ids", "sku_include", "sku_exclude", "category_include", "category_exclude", "tier_ids")
MAX_FEN = 10**12


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The UTC instant at which a merchant-local day starts."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def local_day(instant: datetime, zone: ZoneInfo) -> date:
    return instant.astimezone(zone).date()


def last_day(until: datetime, zone: ZoneInfo) -> date:
    """The last merchant-local day of a validity that ends (exclusively) at this instant."""
    return (until - timedelta(microseconds=1)).astimezone(zone).date()


def parse_when(value: str, zone: ZoneInfo, *, end: bool, field: str) -> datetime:
    """An ISO datetime with offset, or a merchant-local date: its start (valid_from) or its end (valid_until)."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            if not 2000 <= day.year <= 2200:
                raise ValueError(day)
            return local_midnight(day + timedelta(days=1) if end else day, zone)
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise Unprocessable(
            f"{field}: an ISO date or datetime with offset", code="validation.failed", field=field
        ) from None
    if moment.tzinfo is None:
        raise Unprocessable(f"{field}: a datetime needs its UTC offset", code="validation.failed", field=field)
    if not 2000 <= moment.year <= 2200:
        raise Unprocessable(f"{field}: a year from 2000 to 2200", code="validation.failed", field=field)
    return moment.astimezone(UTC)


def _bad(message: str, field: str, code: str = "coupon_template.invalid") -> Unprocessable:
    return Unprocessable(message, code=code, field=field)


def validate_terms(t: dict[str, Any]) -> None:
    """The template's terms are consistent; raises 422 naming the field."""
    kind = t["kind"]
    if kind not in KINDS:
        raise _bad(f"kind is one of {', '.join(KINDS)}", "kind")
    for name in ("threshold", "reduction"):
        if not 0 <= t[name] <= MAX_FEN:
            raise _bad(f"{name} is fen from 0", name)
    if t["max_discount"] is not None and not 0 < t["max_discount"] <= MAX_FEN:
        raise _bad("max_discount is positive fen", "max_discount")
    if kind == "full_reduction":
        if t["reduction"] <= 0:
            raise _bad("a full reduction takes a positive reduction", "reduction")
        if t["threshold"] < t["reduction"]:
            raise _bad(
                "threshold must be at least the reduction", "threshold", "coupon_template.threshold_below_reduction"
            )
    elif kind == "discount":
        if not 1 <= t["discount_permille"] <= 999:
            raise _bad("discount_permille (off) is 1..999", "discount_permille")
    elif kind == "cash":
        if t["reduction"] <= 0:
            raise _bad("a cash coupon takes a positive reduction", "reduction")
    elif not t["gift_sku"]:
        raise _bad("a gift coupon names its gift_sku", "gift_sku")
    fixed = t["valid_until"] is not None or t["valid_from"] is not None
    if fixed and t["valid_days"] is not None:
        raise _bad("validity is fixed dates or valid_days, not both", "valid_days", "coupon_template.validity")
    if not fixed and t["valid_days"] is None:
        raise _bad("give valid_until (and valid_from) or valid_days", "valid_until", "coupon_template.validity")
    if fixed:
        if t["valid_until"] is None:
            raise _bad("fixed validity needs valid_until", "valid_until", "coupon_template.validity")
        if t["valid_from"] is not None and t["valid_until"] <= t["valid_from"]:
            raise _bad("valid_until must be after valid_from", "valid_until", "coupon_template.validity")
    elif not 1 <= t["valid_days"] <= 3660:
        raise _bad("valid_days is 1..3660", "valid_days")
    if t["total_stock"] is not None and t["total_stock"] < 0:
        raise _bad("total_stock is 0 or more (null: unlimited)", "total_stock")
    if not 1 <= t["per_member_limit"] <= 100:
        raise _bad("per_member_limit is 1..100", "per_member_limit")
    channels = t["channels"]
    if not channels or any(c not in CHANNELS for c in channels) or len(set(channels)) != len(channels):
        raise _bad(f"channels: a list of distinct {', '.join(CHANNELS)}", "channels")


async def create(*, merchant_id: int, data: dict[str, Any]) -> CouponTemplate:
    """A new active template; fixed dates are read in the merchant's time zone."""
    zone = await merchant_zone(merchant_id=merchant_id)
    terms = {
        "kind": data["kind"],
        "name": data["name"],
        "description": data.get("description") or "",
        "threshold": data.get("threshold") or 0,
        "reduction": data.get("reduction") or 0,
        "discount_permille": data.get("discount_permille") or 0,
        "max_discount": data.get("max_discount"),
        "gift_sku": data.get("gift_sku"),
        "valid_from": parse_when(data["valid_from"], zone, end=False, field="valid_from")
        if data.get("valid_from")
        else None,
        "valid_until": parse_when(data["valid_until"], zone, end=True, field="valid_until")
        if data.get("valid_until")
        else None,
        "valid_days": data.get("valid_days"),
        "total_stock": data.get("total_stock"),
        "per_member_limit": data.get("per_member_limit") or 1,
        "channels": list(data.get("channels") or ["self", "staff"]),
        "stackable": data.get("stackable", True),
        "returnable": data.get("returnable", True),
        **{name: list(data.get(name) or []) for name in LIST_FIELDS},
    }
    validate_terms(terms)
    return await CouponTemplate.create(merchant_id=merchant_id, **terms)


async def get(*, merchant_id: int, template_id: int) -> CouponTemplate:
    """The merchant's template; another merchant's is not found."""
    template = await CouponTemplate.get_or_none(id=template_id, merchant_id=merchant_id)
    if template is None:
        raise NotFound("no such coupon template", code="coupon_template.not_found")
    return template


async def get_all(
    *, merchant_id: int, status: str | None = None, offset: int = 0, limit: int = 50
) -> tuple[int, list[CouponTemplate]]:
    """The merchant's templates, newest first."""
    query = CouponTemplate.filter(merchant_id=merchant_id, **({"status": status} if status else {}))
    return await query.count(), list(await query.order_by("-created_at", "-id").offset(offset).limit(limit))


async def update(*, merchant_id: int, template_id: int, changes: dict[str, Any]) -> CouponTemplate:
    """Change what may change: never the kind or amounts once issued, stock never below issued, validity only longer."""
    template = await get(merchant_id=merchant_id, template_id=template_id)
    zone = await merchant_zone(merchant_id=merchant_id)
    if template.status != "active":
        raise Conflict("a voided template does not change", code="coupon_template.voided")
    if template.issued > 0 and any(name in changes for name in AMOUNT_FIELDS):
        raise Conflict("kind and amounts are fixed once coupons are issued", code="coupon_template.in_use")
    terms = {name: getattr(template, name) for name in (*AMOUNT_FIELDS, "valid_from", "valid_days")}
    terms.update(
        {
            name: getattr(template, name)
            for name in ("valid_until", "total_stock", "per_member_limit", "channels", "name", "description")
        }
    )
    terms.update({k: v for k, v in changes.items() if k != "valid_until"})
    if "valid_until" in changes:
        if template.valid_until is None:
            raise _bad("this template's validity is valid_days after claim", "valid_until", "coupon_template.validity")
        until = parse_when(changes["valid_until"], zone, end=True, field="valid_until")
        if until < template.valid_until and template.issued > 0:
            raise Conflict("validity may only be extended once issued", code="coupon_template.in_use")
        terms["valid_until"] = until
    for name in ("threshold", "reduction", "discount_permille"):
        terms[name] = terms[name] or 0
    validate_terms(terms)
    stock = terms["total_stock"]
    fields = {k: terms[k] for k in changes if k in terms}
    if "total_stock" in changes and stock is not None:
        # guarded against a concurrent issue: the new stock is never below what is issued at this instant
        fields.pop("total_stock")
        changed = await CouponTemplate.filter(id=template.id, issued__lte=stock).update(total_stock=stock)
        if changed != 1:
            raise Conflict("total_stock cannot go below what is issued", code="coupon_template.stock_below_issued")
    if fields:
        fields["updated_at"] = clock.now()
        await CouponTemplate.filter(id=template.id).update(**fields)
    return await get(merchant_id=merchant_id, template_id=template_id)


async def void(*, merchant_id: int, template_id: int) -> CouponTemplate:
    """No new claims from now; coupons already claimed stay as they are. A repeat changes nothing."""
    template = await get(merchant_id=merchant_id, template_id=template_id)
    await CouponTemplate.filter(id=template.id, status="active").update(status="voided", updated_at=clock.now())
    return await get(merchant_id=merchant_id, template_id=template_id)
