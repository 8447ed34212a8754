from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from typing import Any


async def fill_points_expiry(apps: Any, schema_editor: Any) -> None:
    """Every member's open points per expiry instant, summed from their open lots (never-expiring ones are not
    counted, an instant holding nothing gets no row). The same SQL on both dialects: expires_at is copied as stored."""
    await schema_editor.client.execute_query(
        "INSERT INTO points_expiry (merchant_id, member_id, expires_at, points)"
        " SELECT MIN(merchant_id), member_id, expires_at, SUM(remaining) FROM points_lot"
        " WHERE status = 'open' AND expires_at IS NOT NULL GROUP BY member_id, expires_at HAVING SUM(remaining) > 0"
    )


class Migration(migrations.Migration):
    dependencies = [("models", "0012_points_lot_covering_index")]

    initial = False

    operations = [
        ops.CreateModel(
            name="PointsExpiry",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("expires_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("points", fields.BigIntField(default=0)),
            ],
            options={
                "table": "points_expiry",
                "app": "models",
                "unique_together": (("member_id", "expires_at"),),
                "pk_attr": "id",
                "table_description": 'A member\'s open points per expiry instant, kept with every lot change: "expiring soon" reads instants, not lots.',
            },
            bases=["Model"],
        ),
        ops.RunPython(fill_points_expiry, ops.RunPython.noop),
    ]
