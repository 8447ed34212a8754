from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields


class Migration(migrations.Migration):
    dependencies = [("models", "0010_balance_legacy_lots")]

    initial = False

    operations = [
        ops.CreateModel(
            name="ConfigVersion",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField(unique=True)),
                ("version", fields.BigIntField(default=0)),
            ],
            options={
                "table": "config_version",
                "app": "models",
                "pk_attr": "id",
                "table_description": "One row per merchant that ever changed its configuration, whose version only goes up.",
            },
            bases=["Model"],
        ),
        ops.AlterField(
            model_name="RevokedToken",
            name="created_at",
            field=fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=True),
        ),
    ]
