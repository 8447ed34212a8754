from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields
from tortoise.indexes import Index
from tortoise.migrations.constraints import UniqueConstraint


class Migration(migrations.Migration):
    dependencies = [("models", "0001_initial")]

    initial = False

    operations = [
        ops.CreateModel(
            name="CardTemplate",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("card_id", fields.CharField(null=True, unique=True, max_length=64)),
                ("status", fields.CharField(default="draft", max_length=16)),
                (
                    "config",
                    fields.JSONField(
                        default=dict, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                (
                    "activate_form",
                    fields.JSONField(
                        default=dict, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("reject_reason", fields.CharField(default="", max_length=255)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={"table": "card_template", "app": "models", "pk_attr": "id"},
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ImportJob",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("staff_id", fields.IntField(null=True)),
                ("filename", fields.CharField(default="", max_length=255)),
                ("status", fields.CharField(default="pending", max_length=12)),
                ("total_rows", fields.IntField(default=0)),
                ("processed_rows", fields.IntField(default=0)),
                ("created_rows", fields.IntField(default=0)),
                ("unchanged_rows", fields.IntField(default=0)),
                ("rejected_rows", fields.IntField(default=0)),
                ("error", fields.TextField(default="", unique=False)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("started_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("finished_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={"table": "import_job", "app": "models", "pk_attr": "id"},
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ImportReject",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("job_id", fields.IntField()),
                ("line", fields.IntField()),
                ("reason", fields.CharField(max_length=255)),
            ],
            options={
                "table": "import_reject",
                "app": "models",
                "indexes": [Index(fields=["job_id", "line"])],
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="MemberActivity",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("kind", fields.CharField(max_length=32)),
                (
                    "detail",
                    fields.JSONField(
                        default=dict, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("actor", fields.CharField(default="system", max_length=32)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "member_activity",
                "app": "models",
                "indexes": [Index(fields=["member_id", "id"])],
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="MemberCard",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("card_id", fields.CharField(max_length=64)),
                ("code", fields.CharField(max_length=32)),
                ("store_id", fields.IntField(null=True)),
                ("status", fields.CharField(default="claimed", max_length=16)),
                ("claimed_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("activated_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("removed_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "member_card",
                "app": "models",
                "unique_together": (("card_id", "code"),),
                "indexes": [Index(fields=["member_id", "card_id"])],
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="OnboardingSettings",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField(unique=True)),
                ("welcome_points", fields.IntField(default=0)),
                ("welcome_balance", fields.IntField(default=0)),
                ("referrer_points", fields.IntField(default=50)),
                ("referee_points", fields.IntField(default=50)),
                ("welcome_text", fields.CharField(default="欢迎加入！点击领取会员卡。", max_length=600)),
                ("tier_name", fields.CharField(default="普通会员", max_length=32)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "onboarding_settings",
                "app": "models",
                "pk_attr": "id",
                "table_description": "Per merchant: what a new member gets, once, at activation, and the welcome message.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="QrCode",
            fields=[
                ("id", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("kind", fields.CharField(max_length=8)),
                ("scene", fields.CharField(max_length=64)),
                ("store_id", fields.IntField(null=True)),
                ("staff_id", fields.IntField(null=True)),
                ("card_id", fields.CharField(default="", max_length=64)),
                ("ticket", fields.CharField(default="", max_length=255)),
                ("url", fields.CharField(default="", max_length=512)),
                ("image_png", fields.BinaryField(null=True)),
                ("label", fields.CharField(default="", max_length=64)),
                ("is_active", fields.BooleanField(default=True)),
                ("scan_count", fields.IntField(default=0)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "qr_code",
                "app": "models",
                "unique_together": (("merchant_id", "kind", "scene"),),
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="QrScan",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("qr_code_id", fields.IntField(null=True)),
                ("member_id", fields.IntField()),
                ("scene", fields.CharField(max_length=64)),
                ("event", fields.CharField(max_length=16)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "qr_scan",
                "app": "models",
                "indexes": [Index(fields=["qr_code_id", "id"])],
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.AddField(
            model_name="InboundEvent",
            name="reply",
            field=fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads),
        ),
        ops.AddField(
            model_name="Member",
            name="activated_at",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name="Member",
            name="member_no",
            field=fields.CharField(null=True, max_length=32),
        ),
        ops.AddField(
            model_name="Member",
            name="mp_openid",
            field=fields.CharField(null=True, max_length=64),
        ),
        ops.AddField(
            model_name="Member",
            name="mp_session_key_enc",
            field=fields.CharField(null=True, max_length=255),
        ),
        ops.AddField(
            model_name="Member",
            name="origin_staff_id",
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name="Member",
            name="referral_code",
            field=fields.CharField(null=True, max_length=16),
        ),
        ops.AddField(
            model_name="Member",
            name="referrer_id",
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name="Member",
            name="source",
            field=fields.CharField(default="staff", max_length=16),
        ),
        ops.AddField(
            model_name="Member",
            name="subscribed",
            field=fields.BooleanField(default=False),
        ),
        ops.AddField(
            model_name="Member",
            name="subscribed_at",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name="Member",
            name="unsubscribed_at",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddConstraint(
            model_name="Member",
            constraint=UniqueConstraint(fields=("merchant", "mp_openid"), name=None),
        ),
        ops.AddConstraint(
            model_name="Member",
            constraint=UniqueConstraint(fields=("merchant", "member_no"), name=None),
        ),
        ops.AddConstraint(
            model_name="Member",
            constraint=UniqueConstraint(fields=("merchant", "referral_code"), name=None),
        ),
        ops.AddField(
            model_name="OutboxMessage",
            name="coalesce_key",
            field=fields.CharField(null=True, db_index=True, max_length=96),
        ),
    ]
