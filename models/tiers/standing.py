"""Where a member stands: the tier their basis earns, immediate upgrades, gifts, and every recorded tier move."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from models.kernel import clock, sqlpath
from models.kernel.config_cache import CONFIG
from models.kernel.hooks import Hook
from models.kernel.sqlpath import Stmt
from models.ledger import books as ledger
from models.plans.terms import MemberPlan, PaidPlan
from models.tenancy.onboarding_settings import get_onboarding_settings
from models.tiers.growth import basis_sql, basis_value
from models.tiers.policy import LocalCalendar, TierPolicy, get_policy, keep_until_from, local_calendar
from models.tiers.tables import MemberTier, Tier, TierChange, TierGiftGrant

NO_RANK = -1
# listeners (merchant_id=, member_id=) run in the transaction of every recorded tier move; see server/wiring.py
TIER_CHANGED = Hook("tiers.changed")
# (merchant_id=, member_id=, coupons=[{template_id, quantity}], key_prefix=): coupons sit above tiers; server/wiring.py
GIFT_COUPONS = Hook("tiers.gift_coupons")


def rank_of(tier: Tier | None) -> int:
    return tier.rank if tier is not None else NO_RANK


async def active_tiers(*, merchant_id: int) -> list[Tier]:
    """The merchant's active tiers, lowest rank first (empty: the merchant does not use tiers); the tiers are shared."""
    return list(await CONFIG.get("active_tiers", merchant_id, lambda: _load_active_tiers(merchant_id)))


async def _load_active_tiers(merchant_id: int) -> tuple[Tier, ...]:
    return tuple(await Tier.filter(merchant_id=merchant_id, is_active=True).order_by("rank"))


def tier_for_value(tiers: list[Tier], value: int) -> Tier | None:
    """The highest tier whose threshold the value reaches."""
    reached = [t for t in tiers if t.threshold <= value]
    return reached[-1] if reached else None


def current_of(row: MemberTier | None, tiers: list[Tier]) -> Tier | None:
    """A member's tier: their row's tier while it is active, else the entry tier (a new member starts there)."""
    return tier_by_id(tiers, row.tier_id if row is not None else None)


def tier_by_id(tiers: list[Tier], tier_id: int | None) -> Tier | None:
    """current_of for a tier id (None: no row or no tier yet), e.g. one read with raw SQL."""
    for tier in tiers:
        if tier_id is not None and tier.id == tier_id:
            return tier
    return tier_for_value(tiers, 0)


def pick_target(tiers: list[Tier], value: int | None, plan_tier_ids: Iterable[int]) -> tuple[Tier | None, str]:
    """The tier a basis figure earns, with running plans' tiers as a floor under it: (tier, "basis" | "plan")."""
    by_basis = tier_for_value(tiers, value if value is not None else 0)
    by_id = {t.id: t for t in tiers}
    best_plan = max((by_id[i] for i in plan_tier_ids if i in by_id), key=rank_of, default=None)
    if rank_of(best_plan) > rank_of(by_basis):
        return best_plan, "plan"
    return by_basis, "basis"


async def active_plans(*, member_id: int, now: datetime) -> list[PaidPlan]:
    """The paid plans a member holds right now."""
    plan_ids = await MemberPlan.filter(
        Q(ends_at=None) | Q(ends_at__gt=now), member_id=member_id, status="active", starts_at__lte=now
    ).values_list("plan_id", flat=True)
    return await PaidPlan.filter(id__in=list(plan_ids)) if plan_ids else []


@dataclass(frozen=True)
class Target:
    tier: Tier | None
    source: str  # "basis" | "plan"
    value: int | None  # the basis figure (None for paid_plan)


def plans_sql(*, member_id: int, now: datetime, column: str) -> tuple[str, tuple[object, ...]]:
    """A column of the member's running plans as one SQL expression for a batched write's pre-read.

    column "tiers": their tier ids, comma-separated (NULL: none); "multiplier": the largest points multiplier.
    """
    picked = "GROUP_CONCAT(p.tier_id)" if column == "tiers" else "MAX(p.points_multiplier_permille)"
    return (
        f"(SELECT {picked} FROM member_plan mp JOIN paid_plan p ON p.id = mp.plan_id WHERE mp.member_id = %s"  # noqa: S608
        " AND mp.status = 'active' AND mp.starts_at <= %s AND (mp.ends_at IS NULL OR mp.ends_at > %s))",
        (member_id, sqlpath.db_time(now), sqlpath.db_time(now)),
    )


def upgrade_due(*, tiers: list[Tier], tier_id: int | None, basis: int | None, plan_tier_ids: str | None) -> bool:
    """Whether upgrade_in_transaction would move a member up, from figures a batched write pre-read under the
    member's locks (basis already including what the write adds; plan tier ids comma-separated); without tiers,
    never."""
    if not tiers:
        return False
    target, _ = pick_target(tiers, basis, [int(i) for i in (plan_tier_ids or "").split(",") if i])
    return rank_of(target) > rank_of(tier_by_id(tiers, tier_id))


async def upgrade_probe(*, merchant_id: int, member_id: int) -> Stmt | None:
    """A statement that reads, at the end of a batched write, what upgrade_due needs (None: no tiers to reach)."""
    if not await active_tiers(merchant_id=merchant_id):
        return None
    policy, calendar = await get_policy(merchant_id=merchant_id), await local_calendar(merchant_id=merchant_id)
    basis, basis_params = basis_sql(policy=policy, calendar=calendar, member_id=member_id)
    plans, plans_params = plans_sql(member_id=member_id, now=calendar.now, column="tiers")
    return Stmt(
        f"SELECT (SELECT tier_id FROM member_tier WHERE member_id = %s), {basis}, {plans}",  # noqa: S608
        (member_id, *basis_params, *plans_params),
        rows=True,
    )


async def probe_says_upgrade(*, merchant_id: int, row: tuple[Any, ...]) -> bool:
    """upgrade_due from the row an upgrade_probe statement read."""
    tier_id, basis, plan_tier_ids = row
    return upgrade_due(
        tiers=await active_tiers(merchant_id=merchant_id),
        tier_id=tier_id,
        basis=None if basis is None else int(basis),
        plan_tier_ids=plan_tier_ids,
    )


async def target_of(
    *, policy: TierPolicy, calendar: LocalCalendar, tiers: list[Tier], member_id: int, as_of: date
) -> Target:
    """The tier the member's basis earns on `as_of`; a running paid plan's tier is a floor under it."""
    value = await basis_value(policy=policy, calendar=calendar, member_id=member_id, as_of=as_of)
    plans = await active_plans(member_id=member_id, now=calendar.now)
    tier, source = pick_target(tiers, value, [p.tier_id for p in plans if p.tier_id])
    return Target(tier, source, value)


def rule_snapshot(*, policy: TierPolicy, tiers: list[Tier], value: int | None) -> dict[str, Any]:
    """What a tier move was decided on: the policy, the thresholds and the member's basis figure."""
    return {
        "basis": policy.basis,
        "basis_value": value,
        "policy": policy.model_dump(),
        "tiers": [{"code": t.code, "rank": t.rank, "threshold": t.threshold} for t in tiers],
    }


async def locked_member_tier(*, merchant_id: int, member_id: int) -> MemberTier:
    """The member's tier row, created on first use and locked for this transaction."""
    row = await MemberTier.filter(member_id=member_id).select_for_update().first()
    if row is not None:
        return row
    try:
        async with in_transaction():
            await MemberTier.create(merchant_id=merchant_id, member_id=member_id, tier_id=None, since=clock.now())
    except IntegrityError:
        pass  # created by a concurrent transaction: lock that one
    return await MemberTier.filter(member_id=member_id).select_for_update().get()


@dataclass(frozen=True)
class Move:
    to_tier: Tier | None
    reason: str  # upgrade | settlement | manual | manual_expired | plan | package
    detail: str
    value: int | None
    operator_staff_id: int | None = None


async def _grant_gift(*, row: MemberTier, tier: Tier, policy: TierPolicy, calendar: LocalCalendar) -> None:
    gift = tier.upgrade_gift or {}
    points, balance = int(gift.get("points") or 0), int(gift.get("balance") or 0)
    if not (points or balance or gift.get("coupons")):
        return
    period = "once" if policy.gift_period == "once" else f"{calendar.today.year:04d}"
    try:
        async with in_transaction():
            grant = await TierGiftGrant.create(
                merchant_id=row.merchant_id, member_id=row.member_id, tier_id=tier.id, period=period, gift=gift
            )
    except IntegrityError:
        return  # this tier's gift was already given in this period
    reason, key = f"升级礼包 {tier.name}", f"tier_gift:{grant.id}"
    for amount, change in ((points, ledger.change_points), (balance, ledger.change_balance)):
        if amount:
            await change(
                merchant_id=row.merchant_id,
                member_id=row.member_id,
                delta=amount,
                kind="gift",
                reason=reason,
                idempotency_key=key,
                ref_type="tier_gift",
                ref_id=str(grant.id),
            )
    if gift.get("coupons"):
        await GIFT_COUPONS.emit(
            merchant_id=row.merchant_id, member_id=row.member_id, coupons=list(gift["coupons"]), key_prefix=key
        )


async def apply_move(
    *,
    row: MemberTier,
    tiers: list[Tier],
    policy: TierPolicy,
    calendar: LocalCalendar,
    move: Move,
    keep_until: datetime | None,
    manual_until: datetime | None = None,
    manual_reason: str = "",
) -> TierChange:
    """Move a locked member to a tier: the row, a TierChange, the card sync and (going up) the upgrade gift."""
    current = current_of(row, tiers)
    row.tier_id = move.to_tier.id if move.to_tier is not None else None
    row.since, row.keep_until = calendar.now, keep_until
    row.manual_until, row.manual_reason = manual_until, manual_reason[:255]
    await row.save(update_fields=["tier_id", "since", "keep_until", "manual_until", "manual_reason", "updated_at"])
    change = await TierChange.create(
        merchant_id=row.merchant_id,
        member_id=row.member_id,
        from_tier_id=current.id if current is not None else None,
        to_tier_id=row.tier_id,
        reason=move.reason,
        detail=move.detail[:255],
        rule_snapshot=rule_snapshot(policy=policy, tiers=tiers, value=move.value),
        operator_staff_id=move.operator_staff_id,
    )
    await TIER_CHANGED.emit(merchant_id=row.merchant_id, member_id=row.member_id)
    if move.to_tier is not None and rank_of(move.to_tier) > rank_of(current):
        await _grant_gift(row=row, tier=move.to_tier, policy=policy, calendar=calendar)
    return change


async def upgrade_in_transaction(
    *, merchant_id: int, member_id: int, detail: str, row: MemberTier | None = None
) -> TierChange | None:
    """Inside the caller's transaction: move the member up at once if their basis or a plan earns a higher tier.

    row: the member's tier row when the caller already holds it locked in this transaction (saves the re-read).
    """
    tiers = await active_tiers(merchant_id=merchant_id)
    if not tiers:
        return None
    if row is None:
        row = await locked_member_tier(merchant_id=merchant_id, member_id=member_id)
    policy, calendar = await get_policy(merchant_id=merchant_id), await local_calendar(merchant_id=merchant_id)
    current = current_of(row, tiers)
    target = await target_of(policy=policy, calendar=calendar, tiers=tiers, member_id=member_id, as_of=calendar.today)
    if rank_of(target.tier) <= rank_of(current):
        return None
    reason = "plan" if target.source == "plan" else "upgrade"
    return await apply_move(
        row=row,
        tiers=tiers,
        policy=policy,
        calendar=calendar,
        move=Move(target.tier, reason, detail, target.value),
        keep_until=keep_until_from(calendar, policy),
        manual_until=row.manual_until,
        manual_reason=row.manual_reason,
    )


async def reevaluate(*, merchant_id: int, member_id: int, reason: str) -> None:
    """Upgrade the member at once if any basis (growth, recharge, a paid plan) now earns a higher tier; never down."""
    if not await active_tiers(merchant_id=merchant_id):  # the cached list: no read when the merchant has no tiers
        return

    async def work() -> None:
        async with in_transaction():
            await upgrade_in_transaction(merchant_id=merchant_id, member_id=member_id, detail=reason)

    await ledger.retrying(work, what="tier reevaluation")


async def current_tier(*, merchant_id: int, member_id: int) -> Tier | None:
    """The member's tier now (None when the merchant has no tiers)."""
    tiers = await active_tiers(merchant_id=merchant_id)
    if not tiers:
        return None
    return current_of(await MemberTier.get_or_none(member_id=member_id), tiers)


async def tier_name(*, merchant_id: int, member_id: int) -> str:
    """The one name of a member's tier (card, mini-program, staff views): their tier's, else the merchant's default."""
    tier = await current_tier(merchant_id=merchant_id, member_id=member_id)
    if tier is not None:
        return tier.name
    return (await get_onboarding_settings(merchant_id=merchant_id)).tier_name


async def points_multiplier_permille(*, merchant_id: int, member_id: int) -> int:
    """The member's points multiplier: their tier's, or a running paid plan's when larger; 1000 when none applies."""
    tier = await current_tier(merchant_id=merchant_id, member_id=member_id)
    best = tier.points_multiplier_permille if tier is not None else 1000
    for plan in await active_plans(member_id=member_id, now=clock.now()):
        best = max(best, plan.points_multiplier_permille)
    return best
