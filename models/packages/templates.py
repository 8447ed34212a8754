"""Package templates: what a merchant sells (N uses of a service, or a time pass), and the rules of each."""

from __future__ import annotations

from typing import Any

from models.kernel.errors import NotFound, Unprocessable
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
