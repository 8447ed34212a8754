from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index


class Migration(migrations.Migration):
    dependencies = [("models", "0011_config_version")]

    initial = False

    operations = [
        # the new index first: the member's lots are never without one while the old is dropped
        ops.AddIndex(
            model_name="PointsLot",
            index=Index(fields=["member_id", "status", "expires_at", "id", "remaining"]),
        ),
        ops.RemoveIndex(
            model_name="PointsLot",
            name=None,
            fields=["member_id", "status", "expires_at", "id"],
        ),
    ]
