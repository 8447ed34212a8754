from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields


class Migration(migrations.Migration):
    dependencies = [("models", "0005_pay_order_reconcile_backoff")]

    initial = False

    operations = [
        ops.AddField(
            model_name="WechatAccount",
            name="message_mode",
            field=fields.CharField(default="", max_length=16),
        ),
    ]
