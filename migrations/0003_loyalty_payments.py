from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields
from tortoise.indexes import Index


class Migration(migrations.Migration):
    dependencies = [("models", "0002_onboarding")]

    initial = False

    operations = [
        ops.CreateModel(
            name="BalanceLot",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("entry_id", fields.BigIntField(null=True, unique=True)),
                ("source", fields.CharField(default="recharge", max_length=8)),
                ("order_id", fields.BigIntField(null=True, db_index=True)),
                ("principal", fields.BigIntField(default=0)),
                ("bonus", fields.BigIntField(default=0)),
                ("principal_remaining", fields.BigIntField(default=0)),
                ("bonus_remaining", fields.BigIntField(default=0)),
                ("status", fields.CharField(default="open", max_length=8)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "balance_lot",
                "app": "models",
                "indexes": [Index(fields=["member_id", "status", "id"])],
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="BalanceLotUse",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("debit_entry_id", fields.BigIntField(db_index=True)),
                ("lot_id", fields.BigIntField(db_index=True)),
                ("principal", fields.BigIntField(default=0)),
                ("bonus", fields.BigIntField(default=0)),
                ("restored", fields.BooleanField(default=False)),
            ],
            options={
                "table": "balance_lot_use",
                "app": "models",
                "pk_attr": "id",
                "table_description": "What one ledger row took from one lot (a restoring row writes negative amounts, marked restored).",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="GrowthEntry",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("delta", fields.BigIntField()),
                ("kind", fields.CharField(max_length=16)),
                ("reason", fields.CharField(max_length=255)),
                ("idempotency_key", fields.CharField(max_length=128)),
                ("ref_type", fields.CharField(default="", max_length=32)),
                ("ref_id", fields.CharField(default="", max_length=64)),
                ("occurred_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "growth_ledger",
                "app": "models",
                "unique_together": (("merchant_id", "idempotency_key"),),
                "indexes": [Index(fields=["member_id", "occurred_at"])],
                "pk_attr": "id",
                "table_description": "Growth value ledger (never spent), summed by occurred_at for rolling windows.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="LoyaltyProgram",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField(unique=True)),
                (
                    "points_rules",
                    fields.JSONField(
                        default=dict, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                (
                    "signin_rules",
                    fields.JSONField(
                        default=dict, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                (
                    "tier_policy",
                    fields.JSONField(
                        default=dict, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("version", fields.IntField(default=1)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "loyalty_program",
                "app": "models",
                "pk_attr": "id",
                "table_description": "One row per merchant. Each JSON column is validated by its domain's pydantic schema before it is saved.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="MemberPlan",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("plan_id", fields.IntField()),
                ("order_id", fields.BigIntField(unique=True)),
                ("starts_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("ends_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("status", fields.CharField(default="active", max_length=12)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "member_plan",
                "app": "models",
                "indexes": [Index(fields=["member_id", "ends_at"])],
                "pk_attr": "id",
                "table_description": "One purchased term of a plan. Renewals stack: each term starts when the previous one ends.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="MemberTier",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField(unique=True)),
                ("tier_id", fields.IntField(null=True)),
                ("since", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("keep_until", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("manual_until", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("manual_reason", fields.CharField(default="", max_length=255)),
                ("growth_total", fields.BigIntField(default=0)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "member_tier",
                "app": "models",
                "pk_attr": "id",
                "table_description": "A member's current tier, one row per member, changed only through models.tier_rules.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="PaidPlan",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("code", fields.CharField(max_length=32)),
                ("name", fields.CharField(max_length=64)),
                ("period", fields.CharField(max_length=12)),
                ("price", fields.BigIntField()),
                ("tier_id", fields.IntField(null=True)),
                ("points_multiplier_permille", fields.IntField(default=1000)),
                (
                    "benefits",
                    fields.JSONField(
                        default=dict, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("refund_rule", fields.CharField(default="pro_rata", max_length=12)),
                ("is_active", fields.BooleanField(default=True)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "paid_plan",
                "app": "models",
                "unique_together": (("merchant_id", "code"),),
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="PayAnomaly",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("kind", fields.CharField(max_length=32)),
                ("out_trade_no", fields.CharField(default="", max_length=64)),
                (
                    "detail",
                    fields.JSONField(
                        default=dict, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("dedupe_key", fields.CharField(unique=True, max_length=128)),
                ("resolved", fields.BooleanField(default=False)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "pay_anomaly",
                "app": "models",
                "pk_attr": "id",
                "table_description": "A verified notify that could not be applied (amount or ids mismatch, unknown order): for staff.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="PayOrder",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("kind", fields.CharField(max_length=12)),
                ("out_trade_no", fields.CharField(unique=True, max_length=32)),
                ("package_id", fields.IntField(null=True)),
                ("plan_id", fields.IntField(null=True)),
                ("amount", fields.BigIntField()),
                ("bonus_balance", fields.BigIntField(default=0)),
                ("bonus_points", fields.BigIntField(default=0)),
                ("description", fields.CharField(max_length=127)),
                ("status", fields.CharField(default="CREATED", max_length=12)),
                ("api_version", fields.CharField(max_length=4)),
                ("mch_id", fields.CharField(max_length=32)),
                ("appid", fields.CharField(max_length=32)),
                ("openid", fields.CharField(max_length=64)),
                ("prepay_id", fields.CharField(default="", max_length=64)),
                ("transaction_id", fields.CharField(default="", max_length=64)),
                (
                    "snapshot",
                    fields.JSONField(
                        default=dict, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("paid_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("closed_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("expires_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("refunded_amount", fields.BigIntField(default=0)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "pay_order",
                "app": "models",
                "indexes": [
                    Index(fields=["status", "created_at"]),
                    Index(fields=["member_id", "id"]),
                    Index(fields=["merchant_id", "id"]),
                ],
                "pk_attr": "id",
                "table_description": "CREATED → PAID | CLOSED, then PAID → REFUNDING → REFUNDED, every move is a conditional update.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="PayRefund",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("order_id", fields.BigIntField(db_index=True)),
                ("out_refund_no", fields.CharField(unique=True, max_length=64)),
                ("amount", fields.BigIntField()),
                ("forfeited_bonus", fields.BigIntField(default=0)),
                ("status", fields.CharField(default="PENDING", max_length=12)),
                ("refund_id", fields.CharField(default="", max_length=64)),
                ("reason", fields.CharField(default="", max_length=255)),
                ("last_error", fields.CharField(default="", max_length=255)),
                ("operator_staff_id", fields.IntField(null=True)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("settled_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={"table": "pay_refund", "app": "models", "pk_attr": "id"},
            bases=["Model"],
        ),
        ops.CreateModel(
            name="PlanReminder",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("member_plan_id", fields.BigIntField(unique=True)),
                ("ends_on", fields.DateField()),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "plan_reminder",
                "app": "models",
                "pk_attr": "id",
                "table_description": "The expiry notice of one term, sent once: the unique term id is the guard.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="PointsLot",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("entry_id", fields.BigIntField(unique=True)),
                ("amount", fields.BigIntField()),
                ("remaining", fields.BigIntField()),
                ("expired", fields.BigIntField(default=0)),
                ("expires_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("status", fields.CharField(default="open", max_length=8)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "points_lot",
                "app": "models",
                "indexes": [
                    Index(fields=["member_id", "status", "expires_at", "id"]),
                    Index(fields=["status", "expires_at", "id"]),
                ],
                "pk_attr": "id",
                "table_description": "Points credited by one ledger row, spent oldest-expiry first and expired by what remains.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="PointsLotUse",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("debit_entry_id", fields.BigIntField(db_index=True)),
                ("lot_id", fields.BigIntField(db_index=True)),
                ("amount", fields.BigIntField()),
                ("restored", fields.BigIntField(default=0)),
            ],
            options={
                "table": "points_lot_use",
                "app": "models",
                "pk_attr": "id",
                "table_description": "How much of a lot one debit consumed (and how much a reversal has given back).",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="PointsReminder",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("expires_on", fields.DateField()),
                ("days_before", fields.IntField()),
                ("points", fields.BigIntField()),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "points_reminder",
                "app": "models",
                "unique_together": (("member_id", "expires_on", "days_before"),),
                "pk_attr": "id",
                "table_description": "One expiry reminder per member, expiry day and lead time, so a rerun never sends it twice.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="Purchase",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("store_id", fields.IntField(null=True)),
                ("order_no", fields.CharField(max_length=64)),
                ("amount", fields.BigIntField()),
                (
                    "items",
                    fields.JSONField(
                        default=list, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("points", fields.BigIntField(default=0)),
                ("growth", fields.BigIntField(default=0)),
                ("status", fields.CharField(default="settled", max_length=12)),
                ("occurred_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "purchase",
                "app": "models",
                "unique_together": (("merchant_id", "order_no"),),
                "indexes": [Index(fields=["member_id", "occurred_at"])],
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="RechargePackage",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("name", fields.CharField(max_length=64)),
                ("price", fields.BigIntField()),
                ("bonus_balance", fields.BigIntField(default=0)),
                ("bonus_points", fields.BigIntField(default=0)),
                ("gift_tier_id", fields.IntField(null=True)),
                (
                    "gifts",
                    fields.JSONField(
                        default=dict, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("valid_from", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("valid_until", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("per_member_limit", fields.IntField(default=0)),
                ("sort", fields.IntField(default=0)),
                ("is_active", fields.BooleanField(default=True)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={"table": "recharge_package", "app": "models", "pk_attr": "id"},
            bases=["Model"],
        ),
        ops.CreateModel(
            name="RefundDetail",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("refund_id", fields.BigIntField(unique=True)),
                ("principal_entry_id", fields.BigIntField(null=True)),
                ("bonus_entry_id", fields.BigIntField(null=True)),
                ("points_entry_id", fields.BigIntField(null=True)),
                ("points_clawed_back", fields.BigIntField(default=0)),
                ("points_not_clawed", fields.BigIntField(default=0)),
                ("member_plan_id", fields.BigIntField(null=True)),
                ("term_starts_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("term_ends_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("shifted_seconds", fields.BigIntField(default=0)),
            ],
            options={
                "table": "pay_refund_detail",
                "app": "models",
                "pk_attr": "id",
                "table_description": "What a refund took besides the WeChat money, so that a cancel gives back exactly that.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="SignIn",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("local_date", fields.DateField()),
                ("streak", fields.IntField()),
                ("points", fields.IntField(default=0)),
                ("makeup", fields.BooleanField(default=False)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "sign_in",
                "app": "models",
                "unique_together": (("member_id", "local_date"),),
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="Tier",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("code", fields.CharField(max_length=32)),
                ("name", fields.CharField(max_length=32)),
                ("rank", fields.IntField()),
                ("threshold", fields.BigIntField(default=0)),
                ("points_multiplier_permille", fields.IntField(default=1000)),
                ("discount_permille", fields.IntField(default=1000)),
                (
                    "benefits",
                    fields.JSONField(
                        default=dict, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                (
                    "upgrade_gift",
                    fields.JSONField(
                        default=dict, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("is_active", fields.BooleanField(default=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "tier",
                "app": "models",
                "unique_together": (("merchant_id", "code"), ("merchant_id", "rank")),
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="TierChange",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("from_tier_id", fields.IntField(null=True)),
                ("to_tier_id", fields.IntField(null=True)),
                ("reason", fields.CharField(max_length=32)),
                ("detail", fields.CharField(default="", max_length=255)),
                (
                    "rule_snapshot",
                    fields.JSONField(
                        default=dict, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("operator_staff_id", fields.IntField(null=True)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "tier_change",
                "app": "models",
                "indexes": [Index(fields=["member_id", "id"])],
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="TierGiftGrant",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("tier_id", fields.IntField()),
                ("period", fields.CharField(max_length=16)),
                (
                    "gift",
                    fields.JSONField(
                        default=dict, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "tier_gift_grant",
                "app": "models",
                "unique_together": (("member_id", "tier_id", "period"),),
                "pk_attr": "id",
                "table_description": "The upgrade gift pack of a tier, granted once per member, tier and period.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="TierNotice",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("period", fields.CharField(max_length=7)),
                ("from_tier_id", fields.IntField(null=True)),
                ("to_tier_id", fields.IntField(null=True)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "tier_notice",
                "app": "models",
                "unique_together": (("member_id", "period"),),
                "pk_attr": "id",
                "table_description": "One downgrade notice per member and settlement period, so a rerun or a second scheduler never sends two.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="TierSettlement",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("period", fields.CharField(max_length=7)),
                ("status", fields.CharField(default="running", max_length=12)),
                ("members_checked", fields.IntField(default=0)),
                ("downgraded", fields.IntField(default=0)),
                ("upgraded", fields.IntField(default=0)),
                ("started_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("finished_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "tier_settlement",
                "app": "models",
                "unique_together": (("merchant_id", "period"),),
                "pk_attr": "id",
                "table_description": 'One tier settlement run per merchant and period (e.g. "2027-03"), so a second scheduler skips it.',
            },
            bases=["Model"],
        ),
    ]
