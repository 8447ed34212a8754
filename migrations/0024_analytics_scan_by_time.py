from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0023_analytics_rollups')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Purchase',
            name='reversed_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddIndex(
            model_name='Purchase',
            index=Index(fields=['merchant_id', 'created_at']),
        ),
        ops.AddIndex(
            model_name='Purchase',
            index=Index(fields=['merchant_id', 'reversed_at']),
        ),
        ops.AddIndex(
            model_name='PurchaseReturn',
            index=Index(fields=['merchant_id', 'created_at']),
        ),
        ops.AlterModelOptions(
            name='RollupMark',
            options={'table': 'analytics_rollup_mark', 'app': 'models', 'pk_attr': 'id', 'table_description': "How far the roll-up job has read a merchant's purchases, reversals and POS returns (by time, never by id)."},
        ),
        ops.AddField(
            model_name='RollupMark',
            name='scanned_until',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        # a merchant already rolled up goes on from its last run (less the overlap), not a whole rebuild
        ops.RunSQL(
            'UPDATE analytics_rollup_mark SET scanned_until = rolled_at WHERE rolled_at IS NOT NULL',
            reverse_sql=ops.RunSQL.noop,
        ),
        ops.RemoveField(model_name='RollupMark', name='points_entry_id'),
        ops.RemoveField(model_name='RollupMark', name='purchase_id'),
        ops.RemoveField(model_name='RollupMark', name='return_id'),
    ]
