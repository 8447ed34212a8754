"""Balances held before lots existed become one legacy principal lot each, once: credits then never look for them."""

from tortoise import migrations
from tortoise.migrations import operations as ops

# every account holding more than its open lots gets one open principal lot for the difference (both backends)
LEGACY_LOTS_SQL = """
INSERT INTO balance_lot (merchant_id, member_id, entry_id, source, order_id, principal, bonus,
                         principal_remaining, bonus_remaining, status, created_at)
SELECT account.merchant_id, account.member_id, NULL, 'legacy', NULL,
       account.balance - COALESCE(held.amount, 0), 0, account.balance - COALESCE(held.amount, 0), 0,
       'open', CURRENT_TIMESTAMP
FROM balance_account account
LEFT JOIN (
    SELECT member_id, SUM(principal_remaining + bonus_remaining) AS amount
    FROM balance_lot WHERE status = 'open' GROUP BY member_id
) held ON held.member_id = account.member_id
WHERE account.balance > COALESCE(held.amount, 0)
"""


class Migration(migrations.Migration):
    dependencies = [("models", "0009_points_growth_buckets")]

    initial = False

    operations = [ops.RunSQL(LEGACY_LOTS_SQL, reverse_sql=ops.RunSQL.noop)]
