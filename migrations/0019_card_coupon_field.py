from datetime import UTC, datetime
from typing import Any

from tortoise import migrations
from tortoise.migrations import operations as ops

_INSERT = (
    "INSERT INTO outbox_message (merchant_id, topic, payload, coalesce_key, status, attempts, next_attempt_at,"
    " locked_until, last_error, created_at, delivered_at)"
)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def queue_card_coupon_field(apps: Any, schema_editor: Any) -> None:
    """Cards created before the card showed coupons get custom_field2 (FIELD_NAME_TYPE_COUPON) by one card/update
    per merchant, and activated members holding usable coupons one silent card sync (books [], so WeChat sends no
    notice) that writes the count; a card without coupons shows it at its next sync. Both through the outbox,
    skipped where a message with the same coalesce key is pending, as models.kernel.outbox.enqueue does."""
    client = schema_editor.client
    mysql = client.capabilities.dialect == "mysql"
    mark = "%s" if mysql else "?"
    now = datetime.now(UTC)  # aware UTC: pymysql writes it as UTC, SQLite as Tortoise stores datetimes

    def text(*parts: str) -> str:
        return f"CONCAT({', '.join(parts)})" if mysql else "(" + " || ".join(parts) + ")"

    pending = "NOT EXISTS (SELECT 1 FROM outbox_message o WHERE o.coalesce_key = {key} AND o.status = 'pending')"
    update_key = text(_literal("card-update:"), "t.merchant_id")
    update_payload = text(_literal('{"merchant_id":'), "t.merchant_id", _literal("}"))
    await client.execute_query(
        f"{_INSERT} SELECT t.merchant_id, 'card.update', {update_payload}, {update_key}, 'pending', 0, {mark}, NULL,"
        f" '', {mark}, NULL FROM card_template t WHERE t.card_id IS NOT NULL AND {pending.format(key=update_key)}",
        [now, now],
    )
    sync_key = text(_literal("card:"), "c.member_id")
    sync_payload = text(_literal('{"member_id":'), "c.member_id", _literal(',"books":[]}'))
    await client.execute_query(
        f"{_INSERT} SELECT MIN(c.merchant_id), 'card.sync', {sync_payload}, {sync_key}, 'pending', 0, {mark}, NULL,"
        f" '', {mark}, NULL FROM member_card c WHERE c.status = 'activated' AND EXISTS (SELECT 1 FROM coupon u"
        f" WHERE u.member_id = c.member_id AND u.status = 'usable' AND u.valid_until > {mark})"
        f" AND {pending.format(key=sync_key)} GROUP BY c.member_id",
        [now, now, now],
    )


class Migration(migrations.Migration):
    dependencies = [('models', '0018_coupon_taken_back')]

    initial = False

    operations = [
        ops.RunPython(queue_card_coupon_field, ops.RunPython.noop),
    ]
