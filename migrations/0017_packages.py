from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields
from tortoise.indexes import Index


class Migration(migrations.Migration):
    dependencies = [("models", "0016_pos_api_keys")]

    initial = False

    operations = [
        ops.CreateModel(
            name="MemberPackage",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("template_id", fields.IntField()),
                ("kind", fields.CharField(max_length=8)),
                ("name", fields.CharField(max_length=64)),
                ("uses_total", fields.IntField(default=0)),
                ("uses_left", fields.IntField(default=0)),
                ("days_total", fields.IntField(default=0)),
                ("uses_count", fields.IntField(default=0)),
                (
                    "store_ids",
                    fields.JSONField(
                        default=list, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("valid_from", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("valid_until", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("price_paid", fields.BigIntField()),
                (
                    "payments",
                    fields.JSONField(
                        default=list, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("balance_paid", fields.BigIntField(default=0)),
                ("balance_entry_id", fields.BigIntField(null=True)),
                ("status", fields.CharField(default="active", max_length=8)),
                ("sale_key", fields.CharField(max_length=128)),
                ("sold_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("sold_by", fields.IntField(null=True)),
                ("store_id", fields.IntField(null=True)),
                ("refund_key", fields.CharField(null=True, max_length=128)),
                ("refund_amount", fields.BigIntField(default=0)),
                ("refund_balance", fields.BigIntField(default=0)),
                ("refunded_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "member_package",
                "app": "models",
                "unique_together": (("merchant_id", "sale_key"),),
                "indexes": [Index(fields=["member_id", "status"]), Index(fields=["status", "valid_until"])],
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="PackageTemplate",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("name", fields.CharField(max_length=64)),
                ("kind", fields.CharField(max_length=8)),
                ("uses", fields.IntField(null=True)),
                ("days", fields.IntField(null=True)),
                ("price", fields.BigIntField()),
                ("valid_days", fields.IntField(null=True)),
                ("service_sku", fields.CharField(default="", max_length=64)),
                ("service_category", fields.CharField(default="", max_length=64)),
                (
                    "store_ids",
                    fields.JSONField(
                        default=list, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("status", fields.CharField(default="active", max_length=8)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "package_template",
                "app": "models",
                "indexes": [Index(fields=["merchant_id", "status"])],
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="PackageUse",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_package_id", fields.BigIntField()),
                ("visit_key", fields.CharField(max_length=128)),
                ("day", fields.DateField(null=True)),
                ("store_id", fields.IntField(null=True)),
                ("staff_id", fields.IntField(null=True)),
                ("at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("reversed_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "package_use",
                "app": "models",
                "unique_together": (("member_package_id", "visit_key"), ("member_package_id", "day")),
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
    ]
