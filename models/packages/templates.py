"""Package templates: what a merchant sells (N uses of a service, or a time pass), and the rules of each."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from models.kernel.errors import Conflict, NotFound, Unprocessable
from models.packages.tables import KINDS, TEMPLATE_STATUSES, PackageTemplate
from models.tenancy.merchants import Store

MAX_PRICE = 10**10  # fen
NULLABLE = ("uses", "days", "valid_days")
EDITABLE = ("name", "price", "valid_days", "service_sku", "service_category", "store_ids", "status", "uses", "days")


async def _check(*, merchant_id: int, data: dict[str, Any]) -> None:
    kind = data.get("kind")
    if kind not in KINDS:
        raise Unprocessable("kind must be uses or time", code="package.kind_invalid", field="kind")
    if kind == "uses" and not data.get("uses"):
        raise Unprocessable("a uses package needs uses >= 1", code="package.uses_required", field="uses")
    if kind == "time" and not data.get("days"):
        raise Unprocessable("a time pass needs days >= 1", code="package.days_required", field="days")
    if kind == "time" and data.get("valid_days") is not None:
        raise Unprocessable("a time pass lasts `days`", code="package.valid_days_invalid", field="valid_days")
    if data.get("status", "active") not in TEMPLATE_STATUSES:
        raise Unprocessable("status must be active or retired", code="package.status_invalid", field="status")
    store_ids = sorted(set(data.get("store_ids") or []))
    if store_ids and await Store.filter(merchant_id=merchant_id, id__in=store_ids).count() != len(store_ids):
        raise Unprocessable("a store is not the merchant's", code="package.store_unknown", field="store_ids")


async def create_template(*, merchant_id: int, data: dict[str, Any]) -> PackageTemplate:
    """A new template, active; uses packages name N, time passes their days."""
    await _check(merchant_id=merchant_id, data=data)
    kind = data["kind"]
    return await PackageTemplate.create(
        merchant_id=merchant_id,
        name=data["name"],
        kind=kind,
        uses=data.get("uses") if kind == "uses" else None,
        days=data.get("days") if kind == "time" else None,
        price=data["price"],
        valid_days=data.get("valid_days"),
        service_sku=data.get("service_sku") or "",
        service_category=data.get("service_category") or "",
        store_ids=sorted(set(data.get("store_ids") or [])),
        status=data.get("status", "active"),
    )


async def get_template(*, merchant_id: int, template_id: int) -> PackageTemplate:
    """A template of this merchant (404 otherwise)."""
    template = await PackageTemplate.get_or_none(id=template_id, merchant_id=merchant_id)
    if template is None:
        raise NotFound("package template not found", code="package.template_not_found")
    return template


async def list_templates(*, merchant_id: int, status: str | None, limit: int = 200) -> list[PackageTemplate]:
    """The merchant's templates, newest first (bounded)."""
    query = PackageTemplate.filter(merchant_id=merchant_id)
    if status:
        query = query.filter(status=status)
    return await query.order_by("-created_at", "-id").limit(limit)


async def update_template(*, merchant_id: int, template_id: int, changes: dict[str, Any]) -> PackageTemplate:
    """Change a template; packages already sold keep what they were sold with."""
    template = await get_template(merchant_id=merchant_id, template_id=template_id)
    changes = {name: value for name, value in changes.items() if value is not None or name in NULLABLE}
    merged = {name: getattr(template, name) for name in (*EDITABLE, "kind")} | changes
    await _check(merchant_id=merchant_id, data=merged)
    for name in EDITABLE:
        if name in changes:
            value = sorted(set(changes[name] or [])) if name == "store_ids" else changes[name]
            setattr(template, name, value)
    await template.save()
    return template


async def check_store(*, merchant_id: int, store_id: int | None) -> None:
    """A store named at the till is one of the merchant's (422 otherwise)."""
    if store_id is not None and not await Store.exists(id=store_id, merchant_id=merchant_id):
        raise Unprocessable("store not found", code="package.store_unknown", field="store_id")


@dataclass(frozen=True)
class Terms:
    """What a package is sold as: the template's rules and price at one moment (a pay order keeps a copy)."""

    template_id: int
    name: str
    kind: str
    uses: int | None
    days: int | None
    price: int
    valid_days: int | None
    store_ids: list[int]

    @classmethod
    def of(cls, template: PackageTemplate) -> Terms:
        return cls(
            template_id=template.id,
            name=template.name,
            kind=template.kind,
            uses=template.uses,
            days=template.days,
            price=int(template.price),
            valid_days=template.valid_days,
            store_ids=list(template.store_ids),
        )

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any]) -> Terms:
        return cls(
            template_id=int(snapshot["template_id"]),
            name=str(snapshot["name"]),
            kind=str(snapshot["kind"]),
            uses=snapshot.get("uses"),
            days=snapshot.get("days"),
            price=int(snapshot["price"]),
            valid_days=snapshot.get("valid_days"),
            store_ids=[int(store_id) for store_id in snapshot.get("store_ids") or []],
        )

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)


def check_coverage(terms: Terms, *, store_id: int | None) -> None:
    """A store-bound package is sold only in its stores (422 otherwise)."""
    if store_id is not None and terms.store_ids and store_id not in terms.store_ids:
        raise Unprocessable(
            "this package is not sold in this store", code="package.store_not_covered", field="store_id"
        )


async def terms_on_sale(*, merchant_id: int, template_id: int, store_id: int | None) -> Terms:
    """The terms of an active template, for a sale in this store (404 unknown, 409 retired, 422 store)."""
    template = await get_template(merchant_id=merchant_id, template_id=template_id)
    await check_store(merchant_id=merchant_id, store_id=store_id)
    if template.status != "active":
        raise Conflict("this package is no longer sold", code="package.template_retired")
    terms = Terms.of(template)
    check_coverage(terms, store_id=store_id)
    return terms
