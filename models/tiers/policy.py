"""The merchant's tier policy (growth earning, basis, settlement, grace, gifts) and its merchant-local calendar."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.kernel import clock
from models.kernel.calendar import add_months
from models.kernel.config_cache import CONFIG
from models.tenancy.merchants import merchant_zone
from models.tenancy.program import get_program, save_section

BASES = ("rolling_12m_growth", "lifetime_growth", "total_recharge", "paid_plan")
Basis = Literal["rolling_12m_growth", "lifetime_growth", "total_recharge", "paid_plan"]


class TierPolicy(BaseModel):
    """Stored in LoyaltyProgram.tier_policy; every field has the default a merchant starts with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fen_per_growth: int = Field(100, ge=1, le=100_000_000, description="Fen spent per growth point (rounded down)")
    profile_completion_growth: int = Field(0, ge=0, le=1_000_000, description="Growth for completing the profile")
    basis: Basis = Field("rolling_12m_growth", description="What the tier thresholds are measured in")
    grace_months: int = Field(
        0, ge=0, le=24, description="Months a tier is kept after the next settlement before it can fall"
    )
    notice_days: int = Field(7, ge=0, le=27, description="Days before a settlement that a downgrade is announced")
    gift_period: Literal["once", "year"] = Field(
        "once", description="Upgrade gift once per tier ever, or once per tier per merchant-local year"
    )


def parse_policy(raw: dict) -> TierPolicy:
    """A stored policy; a section saved by an older version falls back to the defaults it lacks."""
    try:
        return TierPolicy.model_validate(raw or {})
    except ValidationError:
        return TierPolicy()


async def get_policy(*, merchant_id: int) -> TierPolicy:
    """The merchant's tier policy (defaults until saved)."""
    return await CONFIG.get("tier_policy", merchant_id, lambda: _load_policy(merchant_id))


async def _load_policy(merchant_id: int) -> TierPolicy:
    return parse_policy((await get_program(merchant_id=merchant_id)).tier_policy)


async def save_policy(*, merchant_id: int, policy: TierPolicy) -> TierPolicy:
    """Replace the tier policy; members move on their next event or settlement, never retroactively."""
    program = await save_section(merchant_id=merchant_id, section="tier_policy", value=policy.model_dump())
    return parse_policy(program.tier_policy)


@dataclass(frozen=True)
class LocalCalendar:
    """A merchant's time zone and today's date in it."""

    zone: ZoneInfo
    now: datetime

    @property
    def today(self) -> date:
        return self.now.astimezone(self.zone).date()

    def start_of(self, day: date) -> datetime:
        """Merchant-local midnight of a day, in UTC."""
        return datetime.combine(day, time.min, tzinfo=self.zone).astimezone(UTC)

    def end_of(self, day: date) -> datetime:
        """Merchant-local end of a day (the next midnight), in UTC."""
        return self.start_of(day + timedelta(days=1))

    def settlement_after(self, day: date) -> date:
        """The first settlement day (1st of a month) strictly after `day`."""
        return add_months(day.replace(day=1), 1)

    def period_of(self, day: date) -> str:
        return f"{day.year:04d}-{day.month:02d}"


async def local_calendar(*, merchant_id: int) -> LocalCalendar:
    """The merchant's calendar at the current (injectable) clock."""
    return LocalCalendar(zone=await merchant_zone(merchant_id=merchant_id), now=clock.now())


def keep_until_from(calendar: LocalCalendar, policy: TierPolicy) -> datetime:
    """A tier reached today is kept until the next settlement plus the grace months."""
    return calendar.start_of(add_months(calendar.settlement_after(calendar.today), policy.grace_months))
