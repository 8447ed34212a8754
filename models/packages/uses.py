"""Visits: each takes one use of a package (a time pass: one visit a local day), never below zero, once per visit."""

from __future__ import annotations

from datetime import datetime

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q
from tortoise.transactions import in_transaction

from models.kernel import clock
from models.kernel.errors import Conflict, NotFound, Unprocessable
from models.packages.calendar import local_day
from models.packages.sales import get_package
from models.packages.tables import MemberPackage, PackageUse
from models.packages.templates import check_store
from models.tenancy.merchants import merchant_zone
from models.tenancy.visibility import Scope

EXPIRE_BATCH = 500


async def _first_use(package_id: int, visit_key: str) -> PackageUse | None:
    return await PackageUse.get_or_none(member_package_id=package_id, visit_key=visit_key)


def _refusal(package: MemberPackage, now: datetime) -> Conflict:
    """Why a use was refused, read after the guard said no."""
    if package.status == "refunded":
        return Conflict("the package was refunded", code="package.refunded")
    if package.status == "expired" or (package.valid_until is not None and package.valid_until <= now):
        return Conflict("the package has expired", code="package.expired")
    return Conflict("no uses left on this package", code="package.used_up")


async def take_use(*, package_id: int, now: datetime, counts_down: bool) -> bool:
    """The guard: one use of an active, unexpired package with a use left (a time pass only counts visits)."""
    guard = MemberPackage.filter(Q(valid_until__isnull=True) | Q(valid_until__gt=now), id=package_id, status="active")
    if counts_down:
        guard = guard.filter(uses_left__gte=1)
        return await guard.update(uses_left=F("uses_left") - 1, uses_count=F("uses_count") + 1) == 1
    return await guard.update(uses_count=F("uses_count") + 1) == 1


async def use_package(
    *,
    scope: Scope,
    member_id: int,
    package_id: int,
    visit_key: str,
    store_id: int | None,
    staff_id: int | None,
) -> tuple[PackageUse, bool]:
    """Record a visit once per visit key (a repeat is the first answer); (use, created)."""
    package = await get_package(scope=scope, member_id=member_id, package_id=package_id)
    first = await _first_use(package.id, visit_key)
    if first is not None:
        return first, False
    await check_store(merchant_id=package.merchant_id, store_id=store_id)
    if store_id is not None and package.store_ids and store_id not in package.store_ids:
        raise Unprocessable("the package does not cover this store", code="package.store_not_covered", field="store_id")
    now = clock.now()
    day = local_day(now, await merchant_zone(merchant_id=package.merchant_id)) if package.kind == "time" else None
    try:
        async with in_transaction():
            if not await take_use(package_id=package.id, now=now, counts_down=package.kind == "uses"):
                raise _refusal(await MemberPackage.get(id=package.id), now)
            use = await PackageUse.create(
                merchant_id=package.merchant_id,
                member_package_id=package.id,
                visit_key=visit_key,
                day=day,
                store_id=store_id,
                staff_id=staff_id,
                at=now,
            )
            if package.kind == "uses":
                await MemberPackage.filter(id=package.id, uses_left=0, status="active").update(status="used_up")
    except IntegrityError:
        first = await _first_use(package.id, visit_key)
        if first is not None:
            return first, False
        raise Conflict("the pass was already used today", code="package.used_today") from None
    except Conflict:
        first = await _first_use(package.id, visit_key)  # the same visit, sent twice at once, took the last use
        if first is not None:
            return first, False
        raise
    return use, True


async def reverse_use(*, scope: Scope, member_id: int, package_id: int, use_id: int) -> PackageUse:
    """Undo a visit once: the use comes back (a repeat changes nothing)."""
    package = await get_package(scope=scope, member_id=member_id, package_id=package_id)
    use = await PackageUse.get_or_none(id=use_id, member_package_id=package.id)
    if use is None:
        raise NotFound("use not found", code="package.use_not_found")
    if use.reversed_at is not None:
        return use
    now = clock.now()
    async with in_transaction():
        if await PackageUse.filter(id=use.id, reversed_at__isnull=True).update(reversed_at=now, day=None) != 1:
            return await PackageUse.get(id=use.id)
        back = MemberPackage.filter(id=package.id, status__in=("active", "used_up", "expired"))
        changes = {"uses_count": F("uses_count") - 1}
        if package.kind == "uses":
            changes["uses_left"] = F("uses_left") + 1
        if await back.update(**changes) != 1:
            raise Conflict("a refunded package's uses are not given back", code="package.refunded")
        await MemberPackage.filter(id=package.id, status="used_up", uses_left__gte=1).update(status="active")
    return await PackageUse.get(id=use.id)


async def list_uses(*, package_id: int, limit: int = 100) -> list[PackageUse]:
    """A package's visits, newest first (bounded)."""
    return await PackageUse.filter(member_package_id=package_id).order_by("-at", "-id").limit(limit)


async def expire_due_packages(*, now: datetime, batch: int = EXPIRE_BATCH) -> int:
    """Mark active packages past their validity expired, in bounded batches; each id once (guarded UPDATE)."""
    expired = 0
    while True:
        ids = (
            await MemberPackage.filter(status="active", valid_until__lte=now).limit(batch).values_list("id", flat=True)
        )
        if not ids:
            return expired
        expired += await MemberPackage.filter(id__in=list(ids), status="active", valid_until__lte=now).update(
            status="expired"
        )
        if len(ids) < batch:
            return expired
