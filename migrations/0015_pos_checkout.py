from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields


class Migration(migrations.Migration):
    dependencies = [("models", "0014_coupons")]

    initial = False

    operations = [
        ops.CreateModel(
            name="PurchaseReturn",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("purchase_id", fields.BigIntField()),
                ("member_id", fields.IntField()),
                ("idempotency_key", fields.CharField(max_length=128)),
                ("request_hash", fields.CharField(max_length=64)),
                ("gross", fields.BigIntField(default=0)),
                ("points_back", fields.BigIntField(default=0)),
                ("points_lost", fields.BigIntField(default=0)),
                ("balance_back", fields.BigIntField(default=0)),
                ("earned_back", fields.BigIntField(default=0)),
                ("growth_back", fields.BigIntField(default=0)),
                ("refund_due", fields.BigIntField(default=0)),
                ("whole", fields.BooleanField(default=False)),
                ("coupon_back", fields.BooleanField(default=False)),
                ("staff_id", fields.IntField(null=True)),
                ("api_key_id", fields.IntField(null=True)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "purchase_return",
                "app": "models",
                "unique_together": (("purchase_id", "idempotency_key"),),
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="PurchaseReturnLine",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("return_id", fields.BigIntField(db_index=True)),
                ("purchase_id", fields.BigIntField(db_index=True)),
                ("line_index", fields.IntField()),
                ("sku", fields.CharField(max_length=64)),
                ("quantity", fields.IntField()),
                ("gross", fields.BigIntField(default=0)),
                ("tier_discount", fields.BigIntField(default=0)),
                ("coupon_discount", fields.BigIntField(default=0)),
                ("points", fields.BigIntField(default=0)),
                ("points_fen", fields.BigIntField(default=0)),
                ("balance_fen", fields.BigIntField(default=0)),
                ("due", fields.BigIntField(default=0)),
            ],
            options={"table": "purchase_return_line", "app": "models", "pk_attr": "id"},
            bases=["Model"],
        ),
        ops.AddField(
            model_name="Purchase",
            name="balance_fen",
            field=fields.BigIntField(null=True),
        ),
        ops.AddField(
            model_name="Purchase",
            name="coupon_discount",
            field=fields.BigIntField(null=True),
        ),
        ops.AddField(
            model_name="Purchase",
            name="coupon_id",
            field=fields.BigIntField(null=True),
        ),
        ops.AddField(
            model_name="Purchase",
            name="due",
            field=fields.BigIntField(null=True),
        ),
        ops.AddField(
            model_name="Purchase",
            name="gross",
            field=fields.BigIntField(null=True),
        ),
        ops.AddField(
            model_name="Purchase",
            name="lines",
            field=fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads),
        ),
        ops.AddField(
            model_name="Purchase",
            name="payments",
            field=fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads),
        ),
        ops.AddField(
            model_name="Purchase",
            name="points_fen",
            field=fields.BigIntField(null=True),
        ),
        ops.AddField(
            model_name="Purchase",
            name="points_used",
            field=fields.BigIntField(null=True),
        ),
        ops.AddField(
            model_name="Purchase",
            name="request_hash",
            field=fields.CharField(null=True, max_length=64),
        ),
        ops.AddField(
            model_name="Purchase",
            name="return_seq",
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name="Purchase",
            name="source",
            field=fields.CharField(null=True, max_length=8),
        ),
        ops.AddField(
            model_name="Purchase",
            name="staff_id",
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name="Purchase",
            name="api_key_id",
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name="Purchase",
            name="tier_discount",
            field=fields.BigIntField(null=True),
        ),
    ]
