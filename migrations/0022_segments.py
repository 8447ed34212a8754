from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0021_member_tags')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Segment',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant_id', fields.IntField()),
                ('code', fields.CharField(max_length=32)),
                ('name', fields.CharField(max_length=64)),
                ('definition', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('status', fields.CharField(default='active', max_length=8)),
                ('created_by', fields.IntField(null=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'segment', 'app': 'models', 'unique_together': (('merchant_id', 'code'),), 'indexes': [Index(fields=['merchant_id', 'status'])], 'pk_attr': 'id', 'table_description': 'A saved audience: a boolean combination of tags and rule conditions (segments/rules.py), evaluated live.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SegmentSnapshot',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('segment_id', fields.IntField()),
                ('merchant_id', fields.IntField()),
                ('store_id', fields.IntField(null=True)),
                ('definition', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('member_count', fields.IntField(default=0)),
                ('created_by', fields.IntField(null=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'segment_snapshot', 'app': 'models', 'indexes': [Index(fields=['segment_id', 'id'])], 'pk_attr': 'id', 'table_description': "A segment's audience frozen at one moment (a campaign's audience): its members never change afterwards."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SegmentSnapshotMember',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('snapshot_id', fields.IntField()),
                ('member_id', fields.IntField()),
            ],
            options={'table': 'segment_snapshot_member', 'app': 'models', 'unique_together': (('snapshot_id', 'member_id'),), 'pk_attr': 'id', 'table_description': 'One member of a snapshot: the (snapshot_id, member_id) key is also the keyset of its paged listing.'},
            bases=['Model'],
        ),
        ops.AddIndex(
            model_name='Purchase',
            index=Index(fields=['member_id', 'status', 'occurred_at', 'amount']),
        ),
    ]
