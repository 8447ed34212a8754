from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0022_segments')]

    initial = False

    operations = [
        ops.CreateModel(
            name='CategoryDay',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant_id', fields.IntField()),
                ('store_id', fields.IntField()),
                ('day', fields.DateField()),
                ('category', fields.CharField(max_length=64)),
                ('quantity', fields.BigIntField()),
                ('amount', fields.BigIntField()),
                ('orders', fields.IntField()),
            ],
            options={'table': 'category_day', 'app': 'models', 'unique_together': (('merchant_id', 'day', 'store_id', 'category'),), 'pk_attr': 'id', 'table_description': "One category's lines at one store on one merchant-local day (orders: purchases with such a line)."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='MemberDay',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant_id', fields.IntField()),
                ('store_id', fields.IntField()),
                ('day', fields.DateField()),
                ('member_id', fields.IntField()),
                ('orders', fields.IntField()),
            ],
            options={'table': 'member_day', 'app': 'models', 'unique_together': (('merchant_id', 'day', 'store_id', 'member_id'),), 'indexes': [Index(fields=['merchant_id', 'member_id', 'day', 'orders']), Index(fields=['merchant_id', 'store_id', 'day', 'member_id', 'orders'])], 'pk_attr': 'id', 'table_description': "One member's settled purchases at one store on one merchant-local day: distinct members and visits of any"},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='RollupMark',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant_id', fields.IntField(unique=True)),
                ('purchase_id', fields.BigIntField(default=0)),
                ('points_entry_id', fields.BigIntField(default=0)),
                ('return_id', fields.BigIntField(default=0)),
                ('rolled_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'analytics_rollup_mark', 'app': 'models', 'pk_attr': 'id', 'table_description': "How far the roll-up job has read a merchant's purchases, points ledger and POS returns (by id)."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SalesDay',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant_id', fields.IntField()),
                ('store_id', fields.IntField()),
                ('day', fields.DateField()),
                ('orders', fields.IntField()),
                ('members', fields.IntField()),
                ('amount', fields.BigIntField()),
                ('member_amount', fields.BigIntField()),
                ('quantity', fields.BigIntField(default=0)),
                ('amount_b0', fields.IntField(default=0)),
                ('amount_b1', fields.IntField(default=0)),
                ('amount_b2', fields.IntField(default=0)),
                ('amount_b3', fields.IntField(default=0)),
                ('amount_b4', fields.IntField(default=0)),
                ('amount_b5', fields.IntField(default=0)),
                ('amount_b6', fields.IntField(default=0)),
            ],
            options={'table': 'sales_day', 'app': 'models', 'unique_together': (('merchant_id', 'day', 'store_id'),), 'pk_attr': 'id', 'table_description': "One store's (0: no store) settled purchases of one merchant-local day, recomputed whole from purchase."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SkuDay',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant_id', fields.IntField()),
                ('store_id', fields.IntField()),
                ('day', fields.DateField()),
                ('sku', fields.CharField(max_length=64)),
                ('category', fields.CharField(max_length=64)),
                ('quantity', fields.BigIntField()),
                ('amount', fields.BigIntField()),
                ('orders', fields.IntField()),
            ],
            options={'table': 'sku_day', 'app': 'models', 'unique_together': (('merchant_id', 'day', 'store_id', 'sku', 'category'),), 'pk_attr': 'id', 'table_description': "One SKU's lines at one store on one merchant-local day."},
            bases=['Model'],
        ),
    ]
