from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields


class Migration(migrations.Migration):
    dependencies = [("models", "0007_outbox_merchant_index")]

    initial = False

    operations = [
        ops.CreateModel(
            name="LoginAttempt",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("username", fields.CharField(unique=True, max_length=64)),
                ("attempts", fields.IntField(default=0)),
                ("locked_until", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("updated_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "login_attempt",
                "app": "models",
                "pk_attr": "id",
                "table_description": "Password checks per username (known or not) since the last success or lock: the source of truth of the lockout.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="RevokedToken",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("jti", fields.CharField(unique=True, max_length=32)),
                ("kind", fields.CharField(max_length=8)),
                ("subject_id", fields.IntField()),
                ("expires_at", fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "revoked_token",
                "app": "models",
                "pk_attr": "id",
                "table_description": "An access token revoked before it expires (logout), kept here to survive Redis (which only caches it).",
            },
            bases=["Model"],
        ),
    ]
