"""Tier definitions a merchant edits, staff-assigned tiers, and what a member (or staff) sees of a tier."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from models.kernel.config_cache import config_change
from models.kernel.errors import Conflict, NotFound, Unprocessable
from models.ledger import books as ledger
from models.tiers.growth import growth_since, lifetime_growth, window_start
from models.tiers.policy import TierPolicy, get_policy, keep_until_from, local_calendar
from models.tiers.standing import Move, active_tiers, apply_move, current_of, locked_member_tier, rank_of, target_of
from models.tiers.tables import MemberTier, Tier, TierChange

TIER_FIELDS = (
    "code",
    "name",
    "rank",
    "threshold",
    "points_multiplier_permille",
    "discount_permille",
    "benefits",
    "upgrade_gift",
    "is_active",
)


async def list_tiers(*, merchant_id: int, include_inactive: bool = True) -> list[Tier]:
    """The merchant's tiers by rank."""
    query = Tier.filter(merchant_id=merchant_id)
    if not include_inactive:
        query = query.filter(is_active=True)
    return await query.order_by("rank", "id")


def _check_ladder(tiers: list[Tier]) -> None:
    """Active tiers must climb: rank 0 starts at 0, and each higher rank needs a strictly higher threshold."""
    ladder = sorted((t for t in tiers if t.is_active), key=lambda t: t.rank)
    for tier in ladder:
        if tier.points_multiplier_permille <= 0:
            raise Unprocessable(
                "the points multiplier must be positive",
                code="tier.multiplier_invalid",
                field="points_multiplier_permille",
            )
        if tier.rank == 0 and tier.threshold != 0:
            raise Unprocessable("the entry tier (rank 0) starts at 0", code="tier.threshold_overlap", field="threshold")
    for lower, higher in zip(ladder, ladder[1:], strict=False):
        if higher.threshold <= lower.threshold:
            raise Unprocessable(
                f"tier {higher.code!r} (rank {higher.rank}) must need more than {lower.code!r} ({lower.threshold})",
                code="tier.threshold_overlap",
                field="threshold",
            )


async def _save(*, merchant_id: int, tier: Tier, is_new: bool) -> Tier:
    async def work() -> Tier:
        async with config_change(merchant_id=merchant_id):
            others = [
                t for t in await Tier.filter(merchant_id=merchant_id).select_for_update() if is_new or t.id != tier.id
            ]
            if any(t.code == tier.code for t in others):
                raise Conflict(f"tier code {tier.code!r} is taken", code="tier.code_taken", field="code")
            if any(t.rank == tier.rank for t in others):
                raise Conflict(f"rank {tier.rank} is taken", code="tier.rank_taken", field="rank")
            _check_ladder([*others, tier])
            await tier.save()
        return tier

    try:
        return await ledger.retrying(work, what="tier save")
    except IntegrityError:
        raise Conflict("tier code or rank is taken", code="tier.code_taken", field="code") from None


async def create_tier(*, merchant_id: int, data: dict[str, Any]) -> Tier:
    """Add a tier; the merchant's active tiers must keep strictly increasing thresholds by rank."""
    tier = Tier(merchant_id=merchant_id, **{k: v for k, v in data.items() if k in TIER_FIELDS})
    return await _save(merchant_id=merchant_id, tier=tier, is_new=True)


async def update_tier(*, merchant_id: int, tier_id: int, data: dict[str, Any]) -> Tier:
    """Change a tier; members move on their next event or settlement, never retroactively."""
    tier = await Tier.get_or_none(id=tier_id, merchant_id=merchant_id)
    if tier is None:
        raise NotFound("tier not found", code="tier.not_found")
    for key, value in data.items():
        if key in TIER_FIELDS:
            setattr(tier, key, value)
    return await _save(merchant_id=merchant_id, tier=tier, is_new=False)


async def assign_tier(
    *, merchant_id: int, member_id: int, tier_code: str, reason: str, until: date, operator_staff_id: int
) -> TierChange:
    """Staff place a member on a tier and hold it until the end of `until` (merchant-local); upgrades still apply."""
    tiers = await active_tiers(merchant_id=merchant_id)
    tier = next((t for t in tiers if t.code == tier_code), None)
    if tier is None:
        raise Unprocessable(f"no active tier {tier_code!r}", code="tier.not_found", field="tier_code")
    calendar = await local_calendar(merchant_id=merchant_id)
    if until < calendar.today:
        raise Unprocessable("until must be today or later", code="tier.until_past", field="until")
    policy = await get_policy(merchant_id=merchant_id)

    async def work() -> TierChange:
        async with in_transaction():
            row = await locked_member_tier(merchant_id=merchant_id, member_id=member_id)
            return await apply_move(
                row=row,
                tiers=tiers,
                policy=policy,
                calendar=calendar,
                move=Move(tier, "manual", reason, None, operator_staff_id),
                keep_until=keep_until_from(calendar, policy),
                manual_until=calendar.end_of(until),
                manual_reason=reason,
            )

    return await ledger.retrying(work, what="manual tier")


async def gift_tier_in_transaction(*, merchant_id: int, member_id: int, tier_id: int, detail: str) -> None:
    """Inside the caller's transaction: a purchased package's tier, held for a year, if it is above the member's."""
    tiers = await active_tiers(merchant_id=merchant_id)
    tier = next((t for t in tiers if t.id == tier_id), None)
    if tier is None:
        return  # the tier was retired after the package was sold: nothing to give
    row = await locked_member_tier(merchant_id=merchant_id, member_id=member_id)
    if rank_of(tier) <= rank_of(current_of(row, tiers)):
        return
    calendar, policy = await local_calendar(merchant_id=merchant_id), await get_policy(merchant_id=merchant_id)
    await apply_move(
        row=row,
        tiers=tiers,
        policy=policy,
        calendar=calendar,
        move=Move(tier, "package", detail, None),
        keep_until=keep_until_from(calendar, policy),
        manual_until=calendar.end_of(calendar.today + timedelta(days=365)),
        manual_reason=detail,
    )


@dataclass(frozen=True)
class MemberTierView:
    tier: Tier | None
    basis: str
    basis_value: int | None
    growth_12m: int
    growth_lifetime: int
    next_tier: Tier | None
    needed: int | None
    since: datetime | None
    keep_until: datetime | None
    manual_until: datetime | None
    manual_reason: str
    next_settlement: date
    policy: TierPolicy


async def member_tier_view(*, merchant_id: int, member_id: int) -> MemberTierView:
    """Where the member stands, why, and what the next tier still needs."""
    tiers = await active_tiers(merchant_id=merchant_id)
    policy, calendar = await get_policy(merchant_id=merchant_id), await local_calendar(merchant_id=merchant_id)
    row = await MemberTier.get_or_none(member_id=member_id)
    tier = current_of(row, tiers)
    target = await target_of(policy=policy, calendar=calendar, tiers=tiers, member_id=member_id, as_of=calendar.today)
    next_tier = next((t for t in tiers if t.rank > rank_of(tier)), None)
    needed = None
    if next_tier is not None and target.value is not None:
        needed = max(0, next_tier.threshold - target.value)
    return MemberTierView(
        tier=tier,
        basis=policy.basis,
        basis_value=target.value,
        growth_12m=await growth_since(member_id=member_id, since=window_start(calendar, calendar.today)),
        growth_lifetime=await lifetime_growth(member_id=member_id),
        next_tier=next_tier,
        needed=needed,
        since=row.since if row is not None and row.tier_id is not None else None,
        keep_until=row.keep_until if row is not None else None,
        manual_until=row.manual_until if row is not None else None,
        manual_reason=row.manual_reason if row is not None else "",
        next_settlement=calendar.settlement_after(calendar.today),
        policy=policy,
    )


async def tier_history(*, merchant_id: int, member_id: int, before_id: int | None, limit: int) -> list[TierChange]:
    """A member's tier changes, newest first, paged by id."""
    query = TierChange.filter(merchant_id=merchant_id, member_id=member_id)
    if before_id:
        query = query.filter(id__lt=before_id)
    return await query.order_by("-id").limit(limit)


async def tiers_by_id(*, merchant_id: int) -> dict[int, Tier]:
    """Every tier of the merchant (inactive too: history may name them)."""
    return {t.id: t for t in await Tier.filter(merchant_id=merchant_id)}
