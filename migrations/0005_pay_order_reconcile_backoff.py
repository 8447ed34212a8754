from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields


class Migration(migrations.Migration):
    dependencies = [("models", "0004_import_lease")]

    initial = False

    operations = [
        ops.AddField(
            model_name="PayOrder",
            name="next_reconcile_at",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name="PayOrder",
            name="reconcile_failures",
            field=fields.IntField(default=0),
        ),
    ]
