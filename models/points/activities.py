"""Activity rewards (complete profile, birthday month, campaign…): points and growth within a once/daily limit."""

from __future__ import annotations

from dataclasses import dataclass

from tortoise.transactions import in_transaction

from models.kernel import clock
from models.kernel.errors import Conflict, Unprocessable
from models.ledger import books as ledger
from models.points.lots import earn_points
from models.points.rules import get_points_rules, local_day
from models.tenancy.merchants import merchant_zone
from models.tiers import earning


@dataclass(frozen=True)
class ActivityAward:
    rule_code: str
    points: int
    growth: int
    entry_id: int | None  # the points ledger row, when the rule gives points
    replayed: bool  # the limit had been reached: this is the first award, nothing changed


async def award_activity(
    *,
    merchant_id: int,
    member_id: int,
    rule_code: str,
    idempotency_key: str | None = None,
    operator_staff_id: int | None = None,
) -> ActivityAward:
    """Reward an activity by its rule; the limit (once, daily in merchant-local days, unlimited) is the ledger key."""
    rules = await get_points_rules(merchant_id=merchant_id)
    rule = rules.activity(rule_code)
    if rule is None:
        raise Unprocessable(f"no activity rule {rule_code!r}", code="activity.unknown_rule", field="rule_code")
    if rule.limit == "once":
        scope = "once"
    elif rule.limit == "daily":
        scope = local_day(clock.now(), await merchant_zone(merchant_id=merchant_id)).isoformat()
    else:
        if not idempotency_key or len(idempotency_key) > 64:
            raise Unprocessable(
                "an unlimited activity needs an idempotency_key of 1-64 characters",
                code="idempotency.key_invalid",
                field="idempotency_key",
            )
        scope = idempotency_key
    key = f"activity:{rule.code}:{member_id}:{scope}"
    reason = f"Activity: {rule.name}"

    async def work() -> ActivityAward:
        async with in_transaction():
            entry_id, replayed = None, False
            if rule.points:
                result = await earn_points(
                    merchant_id=merchant_id,
                    member_id=member_id,
                    points=rule.points,
                    reason=reason,
                    idempotency_key=key,
                    kind="activity",
                    ref_type="activity",
                    ref_id=rule.code,
                    operator_staff_id=operator_staff_id,
                )
                entry_id, replayed = result.entry.id, result.replayed
            if rule.growth:
                added = await earning.add_growth(
                    merchant_id=merchant_id,
                    member_id=member_id,
                    delta=rule.growth,
                    kind="activity",
                    reason=reason,
                    idempotency_key=key,
                    ref_type="activity",
                    ref_id=rule.code,
                )
                replayed = replayed or (not rule.points and not added)
            return ActivityAward(rule.code, rule.points, rule.growth, entry_id, replayed)

    try:
        return await ledger.retrying(work, what="activity award")
    except Conflict as exc:
        if exc.code != "idempotency.key_reused":
            raise
        raise Conflict(
            f"activity {rule.code} was already rewarded within its {rule.limit} limit", code="activity.limit_reached"
        ) from exc
