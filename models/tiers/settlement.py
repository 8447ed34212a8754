"""The monthly tier settlement, downgrade notices before it, and the end of staff-assigned holds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from models.kernel import clock
from models.kernel.outbox import enqueue
from models.ledger import books as ledger
from models.members.members import Member
from models.tenancy.merchants import Merchant
from models.tiers.policy import LocalCalendar, TierPolicy, get_policy, keep_until_from, local_calendar
from models.tiers.standing import Move, active_tiers, apply_move, current_of, locked_member_tier, rank_of, target_of
from models.tiers.tables import MemberTier, Tier, TierNotice, TierSettlement

BATCH = 200
STALE_RUN = timedelta(hours=2)  # a run this old without finishing crashed: another may take it over
NOTICE_TOPIC = "member.notice"


async def _ids(query: QuerySet[Any]) -> list[int]:
    return [int(row["id"]) for row in await query.values("id")]


async def _claim(*, merchant_id: int, period: str) -> TierSettlement | None:
    """The unique (merchant, period) row is the claim; a crashed run can be taken over once it is stale."""
    try:
        return await TierSettlement.create(merchant_id=merchant_id, period=period, status="running")
    except IntegrityError:
        pass
    run = await TierSettlement.get(merchant_id=merchant_id, period=period)
    if run.status != "running" or run.started_at > clock.now() - STALE_RUN:
        return None
    taken = await TierSettlement.filter(id=run.id, status="running", started_at=run.started_at).update(
        started_at=clock.now()
    )
    return await TierSettlement.get(id=run.id) if taken else None


async def _settle_member(
    *, member_id: int, merchant_id: int, tiers: list[Tier], policy: TierPolicy, calendar: LocalCalendar, day: date
) -> str:
    """One member at settlement: up if the basis earns more, down if less and the tier's keep_until has passed."""

    async def work() -> str:
        async with in_transaction():
            row = await MemberTier.filter(member_id=member_id).select_for_update().first()
            current = current_of(row, tiers)
            target = await target_of(policy=policy, calendar=calendar, tiers=tiers, member_id=member_id, as_of=day)
            if row is None and rank_of(target.tier) <= rank_of(current):
                return "same"  # never placed and still on the entry tier: nothing to record
            row = row or await locked_member_tier(merchant_id=merchant_id, member_id=member_id)
            keep_until = keep_until_from(calendar, policy)
            if rank_of(target.tier) == rank_of(current):
                if row.tier_id is not None:
                    await MemberTier.filter(id=row.id).update(keep_until=keep_until)
                return "same"
            going_up = rank_of(target.tier) > rank_of(current)
            now = calendar.now
            if not going_up and (
                (row.manual_until is not None and row.manual_until > now)
                or (row.keep_until is not None and row.keep_until > now)
            ):
                return "kept"
            detail = f"settlement {calendar.period_of(day)}: {target.value if target.value is not None else 'plan'}"
            await apply_move(
                row=row,
                tiers=tiers,
                policy=policy,
                calendar=calendar,
                move=Move(target.tier, "settlement", detail, target.value),
                keep_until=keep_until,
                manual_until=row.manual_until,
                manual_reason=row.manual_reason,
            )
            return "up" if going_up else "down"

    return await ledger.retrying(work, what="tier settlement")


@dataclass
class SettleCount:
    merchants: int = 0
    members: int = 0
    upgraded: int = 0
    downgraded: int = 0


async def settle_merchant(*, merchant_id: int, count: SettleCount) -> None:
    """Settle the merchant's current month once: keyset-paged members, each in its own transaction."""
    calendar = await local_calendar(merchant_id=merchant_id)
    day = calendar.today.replace(day=1)
    period = calendar.period_of(day)
    if await TierSettlement.exists(merchant_id=merchant_id, period=period, status="done"):
        return
    run = await _claim(merchant_id=merchant_id, period=period)
    if run is None:
        return
    tiers = await active_tiers(merchant_id=merchant_id)
    policy = await get_policy(merchant_id=merchant_id)
    checked = up = down = 0
    last_id = 0
    while tiers:
        ids = await _ids(Member.filter(merchant_id=merchant_id, id__gt=last_id).order_by("id").limit(BATCH))
        if not ids:
            break
        last_id = ids[-1]
        for member_id in ids:
            outcome = await _settle_member(
                member_id=member_id,
                merchant_id=merchant_id,
                tiers=tiers,
                policy=policy,
                calendar=calendar,
                day=day,
            )
            checked += 1
            up += outcome == "up"
            down += outcome == "down"
    await TierSettlement.filter(id=run.id).update(
        status="done", members_checked=checked, upgraded=up, downgraded=down, finished_at=clock.now()
    )
    count.merchants += 1
    count.members, count.upgraded, count.downgraded = (
        count.members + checked,
        count.upgraded + up,
        count.downgraded + down,
    )


async def settle_all() -> SettleCount:
    """Settle every merchant whose merchant-local month has no finished settlement yet."""
    count = SettleCount()
    for merchant_id in await _ids(Merchant.all().order_by("id")):
        await settle_merchant(merchant_id=merchant_id, count=count)
    return count


async def _notify_member(
    *, row: MemberTier, tiers: list[Tier], policy: TierPolicy, calendar: LocalCalendar, settles_on: date
) -> bool:
    current = current_of(row, tiers)
    target = await target_of(policy=policy, calendar=calendar, tiers=tiers, member_id=row.member_id, as_of=settles_on)
    settles_at = calendar.start_of(settles_on)
    held = (row.manual_until is not None and row.manual_until > settles_at) or (
        row.keep_until is not None and row.keep_until > settles_at
    )
    if current is None or held or rank_of(target.tier) >= rank_of(current):
        return False
    try:
        async with in_transaction():
            # the unique (member, period) row makes the notice once per settlement, whoever runs the job
            await TierNotice.create(
                merchant_id=row.merchant_id,
                member_id=row.member_id,
                period=calendar.period_of(settles_on),
                from_tier_id=current.id,
                to_tier_id=target.tier.id if target.tier is not None else None,
            )
            await enqueue(
                merchant_id=row.merchant_id,
                topic=NOTICE_TOPIC,
                payload={
                    "member_id": row.member_id,
                    "kind": "tier_downgrade_notice",
                    "tier": current.code,
                    "to_tier": target.tier.code if target.tier is not None else None,
                    "settles_on": settles_on.isoformat(),
                },
            )
    except IntegrityError:
        return False
    return True


async def send_notices() -> int:
    """Within notice_days of the next settlement, tell each member who would fall, once per member and period."""
    sent = 0
    for merchant_id in await _ids(Merchant.all().order_by("id")):
        tiers = await active_tiers(merchant_id=merchant_id)
        if not tiers:
            continue
        policy, calendar = (
            await get_policy(merchant_id=merchant_id),
            await local_calendar(merchant_id=merchant_id),
        )
        settles_on = calendar.settlement_after(calendar.today)
        if not 0 < (settles_on - calendar.today).days <= policy.notice_days:
            continue
        last_id = 0
        while True:
            rows = (
                await MemberTier.filter(merchant_id=merchant_id, id__gt=last_id, tier_id__not_isnull=True)
                .order_by("id")
                .limit(BATCH)
            )
            if not rows:
                break
            last_id = rows[-1].id
            for row in rows:
                sent += await _notify_member(
                    row=row, tiers=tiers, policy=policy, calendar=calendar, settles_on=settles_on
                )
    return sent


async def _expire_hold(*, row_id: int) -> bool:
    async def work() -> bool:
        async with in_transaction():
            row = await MemberTier.filter(id=row_id).select_for_update().first()
            now = clock.now()
            if row is None or row.manual_until is None or row.manual_until > now:
                return False  # already ended by another run, or extended meanwhile
            tiers = await active_tiers(merchant_id=row.merchant_id)
            policy = await get_policy(merchant_id=row.merchant_id)
            calendar = await local_calendar(merchant_id=row.merchant_id)
            target = await target_of(
                policy=policy, calendar=calendar, tiers=tiers, member_id=row.member_id, as_of=calendar.today
            )
            await apply_move(
                row=row,
                tiers=tiers,
                policy=policy,
                calendar=calendar,
                move=Move(target.tier, "manual_expired", f"hold ended: {row.manual_reason}", target.value),
                keep_until=keep_until_from(calendar, policy),
            )
            return True

    return await ledger.retrying(work, what="manual tier expiry")


async def expire_manual_holds() -> int:
    """End staff-assigned holds whose day has passed and place those members back on their basis."""
    ended, last_id = 0, 0
    while True:
        ids = await _ids(MemberTier.filter(manual_until__lte=clock.now(), id__gt=last_id).order_by("id").limit(BATCH))
        if not ids:
            return ended
        last_id = ids[-1]
        for row_id in ids:
            ended += await _expire_hold(row_id=row_id)
