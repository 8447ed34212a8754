from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0019_card_coupon_field')]

    initial = False

    operations = [
        ops.CreateModel(
            name='RfmCuts',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant_id', fields.IntField(unique=True)),
                ('computed_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('cuts', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('member_count', fields.IntField(default=0)),
            ],
            options={'table': 'rfm_cuts', 'app': 'models', 'pk_attr': 'id', 'table_description': "A merchant's RFM quintile cut points as of the last nightly run (one row per merchant, replaced)."},
            bases=['Model'],
        ),
        ops.AddIndex(
            model_name='Purchase',
            index=Index(fields=['merchant_id', 'status', 'occurred_at', 'member_id', 'amount']),
        ),
    ]
