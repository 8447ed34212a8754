from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index


class Migration(migrations.Migration):
    dependencies = [("models", "0015_pos_checkout")]

    initial = False

    operations = [
        ops.CreateModel(
            name="PosApiKey",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("store_id", fields.IntField()),
                ("name", fields.CharField(max_length=64)),
                ("prefix", fields.CharField(unique=True, max_length=8)),
                ("key_hash", fields.CharField(max_length=64)),
                ("created_by_staff_id", fields.IntField(null=True)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("revoked_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("last_used_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "pos_api_key",
                "app": "models",
                "indexes": [Index(fields=["merchant_id", "store_id"])],
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
    ]
