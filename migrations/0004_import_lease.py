from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index


class Migration(migrations.Migration):
    dependencies = [("models", "0003_loyalty_payments")]

    initial = False

    operations = [
        ops.CreateModel(
            name="ImportChunk",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("upload_key", fields.CharField(max_length=32)),
                ("seq", fields.IntField()),
                ("data", fields.BinaryField()),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "import_chunk",
                "app": "models",
                "unique_together": (("upload_key", "seq"),),
                "pk_attr": "id",
                "table_description": "A member import file, 256 KiB a row in order, deleted when its job finishes or fails.",
            },
            bases=["Model"],
        ),
        ops.AddField(
            model_name="ImportJob",
            name="attempts",
            field=fields.IntField(default=0),
        ),
        ops.AddField(
            model_name="ImportJob",
            name="lease_owner",
            field=fields.CharField(null=True, max_length=64),
        ),
        ops.AddField(
            model_name="ImportJob",
            name="lease_until",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name="ImportJob",
            name="reached_byte",
            field=fields.BigIntField(default=0),
        ),
        ops.AddField(
            model_name="ImportJob",
            name="reached_line",
            field=fields.IntField(default=0),
        ),
        ops.AddField(
            model_name="ImportJob",
            name="upload_key",
            field=fields.CharField(default="", max_length=32),
        ),
        ops.AddIndex(
            model_name="ImportJob",
            index=Index(fields=["status", "lease_until"]),
        ),
    ]
