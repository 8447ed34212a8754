"""A merchant's points rules (earning, activities, expiry, reminders, points as cash) and the day arithmetic."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.kernel.config_cache import CONFIG, config_change
from models.kernel.errors import Unprocessable
from models.kernel.hooks import Hook
from models.tenancy.program import get_program, write_section

ExpiryPolicy = Literal["rolling_year", "end_of_next_year", "never"]
MAX_POINTS = 1_000_000_000


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


# listeners (merchant_id=) run in the transaction that saves new points rules; see server/wiring.py
RULES_CHANGED = Hook("points.rules_changed")


class SpendRule(_Rule):
    """`points` for every whole `per_fen` paid, rounded down per order."""

    points: int = Field(1, ge=1, le=1_000_000)
    per_fen: int = Field(1000, ge=1, le=100_000_000)


class StoreOverride(SpendRule):
    store_id: int = Field(ge=1, le=2**31 - 1)


class BonusItem(_Rule):
    """Extra points for every unit of a SKU bought (not multiplied by the tier)."""

    sku: str = Field(min_length=1, max_length=64)
    points: int = Field(ge=1, le=1_000_000)


class ActivityRule(_Rule):
    code: str = Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_]+$")
    name: str = Field(min_length=1, max_length=64)
    points: int = Field(0, ge=0, le=1_000_000)
    growth: int = Field(0, ge=0, le=1_000_000)
    limit: Literal["once", "daily", "unlimited"] = "once"

    @model_validator(mode="after")
    def _gives_something(self) -> ActivityRule:
        if self.points == 0 and self.growth == 0:
            raise ValueError("an activity must give points or growth")
        return self


class CashRule(_Rule):
    """`points` points pay `fen` fen, for at most `max_order_permille` of an order."""

    points: int = Field(10, ge=1, le=1_000_000)
    fen: int = Field(100, ge=1, le=100_000_000)
    max_order_permille: int = Field(500, ge=1, le=1000)


def _distinct(values: list[Any], keys: list[Any], what: str) -> list[Any]:
    if len(set(keys)) != len(keys):
        raise ValueError(f"{what} must be distinct")
    return values


class PointsRules(_Rule):
    earn: SpendRule = SpendRule()
    excluded_skus: list[str] = Field(default_factory=list, max_length=500)
    excluded_categories: list[str] = Field(default_factory=list, max_length=200)
    bonus_items: list[BonusItem] = Field(default_factory=list, max_length=200)
    store_overrides: list[StoreOverride] = Field(default_factory=list, max_length=500)
    daily_cap: int | None = Field(None, ge=1, le=MAX_POINTS, description="Purchase points per member per local day")
    activities: list[ActivityRule] = Field(default_factory=list, max_length=100)
    expiry: ExpiryPolicy = "rolling_year"
    reminder_days: list[int] = Field(default_factory=lambda: [30, 7], max_length=5)
    cash: CashRule = CashRule()

    @field_validator("reminder_days")
    @classmethod
    def _days(cls, days: list[int]) -> list[int]:
        if any(d < 1 or d > 365 for d in days) or len(set(days)) != len(days):
            raise ValueError("reminder days must be distinct numbers of days from 1 to 365")
        return sorted(days, reverse=True)

    @field_validator("activities")
    @classmethod
    def _unique_activities(cls, rules: list[ActivityRule]) -> list[ActivityRule]:
        return _distinct(rules, [r.code for r in rules], "activity codes")

    @field_validator("bonus_items")
    @classmethod
    def _unique_bonus(cls, items: list[BonusItem]) -> list[BonusItem]:
        return _distinct(items, [i.sku for i in items], "bonus item skus")

    @field_validator("store_overrides")
    @classmethod
    def _unique_stores(cls, overrides: list[StoreOverride]) -> list[StoreOverride]:
        return _distinct(overrides, [o.store_id for o in overrides], "store overrides")

    def activity(self, code: str) -> ActivityRule | None:
        return next((a for a in self.activities if a.code == code), None)


def parse_rules(value: dict[str, Any]) -> PointsRules:
    """Validate points rules; the first problem becomes a 422 naming its field."""
    try:
        return PointsRules.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err.get("loc", ())]
        field = ".".join(loc) or "body"
        raise Unprocessable(
            f"{field}: {err.get('msg', 'invalid value')}", code="points.rules_invalid", field=field
        ) from None


async def get_points_rules(*, merchant_id: int) -> PointsRules:
    """The merchant's points rules; the defaults until they are first saved."""
    return await CONFIG.get("points_rules", merchant_id, lambda: _load_points_rules(merchant_id))


async def _load_points_rules(merchant_id: int) -> PointsRules:
    program = await get_program(merchant_id=merchant_id)
    return PointsRules.model_validate(program.points_rules or {})


async def save_points_rules(*, merchant_id: int, value: dict[str, Any]) -> PointsRules:
    """Replace the merchant's points rules after validating all of them; nothing is saved when one is wrong."""
    rules = parse_rules(value)
    async with config_change(merchant_id=merchant_id):
        await write_section(merchant_id=merchant_id, section="points_rules", value=rules.model_dump(mode="json"))
        await RULES_CHANGED.emit(merchant_id=merchant_id)
    return rules


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The UTC instant at which a merchant-local day starts."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def local_day(instant: datetime, zone: ZoneInfo) -> date:
    return instant.astimezone(zone).date()


def last_valid_day(expires_at: datetime, zone: ZoneInfo) -> date:
    """The last merchant-local day points expiring at this instant can be used (they go at the next midnight)."""
    return (expires_at - timedelta(microseconds=1)).astimezone(zone).date()


def _plus_one_year(day: date) -> date:
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year + 1, day=28)


def expiry_for(policy: ExpiryPolicy, *, earned_at: datetime, zone: ZoneInfo) -> datetime | None:
    """When points earned at this instant expire: rolling year, end of next year, or never (None)."""
    earned_on = local_day(earned_at, zone)
    if policy == "never":
        return None
    if policy == "end_of_next_year":
        return local_midnight(date(earned_on.year + 2, 1, 1), zone)
    return local_midnight(_plus_one_year(earned_on) + timedelta(days=1), zone)


def purchase_points(
    rules: PointsRules, *, amount: int, items: list[dict[str, Any]], store_id: int | None, multiplier_permille: int
) -> int:
    """Points an order earns before the daily cap: eligible fen by the (store's) rule, times the tier, plus bonuses."""
    excluded = 0
    bonus = 0
    bonus_by_sku = {b.sku: b.points for b in rules.bonus_items}
    for item in items:
        if item.get("sku") in rules.excluded_skus or item.get("category") in rules.excluded_categories:
            excluded += int(item.get("amount", 0))
        bonus += bonus_by_sku.get(str(item.get("sku")), 0) * int(item.get("quantity", 1))
    eligible = max(0, amount - excluded)
    rule: SpendRule = next((s for s in rules.store_overrides if s.store_id == store_id), rules.earn)
    base = eligible // rule.per_fen * rule.points
    return base * multiplier_permille // 1000 + bonus


def cash_quote(rules: PointsRules, *, balance: int, order_amount: int) -> tuple[int, int]:
    """(points, fen) a member may pay with: whole units of the rate, within the balance and the per-order cap."""
    cap_fen = order_amount * rules.cash.max_order_permille // 1000
    units = min(balance // rules.cash.points, cap_fen // rules.cash.fen)
    return units * rules.cash.points, units * rules.cash.fen
