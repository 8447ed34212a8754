"""The rule language of rule tags: a small typed JSON, checked against the merchant (rules_sql.py compiles it).

A rule is a node: `{"all": [node, ...]}`, `{"any": [...]}`, `{"none": [...]}` (none: no child matches), or a
condition `{"field": ..., "op": ..., "value": ..., "window_days": ...}` (window_days only for the windowed
fields; absent: the member's whole history). A segment's definition may also hold `{"tag": <id or code>}` leaves
(the member carries that active tag); a rule tag's rule may not, so no tag depends on another.

The compiled condition reads the `member` row aliased `m` and the real tables through correlated subqueries, every
value a bound parameter (`%s`, models.kernel.sqlpath), the same text on MySQL/MariaDB and SQLite except where
`dialect()` differs: members are never loaded into Python.

Days are the merchant's local days: "within 30 days" is today and the 29 days before; "N days ago" counts local
days from the event's day to today. A member who never bought is never matched by last_purchase_days_ago (any op),
nor by avg_order_value; purchase_count / purchase_amount of such a member are 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from models.kernel.errors import Unprocessable
from models.members.custom_fields import CustomFieldDef, list_fields
from models.members.members import GENDERS
from models.segments.tables import Tag
from models.tenancy.merchants import Store
from models.tiers.tables import Tier

GROUPS = ("all", "any", "none")
LEAF_KEYS = frozenset({"field", "op", "value", "window_days"})
SOURCES = ("staff", "oa_qr", "card", "mp", "import")
MAX_DEPTH = 6
MAX_NODES = 60
MAX_LIST = 100
MAX_INT = 10**15
MAX_DAYS = 3660
RANGE_OPS = ("gte", "lte", "between")
CUSTOM_PREFIX = "custom."
CUSTOM_OPS = {
    "string": ("eq", "in"),
    "enum": ("eq", "in"),
    "int": ("eq", "in", "gte", "lte", "between"),
    "date": ("eq", "gte", "lte", "between"),
    "bool": ("eq",),
}


@dataclass(frozen=True)
class FieldSpec:
    ops: tuple[str, ...]
    value: str  # int | bool | gender | month | tier | store | source | date | expiring
    windowed: bool = False  # takes window_days
    timely: bool = False  # its answer moves with the clock alone: re-evaluated nightly
    maximum: int = MAX_INT


FIELDS: dict[str, FieldSpec] = {
    "gender": FieldSpec(("eq", "in"), "gender"),
    "age": FieldSpec(RANGE_OPS, "int", timely=True, maximum=150),
    "birthday_month": FieldSpec(("eq", "in"), "month"),
    "tier": FieldSpec(("in",), "tier"),
    "origin_store": FieldSpec(("in",), "store"),
    "registered_at": FieldSpec(("between",), "date"),
    "registered_days_ago": FieldSpec(RANGE_OPS, "int", timely=True, maximum=MAX_DAYS * 10),
    "source": FieldSpec(("in",), "source"),
    "subscribed": FieldSpec(("eq",), "bool"),
    "card_activated": FieldSpec(("eq",), "bool"),
    "last_purchase_days_ago": FieldSpec(RANGE_OPS, "int", timely=True, maximum=MAX_DAYS * 10),
    # purchases re-evaluate their member through the purchase's points entry; one that earns no points has none,
    # so rules on purchases are refreshed nightly too
    "purchase_count": FieldSpec(RANGE_OPS, "int", windowed=True, timely=True),
    "purchase_amount": FieldSpec(RANGE_OPS, "int", windowed=True, timely=True),  # fen of settled purchases
    "avg_order_value": FieldSpec(RANGE_OPS, "int", windowed=True, timely=True),  # fen
    "points_balance": FieldSpec(RANGE_OPS, "int"),
    "points_expiring_within": FieldSpec(("within",), "expiring", timely=True),  # value {"days", "gte"}
    "balance": FieldSpec(RANGE_OPS, "int"),  # stored value, fen
    "plan_active": FieldSpec(("eq",), "bool", timely=True),
    "coupons_used_within": FieldSpec(RANGE_OPS, "int", windowed=True),
    "coupons_usable": FieldSpec(RANGE_OPS, "int", timely=True),
}


@dataclass(frozen=True)
class RuleContext:
    """What a rule may name: the merchant's tiers (by code and id), stores and custom fields."""

    tier_ids: dict[str, int]
    known_tier_ids: frozenset[int]
    store_ids: frozenset[int]
    custom_fields: dict[str, CustomFieldDef] = field(default_factory=dict)
    tag_ids: dict[str, int] = field(default_factory=dict)  # code -> id, every status
    tag_status: dict[int, str] = field(default_factory=dict)  # id -> active | archived


async def load_context(*, merchant_id: int, with_tags: bool = False) -> RuleContext:
    """The merchant's tiers, stores and custom fields (and tags, for a segment), read once to check one rule."""
    tiers = await Tier.filter(merchant_id=merchant_id).values_list("id", "code")
    stores: list[Any] = list(await Store.filter(merchant_id=merchant_id).values_list("id", flat=True))
    tags = await Tag.filter(merchant_id=merchant_id).values_list("id", "code", "status") if with_tags else []
    return RuleContext(
        tier_ids={str(code): int(tier_id) for tier_id, code in tiers},
        known_tier_ids=frozenset(int(tier_id) for tier_id, _ in tiers),
        store_ids=frozenset(int(store_id) for store_id in stores),
        custom_fields={d.key: d for d in await list_fields(merchant_id=merchant_id)},
        tag_ids={str(code): int(tag_id) for tag_id, code, _ in tags},
        tag_status={int(tag_id): str(status) for tag_id, _, status in tags},
    )


def _bad(path: str, message: str, code: str = "rule.invalid") -> Unprocessable:
    return Unprocessable(message, code=code, field=path)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
    def __init__(self, context: RuleContext, *, tags: bool) -> None:
        self.context = context
        self.tags = tags  # tag leaves allowed (a segment's definition)
        self.nodes = 0

    def node(self, node: Any, path: str, depth: int) -> dict[str, Any]:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _bad(path, f"a rule has at most {MAX_NODES} nodes", "rule.too_large")
        if depth > MAX_DEPTH:
            raise _bad(path, f"a rule nests at most {MAX_DEPTH} levels", "rule.too_deep")
        if not isinstance(node, dict):
            raise _bad(path, "a rule node is an object: {all|any|none: [...]} or {field, op, value}")
        groups = [key for key in GROUPS if key in node]
        if groups:
            if len(node) != 1:
                raise _bad(path, "a group node has exactly one key: all, any or none")
            key = groups[0]
            children = node[key]
            if not isinstance(children, list) or not 1 <= len(children) <= MAX_LIST:
                raise _bad(f"{path}.{key}", f"{key} takes a list of 1 to {MAX_LIST} rule nodes")
            return {key: [self.node(child, f"{path}.{key}.{i}", depth + 1) for i, child in enumerate(children)]}
        if "tag" in node and self.tags:
            return self.tag(node, path)
        return self.leaf(node, path)

    def tag(self, node: dict[str, Any], path: str) -> dict[str, Any]:
        if len(node) != 1:
            raise _bad(path, 'a tag leaf has exactly one key: {"tag": <tag id or code>}')
        given, where = node["tag"], f"{path}.tag"
        tag_id = self.context.tag_ids.get(given) if isinstance(given, str) else given if _is_int(given) else None
        status = self.context.tag_status.get(tag_id) if tag_id is not None else None
        if tag_id is None or status is None:
            raise _bad(where, f"no tag {given!r} in this merchant", "rule.unknown_tag")
        if status != "active":
            raise _bad(where, f"the tag {given!r} is archived", "rule.tag_archived")
        return {"tag": tag_id}

    def leaf(self, node: dict[str, Any], path: str) -> dict[str, Any]:
        unknown = sorted(set(node) - LEAF_KEYS)
        if unknown:
            raise _bad(f"{path}.{unknown[0]}", f"unknown key {unknown[0]!r}: a condition has field, op, value")
        name = node.get("field")
        if not isinstance(name, str):
            raise _bad(f"{path}.field", "field is required: " + ", ".join([*FIELDS, "custom.<key>"]))
        if name.startswith(CUSTOM_PREFIX):
            return self.custom(node, path, name[len(CUSTOM_PREFIX) :])
        spec = FIELDS.get(name)
        if spec is None:
            raise _bad(f"{path}.field", f"unknown field {name!r}", "rule.unknown_field")
        op = node.get("op")
        if op not in spec.ops:
            raise _bad(f"{path}.op", f"{name} takes op {' | '.join(spec.ops)}", "rule.unknown_op")
        out: dict[str, Any] = {"field": name, "op": op, "value": self.value(spec, op, node.get("value"), path)}
        if "window_days" in node:
            window = node["window_days"]
            if not spec.windowed:
                raise _bad(f"{path}.window_days", f"{name} takes no window_days")
            if not _is_int(window) or not 1 <= window <= MAX_DAYS:
                raise _bad(f"{path}.window_days", f"window_days is a whole number of days, 1 to {MAX_DAYS}")
            out["window_days"] = window
        return out

    def value(self, spec: FieldSpec, op: str, value: Any, path: str) -> Any:
        where = f"{path}.value"
        if op == "in":
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST:
                raise _bad(where, f"in takes a list of 1 to {MAX_LIST} values")
            return [self.scalar(spec, item, f"{where}.{i}") for i, item in enumerate(value)]
        if op == "between":
            if not isinstance(value, list) or len(value) != 2:
                raise _bad(where, "between takes [low, high], both included")
            low, high = (self.scalar(spec, item, f"{where}.{i}") for i, item in enumerate(value))
            if low > high:
                raise _bad(where, "between takes [low, high] with low <= high")
            return [low, high]
        if spec.value == "expiring":
            if not isinstance(value, dict) or set(value) != {"days", "gte"}:
                raise _bad(where, 'points_expiring_within takes {"days": N, "gte": points}')
            if not _is_int(value["days"]) or not 1 <= value["days"] <= MAX_DAYS:
                raise _bad(f"{where}.days", f"days is a whole number, 1 to {MAX_DAYS}")
            if not _is_int(value["gte"]) or not 1 <= value["gte"] <= MAX_INT:
                raise _bad(f"{where}.gte", "gte is a whole number of points, at least 1")
            return {"days": value["days"], "gte": value["gte"]}
        return self.scalar(spec, value, where)

    def scalar(self, spec: FieldSpec, value: Any, where: str) -> Any:
        kind = spec.value
        if kind == "int":
            if not _is_int(value) or not 0 <= value <= spec.maximum:
                raise _bad(where, f"a whole number from 0 to {spec.maximum}")
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise _bad(where, "true or false")
            return value
        if kind == "gender":
            if value not in GENDERS:
                raise _bad(where, f"one of {', '.join(GENDERS)}")
            return value
        if kind == "source":
            if value not in SOURCES:
                raise _bad(where, f"one of {', '.join(SOURCES)}")
            return value
        if kind == "month":
            if value != "this_month" and (not _is_int(value) or not 1 <= value <= 12):
                raise _bad(where, 'a month 1 to 12, or "this_month"')
            return value
        if kind == "date":
            return _day(value, where)
        if kind == "tier":  # a tier code or id of the merchant, kept as its id
            if isinstance(value, str) and value in self.context.tier_ids:
                return self.context.tier_ids[value]
            if _is_int(value) and value in self.context.known_tier_ids:
                return value
            raise _bad(where, f"no tier {value!r} in this merchant", "rule.unknown_tier")
        if _is_int(value) and value in self.context.store_ids:  # store
            return value
        raise _bad(where, f"no store {value!r} in this merchant", "rule.unknown_store")

    def custom(self, node: dict[str, Any], path: str, key: str) -> dict[str, Any]:
        definition = self.context.custom_fields.get(key)
        if definition is None:
            raise _bad(f"{path}.field", f"no custom field {key!r} in this merchant", "rule.unknown_field")
        if "window_days" in node:
            raise _bad(f"{path}.window_days", "a custom field takes no window_days")
        ops = CUSTOM_OPS[definition.type]
        op = node.get("op")
        if op not in ops:
            raise _bad(f"{path}.op", f"custom.{key} ({definition.type}) takes op {' | '.join(ops)}", "rule.unknown_op")
        value, where = node.get("value"), f"{path}.value"
        if op == "in":
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST:
                raise _bad(where, f"in takes a list of 1 to {MAX_LIST} values")
            checked: Any = [_custom_value(definition, item, f"{where}.{i}") for i, item in enumerate(value)]
        elif op == "between":
            if not isinstance(value, list) or len(value) != 2:
                raise _bad(where, "between takes [low, high], both included")
            checked = [_custom_value(definition, item, f"{where}.{i}") for i, item in enumerate(value)]
            if checked[0] > checked[1]:
                raise _bad(where, "between takes [low, high] with low <= high")
        else:
            checked = _custom_value(definition, value, where)
        return {"field": f"{CUSTOM_PREFIX}{key}", "op": op, "value": checked}


def _day(value: Any, where: str) -> str:
    try:
        return date.fromisoformat(value).isoformat() if isinstance(value, str) and len(value) == 10 else _no_day()
    except ValueError:
        raise _bad(where, "a date YYYY-MM-DD") from None


def _no_day() -> str:
    raise ValueError


def _custom_value(definition: CustomFieldDef, value: Any, where: str) -> Any:
    kind = definition.type
    if kind == "int":
        if not _is_int(value) or abs(value) > MAX_INT:
            raise _bad(where, f"custom.{definition.key} is an integer")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _bad(where, f"custom.{definition.key} is true or false")
        return value
    if kind == "date":
        return _day(value, where)
    if kind == "enum":
        if value not in definition.options:
            raise _bad(where, f"custom.{definition.key} is one of {', '.join(definition.options)}")
        return value
    if not isinstance(value, str) or len(value) > 255:
        raise _bad(where, f"custom.{definition.key} is text up to 255 characters")
    return value


def validate_rule(rule: Any, *, context: RuleContext, root: str = "rule", tags: bool = False) -> dict[str, Any]:
    """The rule checked against the language and the merchant (422 with the JSON path from `root`), tiers kept by
    id; with tags=True (a segment) `{"tag": ...}` leaves too, kept by id."""
    return _Checker(context, tags=tags).node(rule, root, 1)


def is_timely(rule: dict[str, Any]) -> bool:
    """Whether the rule's answer can change with the clock alone (age, days ago, windows, validity)."""
    for key in GROUPS:
        if key in rule:
            return any(is_timely(child) for child in rule[key])
    if "tag" in rule:
        return False
    spec = FIELDS.get(rule["field"])
    if spec is None:
        return False
    return spec.timely or "window_days" in rule or rule["value"] == "this_month"
