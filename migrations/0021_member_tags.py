from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0020_portrait_rfm')]

    initial = False

    operations = [
        ops.CreateModel(
            name='MemberTag',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant_id', fields.IntField()),
                ('member_id', fields.IntField()),
                ('tag_id', fields.IntField()),
                ('source', fields.CharField(max_length=8)),
                ('added_by', fields.IntField(null=True)),
                ('added_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'member_tag', 'app': 'models', 'unique_together': (('tag_id', 'member_id'),), 'indexes': [Index(fields=['member_id'])], 'pk_attr': 'id', 'table_description': 'One member carrying one tag: the (tag_id, member_id) key makes adding it twice a no-op.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Tag',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('merchant_id', fields.IntField()),
                ('code', fields.CharField(max_length=32)),
                ('name', fields.CharField(max_length=64)),
                ('kind', fields.CharField(max_length=8)),
                ('rule', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('status', fields.CharField(default='active', max_length=8)),
                ('created_by', fields.IntField(null=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('evaluated_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'tag', 'app': 'models', 'unique_together': (('merchant_id', 'code'),), 'indexes': [Index(fields=['merchant_id', 'kind', 'status'])], 'pk_attr': 'id', 'table_description': 'A manual tag (staff add and remove it) or a rule tag (its members are exactly those its rule matches).'},
            bases=['Model'],
        ),
    ]
