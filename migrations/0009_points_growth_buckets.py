from datetime import UTC, datetime
from typing import Any

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

_OPEN_HELD = (
    "(SELECT COALESCE(SUM(l.remaining), 0) FROM points_lot l WHERE l.member_id = a.member_id AND l.status = 'open')"
)


async def fill_legacy_lots(client: Any) -> None:
    """Points held before lots existed become one never-expiring lot per member, once.

    The lot's entry_id (unique) is the member's latest points_ledger row that credited no lot, the row that last
    changed the balance it carries; a member with no such row gets -account id, which no ledger row can have.
    """
    mysql = client.capabilities.dialect == "mysql"
    now = datetime.now(UTC)
    created = now.replace(tzinfo=None) if mysql else now.isoformat(" ")
    mark = "%s" if mysql else "?"
    await client.execute_query(
        "INSERT INTO points_lot (merchant_id, member_id, entry_id, amount, remaining, expired, expires_at, status,"
        " created_at) SELECT a.merchant_id, a.member_id, COALESCE((SELECT MAX(e.id) FROM points_ledger e"
        " WHERE e.member_id = a.member_id AND NOT EXISTS (SELECT 1 FROM points_lot u WHERE u.entry_id = e.id)),"
        f" -a.id), a.balance - {_OPEN_HELD}, a.balance - {_OPEN_HELD}, 0, NULL, 'open', {mark}"
        f" FROM points_account a WHERE a.balance > {_OPEN_HELD}",
        [created],
    )


async def fill_growth_buckets(client: Any) -> None:
    """Every member's growth per UTC day, summed from growth_ledger (occurred_at is stored in UTC)."""
    if client.capabilities.dialect == "mysql":
        day = "(YEAR(occurred_at) * 10000 + MONTH(occurred_at) * 100 + DAYOFMONTH(occurred_at))"
    else:
        day = "CAST(strftime('%Y%m%d', occurred_at) AS INTEGER)"
    await client.execute_query(
        "INSERT INTO growth_bucket (merchant_id, member_id, day, total)"
        f" SELECT MIN(merchant_id), member_id, {day}, SUM(delta) FROM growth_ledger GROUP BY member_id, {day}"
    )


async def fill_recharge_totals(client: Any) -> None:
    """Every member's fen recharged minus recharges refunded, summed from balance_ledger."""
    await client.execute_query(
        "INSERT INTO recharge_total (merchant_id, member_id, total) SELECT MIN(merchant_id), member_id, SUM(delta)"
        " FROM balance_ledger WHERE kind = 'recharge' OR (kind = 'refund' AND delta < 0) GROUP BY member_id"
    )


async def _fill(apps: Any, schema_editor: Any) -> None:
    for fill in (fill_legacy_lots, fill_growth_buckets, fill_recharge_totals):
        await fill(schema_editor.client)


class Migration(migrations.Migration):
    dependencies = [("models", "0008_auth_lockout_revocation")]

    initial = False

    operations = [
        ops.CreateModel(
            name="GrowthBucket",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField()),
                ("day", fields.IntField()),
                ("total", fields.BigIntField(default=0)),
            ],
            options={
                "table": "growth_bucket",
                "app": "models",
                "unique_together": (("member_id", "day"),),
                "pk_attr": "id",
                "table_description": "A member's growth per UTC day (YYYYMMDD), kept with every growth row: rolling windows read days, not rows.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="RechargeTotal",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("merchant_id", fields.IntField()),
                ("member_id", fields.IntField(unique=True)),
                ("total", fields.BigIntField(default=0)),
            ],
            options={
                "table": "recharge_total",
                "app": "models",
                "pk_attr": "id",
                "table_description": "Fen a member recharged minus recharges refunded, kept with every such balance row (the total_recharge basis).",
            },
            bases=["Model"],
        ),
        ops.RunPython(_fill, ops.RunPython.noop),
    ]
