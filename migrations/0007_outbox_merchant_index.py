from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0005_pay_order_reconcile_backoff')]

    initial = False

    operations = [
        ops.AddIndex(
            model_name='OutboxMessage',
            index=Index(fields=['merchant_id', 'status', 'topic']),
        ),
    ]
