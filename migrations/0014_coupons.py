from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields
from tortoise.indexes import Index


class Migration(migrations.Migration):
    dependencies = [("models", "0013_points_expiry")]

    initial = False

    operations = [
        ops.CreateModel(
            name="Coupon",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("template_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("claim_id", fields.BigIntField(unique=True)),
                ("channel", fields.CharField(max_length=8)),
                ("status", fields.CharField(default="usable", max_length=8)),
                ("valid_from", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("valid_until", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("used_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("order_ref", fields.CharField(null=True, max_length=64)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "coupon",
                "app": "models",
                "indexes": [
                    Index(fields=["member_id", "status", "valid_until"]),
                    Index(fields=["status", "valid_until"]),
                ],
                "pk_attr": "id",
                "table_description": "A member's coupon: usable until used (guarded in redemption.py), expired by the job, or restored on return.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="CouponClaim",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("template_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("slot", fields.IntField(null=True)),
                ("idempotency_key", fields.CharField(max_length=128)),
                ("channel", fields.CharField(max_length=8)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "coupon_claim",
                "app": "models",
                "unique_together": (("template_id", "member_id", "slot"), ("template_id", "idempotency_key")),
                "pk_attr": "id",
                "table_description": "One claim of a template by a member: the slot unique key is the per-member limit, the key the idempotency.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="CouponReminder",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("coupon_id", fields.BigIntField(unique=True)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "coupon_reminder",
                "app": "models",
                "pk_attr": "id",
                "table_description": "The one expiry reminder of a coupon (its unique key makes the reminder job exactly-once).",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="CouponTemplate",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField(db_index=True)),
                ("kind", fields.CharField(max_length=16)),
                ("name", fields.CharField(max_length=64)),
                ("description", fields.CharField(default="", max_length=255)),
                ("threshold", fields.BigIntField(default=0)),
                ("reduction", fields.BigIntField(default=0)),
                ("discount_permille", fields.IntField(default=0)),
                ("max_discount", fields.BigIntField(null=True)),
                ("gift_sku", fields.CharField(null=True, max_length=64)),
                (
                    "store_ids",
                    fields.JSONField(
                        default=list, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                (
                    "sku_include",
                    fields.JSONField(
                        default=list, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                (
                    "sku_exclude",
                    fields.JSONField(
                        default=list, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                (
                    "category_include",
                    fields.JSONField(
                        default=list, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                (
                    "category_exclude",
                    fields.JSONField(
                        default=list, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                (
                    "tier_ids",
                    fields.JSONField(
                        default=list, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("valid_from", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("valid_until", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("valid_days", fields.IntField(null=True)),
                ("total_stock", fields.IntField(null=True)),
                ("issued", fields.IntField(default=0)),
                ("per_member_limit", fields.IntField(default=1)),
                (
                    "channels",
                    fields.JSONField(
                        default=list, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("stackable", fields.BooleanField(default=True)),
                ("returnable", fields.BooleanField(default=True)),
                ("status", fields.CharField(default="active", max_length=8)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "coupon_template",
                "app": "models",
                "pk_attr": "id",
                "table_description": "What a coupon gives and who may claim it (issued only moves by the guarded stock UPDATE in issue.py).",
            },
            bases=["Model"],
        ),
        ops.AddField(
            model_name="OnboardingSettings",
            name="welcome_coupon_template_ids",
            field=fields.JSONField(
                default=list, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
            ),
        ),
    ]
