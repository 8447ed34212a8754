"""Paid plans and their terms: renewals stack, a refund ends a term now, reminders go out once per term."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.kernel import clock
from models.kernel.calendar import add_local_months
from models.kernel.errors import Conflict
from models.kernel.outbox import enqueue
from models.ledger import books as ledger
from models.members.members import member_rows
from models.tenancy.merchants import merchant_zone
from models.tenancy.visibility import Scope

PERIOD_MONTHS = {"month": 1, "quarter": 3, "year": 12}
REMIND_DAYS = 7
STATS_DAYS = 30


class PaidPlan(Model):
    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField()
    code = fields.CharField(max_length=32)
    name = fields.CharField(max_length=64)
    period = fields.CharField(max_length=12)  # month | quarter | year | lifetime
    price = fields.BigIntField()
    tier_id = fields.IntField(null=True)  # tier held while the plan runs
    points_multiplier_permille = fields.IntField(default=1000)
    benefits: dict[str, Any] = fields.JSONField(default=dict)  # monthly coupon pack, free items
    refund_rule = fields.CharField(max_length=12, default="pro_rata")  # pro_rata | none
    is_active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "paid_plan"
        unique_together = (("merchant_id", "code"),)


class MemberPlan(Model):
    """One purchased term of a plan. Renewals stack: each term starts when the previous one ends."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    plan_id = fields.IntField()
    order_id = fields.BigIntField(unique=True)
    starts_at = fields.DatetimeField()
    ends_at = fields.DatetimeField(null=True)  # null for lifetime
    status = fields.CharField(max_length=12, default="active")  # active | refunded
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "member_plan"
        indexes = (("member_id", "ends_at"),)


class PlanReminder(Model):
    """The expiry notice of one term, sent once: the unique term id is the guard."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    member_plan_id = fields.BigIntField(unique=True)
    ends_on = fields.DateField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "plan_reminder"


def _period_of(order: Any) -> str:
    plan = (order.snapshot or {}).get("plan") or {}
    return str(plan.get("period") or "")


async def _latest_end(*, member_id: int, now: datetime) -> datetime | None:
    """Where a new term of the member starts stacking: the end of the last active term still running."""
    terms = await MemberPlan.filter(member_id=member_id, status="active").filter(Q(ends_at=None) | Q(ends_at__gt=now))
    ends = [term.ends_at for term in terms if term.ends_at is not None]
    return max(ends) if ends else None


async def start_plan_term(*, order: Any) -> MemberPlan:
    """A paid plan order starts one term at the end of the member's running terms (or now); once per order."""
    earlier = await MemberPlan.get_or_none(order_id=order.id)
    if earlier is not None:
        return earlier
    # serialises one member's stacking (lock order: account first, as every ledger change)
    await ledger.BalanceAccount.filter(member_id=order.member_id).select_for_update().first()
    period = _period_of(order)
    if not period:
        plan = await PaidPlan.get(id=order.plan_id)
        period = plan.period
    now = clock.now()
    latest = await _latest_end(member_id=order.member_id, now=now)
    starts_at = max(now, latest) if latest is not None else now
    ends_at = None
    if period != "lifetime":
        ends_at = add_local_months(starts_at, PERIOD_MONTHS[period], await merchant_zone(merchant_id=order.merchant_id))
    return await MemberPlan.create(
        merchant_id=order.merchant_id,
        member_id=order.member_id,
        plan_id=order.plan_id,
        order_id=order.id,
        starts_at=starts_at,
        ends_at=ends_at,
    )


@dataclass(frozen=True)
class TermRefund:
    amount: int  # fen returned for the unused days
    term: MemberPlan


async def plan_refund_amount(*, order: Any) -> TermRefund:
    """Pro rata of the term's unused merchant-local days (rounded down); "none" plans and lifetime refuse."""
    plan = (order.snapshot or {}).get("plan") or {}
    rule = plan.get("refund_rule", "pro_rata")
    term = await MemberPlan.get_or_none(order_id=order.id)
    if rule != "pro_rata" or term is None or term.status != "active" or term.ends_at is None:
        raise Conflict("this plan term cannot be refunded", code="refund.not_refundable")
    zone = await merchant_zone(merchant_id=order.merchant_id)
    first, last = term.starts_at.astimezone(zone).date(), term.ends_at.astimezone(zone).date()
    today = clock.now().astimezone(zone).date()
    total_days = max(1, (last - first).days)
    unused = min(total_days, max(0, (last - max(today, first)).days))
    amount = order.amount * unused // total_days
    if amount <= 0:
        raise Conflict("nothing is left to refund", code="refund.nothing_refundable")
    return TermRefund(amount=amount, term=term)


async def end_term_now(*, term: MemberPlan) -> timedelta:
    """Inside a refund: the term ends now and the member's later stacked terms move up by what it gave back."""
    now = clock.now()
    assert term.ends_at is not None
    starts_at = min(term.starts_at, now)
    removed = term.ends_at - max(now, term.starts_at)
    won = await MemberPlan.filter(id=term.id, status="active").update(
        status="refunded", starts_at=starts_at, ends_at=now
    )
    if won != 1:
        raise Conflict("the plan term is already refunded", code="refund.in_progress")
    if removed > timedelta(0):
        await _shift_later_terms(member_id=term.member_id, after=term.ends_at, by=-removed)
    return max(removed, timedelta(0))


async def _shift_later_terms(*, member_id: int, after: datetime, by: timedelta) -> None:
    """Move the member's active terms starting at or after `after` by `by` (stacked renewals stay contiguous)."""
    later = await MemberPlan.filter(
        member_id=member_id, status="active", starts_at__gte=after, ends_at__not_isnull=True
    )
    for other in later:
        assert other.ends_at is not None
        await MemberPlan.filter(id=other.id).update(starts_at=other.starts_at + by, ends_at=other.ends_at + by)


async def restore_term(*, member_plan_id: int, starts_at: datetime, ends_at: datetime, shifted: timedelta) -> None:
    """Inside a refund cancel: the term runs again as it was, and the later terms move back."""
    term = await MemberPlan.get(id=member_plan_id)
    if shifted > timedelta(0) and term.ends_at is not None:
        await _shift_later_terms(member_id=term.member_id, after=term.ends_at, by=shifted)
    await MemberPlan.filter(id=term.id, status="refunded").update(status="active", starts_at=starts_at, ends_at=ends_at)


@dataclass(frozen=True)
class PlanStatus:
    plan: PaidPlan | None
    ends_at: datetime | None
    ends_on: date | None  # merchant-local date of ends_at
    lifetime: bool
    terms: list[MemberPlan]


async def member_plan_status(*, merchant_id: int, member_id: int) -> PlanStatus:
    """The member's running and stacked terms: the plan held now and when the last term ends."""
    now = clock.now()
    terms = await MemberPlan.filter(
        Q(ends_at=None) | Q(ends_at__gt=now), merchant_id=merchant_id, member_id=member_id, status="active"
    ).order_by("starts_at", "id")
    if not terms:
        return PlanStatus(plan=None, ends_at=None, ends_on=None, lifetime=False, terms=[])
    current = next((t for t in terms if t.starts_at <= now), terms[0])
    plan = await PaidPlan.get_or_none(id=current.plan_id)
    lifetime = any(t.ends_at is None for t in terms)
    ends_at = None if lifetime else max(t.ends_at for t in terms if t.ends_at is not None)
    zone = await merchant_zone(merchant_id=merchant_id)
    ends_on = ends_at.astimezone(zone).date() if ends_at is not None else None
    return PlanStatus(plan=plan, ends_at=ends_at, ends_on=ends_on, lifetime=lifetime, terms=list(terms))


async def send_reminders(*, days: int = REMIND_DAYS) -> int:
    """One "plan_expiring" notice per member and last term ending within `days` (no renewal stacked after it)."""
    now = clock.now()
    due = await MemberPlan.filter(status="active", ends_at__gt=now, ends_at__lte=now + timedelta(days=days)).order_by(
        "id"
    )
    sent = 0
    for term in due:
        assert term.ends_at is not None
        if await MemberPlan.filter(
            Q(ends_at=None) | Q(ends_at__gt=term.ends_at), member_id=term.member_id, status="active"
        ).exists():
            continue  # a renewal follows: this is not the last term
        if await PlanReminder.exists(member_plan_id=term.id):
            continue
        ends_on = term.ends_at.astimezone(await merchant_zone(merchant_id=term.merchant_id)).date()
        try:
            async with in_transaction():
                await PlanReminder.create(
                    merchant_id=term.merchant_id, member_id=term.member_id, member_plan_id=term.id, ends_on=ends_on
                )
                await enqueue(
                    merchant_id=term.merchant_id,
                    topic="member.notice",
                    payload={"member_id": term.member_id, "kind": "plan_expiring", "ends_on": ends_on.isoformat()},
                    coalesce_key=f"plan-expiring:{term.id}",
                )
        except IntegrityError:
            continue  # another run sent it
        sent += 1
    return sent


@dataclass(frozen=True)
class RenewalStats:
    ended: int
    renewed: int
    rate_permille: int | None  # renewed * 1000 // ended; None when no term ended


async def renewal_stats(*, scope: Scope, days: int = STATS_DAYS) -> RenewalStats:
    """Members (of the scope) whose last term ended in the window, and how many of them bought another term since."""
    now = clock.now()
    return await renewal_stats_between(scope=scope, since=now - timedelta(days=days), until=now, days=days)


async def renewal_stats_between(
    *, scope: Scope, since: datetime, until: datetime, days: int = STATS_DAYS
) -> RenewalStats:
    """renewal_stats for the terms that ended after `since` and by `until` (never later than now)."""
    ended_terms = await MemberPlan.filter(
        status="active", ends_at__gt=since, ends_at__lte=min(until, clock.now()), **member_rows(scope)
    ).values_list("member_id", "ends_at")
    ended = {int(member_id) for member_id, _ in ended_terms}
    terms: dict[int, list[tuple[datetime, datetime | None]]] = {}  # the ended members' terms, read 1,000 at a time
    ids = sorted(ended)
    for start in range(0, len(ids), 1000):
        rows = await MemberPlan.filter(member_id__in=ids[start : start + 1000], status="active").values_list(
            "member_id", "created_at", "ends_at"
        )
        for member_id, created_at, ends_at in rows:
            terms.setdefault(int(member_id), []).append((created_at, ends_at))
    renewed = {
        int(member_id)
        for member_id, ended_at in ended_terms
        if any(
            created_at >= ended_at - timedelta(days=days) and (ends_at is None or ends_at > ended_at)
            for created_at, ends_at in terms.get(int(member_id), ())
        )
    }
    rate = len(renewed) * 1000 // len(ended) if ended else None
    return RenewalStats(ended=len(ended), renewed=len(renewed), rate_permille=rate)
