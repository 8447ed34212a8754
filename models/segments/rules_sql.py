"""A checked rule (models/segments/rules.py) compiled to one SQL condition over `member m`, values bound.

Correlated subqueries read the real tables (purchase, points_account, points_lot, balance_account, member_tier,
member_card, member_plan, coupon); MySQL/MariaDB and SQLite differ only in the birthday month and JSON
extraction. Days are the merchant's local days (see rules.py). A segment's `{"tag": id}` leaf reads member_tag.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from models.segments.rules import CUSTOM_PREFIX, GROUPS


@dataclass
class _Compiler:
    now: datetime
    zone: ZoneInfo
    dialect: str
    entry_tier_id: int | None = None  # a member without an active tier row is on the entry tier
    params: list[Any] = field(default_factory=list)

    @property
    def today(self) -> date:
        return self.now.astimezone(self.zone).date()

    def midnight(self, day: date) -> datetime:
        return datetime.combine(day, time.min, tzinfo=self.zone).astimezone(UTC)

    def bind(self, *values: Any) -> str:
        self.params.extend(values)
        return ", ".join(["%s"] * len(values))

    def compare(self, expr: str, op: str, value: Any) -> str:
        if op == "in":
            return f"{expr} IN ({self.bind(*value)})"
        if op == "between":
            return f"{expr} BETWEEN {self.bind(value[0])} AND {self.bind(value[1])}"
        sign = {"eq": "=", "gte": ">=", "lte": "<="}[op]
        return f"{expr} {sign} {self.bind(value)}"

    def node(self, rule: dict[str, Any]) -> str:
        for key in GROUPS:
            if key in rule:
                joined = " OR " if key != "all" else " AND "
                inner = "(" + joined.join(self.node(child) for child in rule[key]) + ")"
                return f"NOT {inner}" if key == "none" else inner
        if "tag" in rule:  # a segment's leaf: the member carries the tag while it is active
            return (
                "EXISTS (SELECT 1 FROM member_tag mt JOIN tag tg ON tg.id = mt.tag_id"
                f" WHERE mt.tag_id = {self.bind(rule['tag'])} AND mt.member_id = m.id AND tg.status = 'active')"
            )
        name: str = rule["field"]
        if name.startswith(CUSTOM_PREFIX):
            return self.custom(rule)
        return _LEAVES[name](self, rule["op"], rule["value"], rule.get("window_days"))

    def since(self, window_days: int | None, column: str) -> str:
        if window_days is None:
            return ""
        return f" AND {column} >= {self.bind(self.midnight(self.today - timedelta(days=window_days - 1)))}"

    def days_ago(self, column_exists: Callable[[str], str], op: str, value: Any) -> str:
        """For an event N local days ago: gte N = none since the day after; lte N = one since that day."""
        low, high = (value, None) if op == "gte" else (None, value) if op == "lte" else tuple(value)
        parts = []
        if high is not None:
            parts.append(column_exists(self.bind(self.midnight(self.today - timedelta(days=high)))))
        if low is not None:
            parts.append(f"NOT {column_exists(self.bind(self.midnight(self.today - timedelta(days=low - 1))))}")
        return "(" + " AND ".join(parts) + ")"

    def custom(self, rule: dict[str, Any]) -> str:
        path = f"$.{rule['field'][len(CUSTOM_PREFIX) :]}"
        value = rule["value"]
        if self.dialect == "mysql":
            numeric = not isinstance(value, bool) and (
                isinstance(value, int) or (isinstance(value, list) and isinstance(value[0], int))
            )
            if numeric:
                expr = f"CAST(JSON_EXTRACT(m.custom_fields, {self.bind(path)}) AS SIGNED)"
            else:
                expr = f"JSON_UNQUOTE(JSON_EXTRACT(m.custom_fields, {self.bind(path)}))"
            if isinstance(value, bool):
                return f"{expr} = {self.bind('true' if value else 'false')}"
            return self.compare(expr, rule["op"], value)  # a missing key is NULL: never matched
        expr = f"json_extract(m.custom_fields, {self.bind(path)})"
        if isinstance(value, bool):
            return f"{expr} = {self.bind(1 if value else 0)}"
        return self.compare(expr, rule["op"], value)


def _range(op: str, value: Any) -> tuple[int | None, int | None]:
    if op == "gte":
        return value, None
    if op == "lte":
        return None, value
    return value[0], value[1]


def _shift_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a year without one
        return day.replace(year=day.year - years, day=28)


def _age(c: _Compiler, op: str, value: Any, _: int | None) -> str:
    low, high = _range(op, value)
    parts = []
    if low is not None:  # at least `low` full years old: born on or before today, `low` years ago
        parts.append(f"m.birthday <= {c.bind(_shift_years(c.today, low).isoformat())}")
    if high is not None:  # not yet high + 1
        parts.append(f"m.birthday > {c.bind(_shift_years(c.today, high + 1).isoformat())}")
    return "(m.birthday IS NOT NULL AND " + " AND ".join(parts) + ")"


def _birthday_month(c: _Compiler, op: str, value: Any, _: int | None) -> str:
    month = "MONTH(m.birthday)" if c.dialect == "mysql" else "CAST(substr(m.birthday, 6, 2) AS INTEGER)"
    if op == "in":
        value = [c.today.month if v == "this_month" else v for v in value]
    elif value == "this_month":
        value = c.today.month
    return f"(m.birthday IS NOT NULL AND {c.compare(month, op, value)})"


def _tier(c: _Compiler, op: str, value: Any, _: int | None) -> str:
    """As models.tiers.standing.current_of: the row's tier while it is active, else the entry tier."""
    active = "SELECT 1 FROM member_tier t JOIN tier r ON r.id = t.tier_id WHERE t.member_id = m.id AND r.is_active = 1"
    held = f"EXISTS ({active} AND t.tier_id IN ({c.bind(*value)}))"
    if c.entry_tier_id is not None and c.entry_tier_id in value:
        return f"({held} OR NOT EXISTS ({active}))"
    return held


def _registered_at(c: _Compiler, op: str, value: Any, _: int | None) -> str:
    first, last = date.fromisoformat(value[0]), date.fromisoformat(value[1])
    start, end = c.bind(c.midnight(first)), c.bind(c.midnight(last + timedelta(days=1)))
    return f"(m.created_at >= {start} AND m.created_at < {end})"


def _registered_days_ago(c: _Compiler, op: str, value: Any, _: int | None) -> str:
    return c.days_ago(lambda start: f"(m.created_at >= {start})", op, value)


def _purchased(condition: str = "") -> str:
    return f"EXISTS (SELECT 1 FROM purchase p WHERE p.member_id = m.id AND p.status = 'settled'{condition})"


def _last_purchase(c: _Compiler, op: str, value: Any, _: int | None) -> str:
    return f"({_purchased()} AND {c.days_ago(lambda start: _purchased(f' AND p.occurred_at >= {start}'), op, value)})"


def _purchase_figure(aggregate: str) -> Callable[[_Compiler, str, Any, int | None], str]:
    def leaf(c: _Compiler, op: str, value: Any, window_days: int | None) -> str:
        since = c.since(window_days, "p.occurred_at")
        figure = f"(SELECT {aggregate} FROM purchase p WHERE p.member_id = m.id AND p.status = 'settled'{since})"
        return c.compare(figure, op, value)

    return leaf


def _avg_order_value(c: _Compiler, op: str, value: Any, window_days: int | None) -> str:
    low, high = _range(op, value)
    since = c.since(window_days, "p.occurred_at")
    having = []  # SUM / COUNT compared without division: integers only
    if low is not None:
        having.append(f"SUM(p.amount) >= {c.bind(low)} * COUNT(*)")
    if high is not None:
        having.append(f"SUM(p.amount) <= {c.bind(high)} * COUNT(*)")
    return (
        f"EXISTS (SELECT 1 FROM purchase p WHERE p.member_id = m.id AND p.status = 'settled'{since}"
        f" GROUP BY p.member_id HAVING {' AND '.join(having)})"
    )


def _account(table: str) -> Callable[[_Compiler, str, Any, int | None], str]:
    def leaf(c: _Compiler, op: str, value: Any, _: int | None) -> str:
        return c.compare(f"COALESCE((SELECT a.balance FROM {table} a WHERE a.member_id = m.id), 0)", op, value)

    return leaf


def _points_expiring(c: _Compiler, op: str, value: Any, _: int | None) -> str:
    now, until = c.bind(c.now), c.bind(c.now + timedelta(days=value["days"]))
    expiring = (
        "COALESCE((SELECT SUM(l.remaining) FROM points_lot l WHERE l.member_id = m.id AND l.status = 'open'"
        f" AND l.expires_at > {now} AND l.expires_at <= {until}), 0)"
    )
    return f"{expiring} >= {c.bind(value['gte'])}"


def _exists(sql: Callable[[_Compiler], str]) -> Callable[[_Compiler, str, Any, int | None], str]:
    def leaf(c: _Compiler, op: str, value: Any, _: int | None) -> str:
        found = f"EXISTS ({sql(c)})"
        return found if value else f"NOT {found}"

    return leaf


def _plan(c: _Compiler) -> str:
    started = f"mp.starts_at <= {c.bind(c.now)}"
    return (
        f"SELECT 1 FROM member_plan mp WHERE mp.member_id = m.id AND mp.status = 'active' AND {started}"
        f" AND (mp.ends_at IS NULL OR mp.ends_at > {c.bind(c.now)})"
    )


def _coupons_used(c: _Compiler, op: str, value: Any, window_days: int | None) -> str:
    since = c.since(window_days, "c.used_at")
    count = f"(SELECT COUNT(*) FROM coupon c WHERE c.member_id = m.id AND c.status = 'used'{since})"
    return c.compare(count, op, value)


def _coupons_usable(c: _Compiler, op: str, value: Any, _: int | None) -> str:
    start, end = c.bind(c.now), c.bind(c.now)
    count = (
        "(SELECT COUNT(*) FROM coupon c WHERE c.member_id = m.id AND c.status = 'usable'"
        f" AND c.valid_from <= {start} AND c.valid_until > {end})"
    )
    return c.compare(count, op, value)


def _column(expr: str) -> Callable[[_Compiler, str, Any, int | None], str]:
    def leaf(c: _Compiler, op: str, value: Any, _: int | None) -> str:
        if isinstance(value, bool):
            return f"{expr} = {c.bind(1 if value else 0)}"
        return c.compare(expr, op, value)

    return leaf


_LEAVES: dict[str, Callable[[_Compiler, str, Any, int | None], str]] = {
    "gender": _column("m.gender"),
    "age": _age,
    "birthday_month": _birthday_month,
    "tier": _tier,
    "origin_store": _column("m.origin_store_id"),
    "registered_at": _registered_at,
    "registered_days_ago": _registered_days_ago,
    "source": _column("m.source"),
    "subscribed": _column("m.subscribed"),
    "card_activated": _exists(
        lambda c: "SELECT 1 FROM member_card mc WHERE mc.member_id = m.id AND mc.status = 'activated'"
    ),
    "last_purchase_days_ago": _last_purchase,
    "purchase_count": _purchase_figure("COUNT(*)"),
    "purchase_amount": _purchase_figure("COALESCE(SUM(p.amount), 0)"),
    "avg_order_value": _avg_order_value,
    "points_balance": _account("points_account"),
    "points_expiring_within": _points_expiring,
    "balance": _account("balance_account"),
    "plan_active": _exists(_plan),
    "coupons_used_within": _coupons_used,
    "coupons_usable": _coupons_usable,
}


def compile_rule(
    rule: dict[str, Any], *, now: datetime, zone: ZoneInfo, dialect: str, entry_tier_id: int | None = None
) -> tuple[str, list[Any]]:
    """A checked rule as one SQL condition over `member m` and its parameters (`%s` placeholders)."""
    compiler = _Compiler(now=now, zone=zone, dialect=dialect, entry_tier_id=entry_tier_id)
    return compiler.node(rule), compiler.params
