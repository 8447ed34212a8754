from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0024_analytics_scan_by_time')]

    initial = False

    operations = [
        ops.AddIndex(
            model_name='QrScan',
            index=Index(fields=['merchant_id', 'member_id', 'created_at']),
        ),
    ]
