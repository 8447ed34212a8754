"""Daily sign-in: once per member per merchant-local day, with streak rewards and make-ups bought with points."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.kernel.calendar import add_months
from models.kernel.errors import Conflict, Unprocessable
from models.ledger import books as ledger
from models.tenancy.program import get_program, save_section
from models.tiers.policy import local_calendar

STREAK_PAGE = 400


class SignIn(Model):
    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    member_id = fields.IntField()
    local_date = fields.DateField()  # the merchant-local calendar day
    streak = fields.IntField()  # 1 on the first day of a run
    points = fields.IntField(default=0)
    makeup = fields.BooleanField(default=False)  # bought afterwards with points
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "sign_in"
        unique_together = (("member_id", "local_date"),)


class SignInRules(BaseModel):
    """Stored in LoyaltyProgram.signin_rules; the defaults apply until a merchant saves its own."""

    model_config = ConfigDict(extra="forbid")

    rewards: list[int] = Field(
        default_factory=lambda: [5, 10, 15, 20, 25, 30, 50],
        min_length=1,
        max_length=366,
        description="Points for day 1, 2, … of a streak",
    )
    after_table: Literal["cycle", "hold"] = Field(
        "cycle", description="Past the table: start again at day 1 (cycle) or keep the last reward (hold)"
    )
    makeup_enabled: bool = True
    makeup_cost: int = Field(20, ge=1, le=1_000_000, description="Points a make-up sign-in costs")
    makeup_days_back: int = Field(7, ge=1, le=60, description="How many days back a make-up may reach")
    makeup_per_month: int = Field(3, ge=0, le=31, description="Make-ups per calendar month of the day made up")

    @field_validator("rewards")
    @classmethod
    def _positive(cls, rewards: list[int]) -> list[int]:
        for index, points in enumerate(rewards):
            if points <= 0 or points > 1_000_000:
                raise ValueError(f"reward of day {index + 1} must be 1..1000000 points")
        return rewards

    def reward_for(self, streak: int) -> int:
        """Points for the given day of a streak."""
        index = streak - 1
        if index < len(self.rewards):
            return self.rewards[index]
        return self.rewards[index % len(self.rewards)] if self.after_table == "cycle" else self.rewards[-1]


async def get_rules(*, merchant_id: int) -> SignInRules:
    """The merchant's sign-in rules (defaults until saved)."""
    program = await get_program(merchant_id=merchant_id)
    try:
        return SignInRules.model_validate(program.signin_rules or {})
    except ValidationError:
        return SignInRules()


async def save_rules(*, merchant_id: int, rules: SignInRules) -> SignInRules:
    """Replace the sign-in rules; streaks already earned keep their rewards."""
    program = await save_section(merchant_id=merchant_id, section="signin_rules", value=rules.model_dump())
    return SignInRules.model_validate(program.signin_rules)


async def streak_ending(*, member_id: int, day: date) -> int:
    """How many consecutive signed days end on `day` (0 when `day` is not signed)."""
    count, expected = 0, day
    while True:
        days = await (
            SignIn.filter(member_id=member_id, local_date__lte=expected)
            .order_by("-local_date")
            .limit(STREAK_PAGE)
            .values_list("local_date", flat=True)
        )
        for signed in days:
            if signed != expected:
                return count
            count, expected = count + 1, expected - timedelta(days=1)
        if len(days) < STREAK_PAGE:
            return count


@dataclass(frozen=True)
class SignInResult:
    sign_in: SignIn
    balance: int


async def _already(*, member_id: int, day: date) -> Conflict:
    record = await SignIn.get_or_none(member_id=member_id, local_date=day)
    shown = None
    if record is not None:
        shown = {
            "local_date": day.isoformat(),
            "streak": record.streak,
            "points": record.points,
            "makeup": record.makeup,
        }
    return Conflict("already signed in on this day", code="signin.already", field="date", record=shown)


async def sign_in(*, merchant_id: int, member_id: int) -> SignInResult:
    """Sign in today (merchant-local): once a day by the (member, day) unique key, rewarded in the same transaction."""
    calendar = await local_calendar(merchant_id=merchant_id)
    today = calendar.today
    if await SignIn.exists(member_id=member_id, local_date=today):
        raise await _already(member_id=member_id, day=today)
    rules = await get_rules(merchant_id=merchant_id)
    streak = await streak_ending(member_id=member_id, day=today - timedelta(days=1)) + 1
    reward = rules.reward_for(streak)
    created: list[SignIn] = []

    async def record(entry: ledger._Entry) -> None:
        created[:] = [
            await SignIn.create(
                merchant_id=merchant_id, member_id=member_id, local_date=today, streak=streak, points=reward
            )
        ]

    try:
        result = await ledger.change_points(
            merchant_id=merchant_id,
            member_id=member_id,
            delta=reward,
            kind="signin",
            reason=f"签到第{streak}天",
            idempotency_key=f"signin:{member_id}:{today.isoformat()}",
            ref_type="signin",
            ref_id=today.isoformat(),
            within=record,
        )
    except (IntegrityError, Conflict) as exc:
        if isinstance(exc, Conflict) and exc.code != "idempotency.key_reused":
            raise
        raise await _already(member_id=member_id, day=today) from None
    if result.replayed or not created:
        raise await _already(member_id=member_id, day=today)
    return SignInResult(sign_in=created[0], balance=result.entry.balance_after)


async def make_up(*, merchant_id: int, member_id: int, day: date) -> SignInResult:
    """Sign in a missed past day, paid with points: the debit, the reward and the row commit together or not at all."""
    calendar = await local_calendar(merchant_id=merchant_id)
    rules = await get_rules(merchant_id=merchant_id)
    today = calendar.today
    if not rules.makeup_enabled:
        raise Conflict("make-up sign-ins are switched off", code="signin.makeup_disabled")
    if day >= today:
        raise Unprocessable("only a past day can be made up", code="signin.makeup_not_past", field="date")
    if day < today - timedelta(days=rules.makeup_days_back):
        raise Unprocessable(
            f"only the last {rules.makeup_days_back} days can be made up", code="signin.makeup_too_old", field="date"
        )
    if await SignIn.exists(member_id=member_id, local_date=day):
        raise await _already(member_id=member_id, day=day)
    month_start = day.replace(day=1)
    month_end = add_months(month_start, 1)
    streak = await streak_ending(member_id=member_id, day=day - timedelta(days=1)) + 1
    reward = rules.reward_for(streak)

    async def work() -> SignInResult:
        async with in_transaction():
            # the debit locks the member's points account first, so make-ups of one member run one at a time
            debit = await ledger.change_points(
                merchant_id=merchant_id,
                member_id=member_id,
                delta=-rules.makeup_cost,
                kind="spend",
                reason=f"补签 {day.isoformat()}",
                idempotency_key=f"signin-makeup:{member_id}:{day.isoformat()}",
                ref_type="signin_makeup",
                ref_id=day.isoformat(),
            )
            if debit.replayed:
                raise await _already(member_id=member_id, day=day)
            used = await SignIn.filter(
                member_id=member_id, makeup=True, local_date__gte=month_start, local_date__lt=month_end
            ).count()
            if used >= rules.makeup_per_month:
                raise Conflict(
                    f"at most {rules.makeup_per_month} make-ups a month", code="signin.makeup_limit", field="date"
                )
            record = await SignIn.create(
                merchant_id=merchant_id, member_id=member_id, local_date=day, streak=streak, points=reward, makeup=True
            )
            credit = await ledger.change_points(
                merchant_id=merchant_id,
                member_id=member_id,
                delta=reward,
                kind="signin",
                reason=f"补签第{streak}天",
                idempotency_key=f"signin:{member_id}:{day.isoformat()}",
                ref_type="signin",
                ref_id=day.isoformat(),
            )
            if credit.replayed:
                raise await _already(member_id=member_id, day=day)
        return SignInResult(sign_in=record, balance=credit.entry.balance_after)

    try:
        return await ledger.retrying(work, what="make-up sign-in")
    except IntegrityError:
        raise await _already(member_id=member_id, day=day) from None


@dataclass(frozen=True)
class Calendar:
    month: str
    days: list[SignIn]
    streak: int
    signed_today: bool
    today: date
    next_reward: int
    makeups_left: int


async def month_calendar(*, merchant_id: int, member_id: int, month: date | None) -> Calendar:
    """A month's sign-ins, the current streak, and what the next sign-in (tomorrow's once signed today) earns."""
    calendar = await local_calendar(merchant_id=merchant_id)
    rules = await get_rules(merchant_id=merchant_id)
    today = calendar.today
    month = month or today
    start, end = month.replace(day=1), add_months(month.replace(day=1), 1)
    days = await SignIn.filter(member_id=member_id, local_date__gte=start, local_date__lt=end).order_by("local_date")
    signed_today = await SignIn.exists(member_id=member_id, local_date=today)
    streak = await streak_ending(member_id=member_id, day=today if signed_today else today - timedelta(days=1))
    this_month = today.replace(day=1)
    used = await SignIn.filter(
        member_id=member_id, makeup=True, local_date__gte=this_month, local_date__lt=add_months(this_month, 1)
    ).count()
    return Calendar(
        month=f"{start.year:04d}-{start.month:02d}",
        days=list(days),
        streak=streak,
        signed_today=signed_today,
        today=today,
        next_reward=rules.reward_for(streak + 1),
        makeups_left=max(0, rules.makeup_per_month - used) if rules.makeup_enabled else 0,
    )
