from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index


class Migration(migrations.Migration):
    dependencies = [("models", "0006_wechat_message_mode")]

    initial = False

    operations = [
        ops.AddIndex(
            model_name="OutboxMessage",
            index=Index(fields=["merchant_id", "status", "topic"]),
        ),
    ]
