"""Growth value earned: one growth ledger row per idempotency key, and the tier upgrade it earns, at once."""

from __future__ import annotations

from datetime import datetime

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from models.kernel import clock
from models.ledger import books as ledger
from models.tiers import standing as tier_rules
from models.tiers.growth import GROWTH_KINDS, add_to_bucket
from models.tiers.tables import GrowthEntry, MemberTier


async def add_growth(
    *,
    merchant_id: int,
    member_id: int,
    delta: int,
    kind: str,
    reason: str,
    idempotency_key: str,
    ref_type: str = "",
    ref_id: str = "",
    occurred_at: datetime | None = None,
    savepoint: bool = True,
) -> bool:
    """Record growth once per idempotency key (False on a replay); crossing a tier upgrades the member at once.

    savepoint=False, inside a caller's transaction whose key cannot have been used yet (a purchase just inserted):
    no SAVEPOINT/RELEASE, and a used key raises IntegrityError, rolling the caller's whole transaction back.
    """
    ledger.validate_change(
        name="growth",
        unit="growth",
        kinds=GROWTH_KINDS,
        delta=delta,
        kind=kind,
        reason=reason,
        idempotency_key=idempotency_key,
    )

    at = occurred_at or clock.now()

    async def record() -> None:
        await GrowthEntry.create(
            merchant_id=merchant_id,
            member_id=member_id,
            delta=delta,
            kind=kind,
            reason=reason.strip()[:255],
            idempotency_key=idempotency_key,
            ref_type=ref_type,
            ref_id=ref_id,
            occurred_at=at,
        )

    async def work() -> bool:
        async with in_transaction():
            try:
                async with in_transaction():  # a savepoint: a replayed key leaves the outer transaction usable
                    await record()
            except IntegrityError:
                return False
            await _count(merchant_id=merchant_id, member_id=member_id, delta=delta, at=at, reason=reason)
        return True

    if not savepoint and ledger.in_outer_transaction():
        await record()
        await _count(merchant_id=merchant_id, member_id=member_id, delta=delta, at=at, reason=reason)
        return True
    return await ledger.retrying(work, what="growth change")


async def _count(*, merchant_id: int, member_id: int, delta: int, at: datetime, reason: str) -> None:
    """A new growth row's effects, in its transaction: the bucket, the lifetime total and an immediate upgrade."""
    row = await tier_rules.locked_member_tier(merchant_id=merchant_id, member_id=member_id)
    # under the member's tier row lock, so two growth rows of one member never race for a new bucket
    await add_to_bucket(merchant_id=merchant_id, member_id=member_id, occurred_at=at, delta=delta)
    await MemberTier.filter(member_id=member_id).update(growth_total=F("growth_total") + delta)
    row.growth_total += delta  # the row stays locked: what the update wrote, without reading it back
    await tier_rules.upgrade_in_transaction(
        merchant_id=merchant_id, member_id=member_id, detail=f"growth {delta:+d}: {reason.strip()}"[:255], row=row
    )
