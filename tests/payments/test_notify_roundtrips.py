"""Round trips of the pay notify, counted in the driver: one account lookup, no savepoints, a short replay."""

from __future__ import annotations

from models.ledger.balance_lots import BalanceLot
from tests.payments.helpers import add_package, me, paying_member, recharge, use_pay_version, v2_notify
from tests.payments.roundtrips import bulk_is_one_statement, split_batches, sql_statements, touching
from tests.payments.wallet_helpers import assert_consistent, credits


async def _notify(client, settings, order: dict, transaction_id: str) -> list[str]:
    body = v2_notify(
        settings, out_trade_no=order["out_trade_no"], total_fee=order["amount"], transaction_id=transaction_id
    )
    async with sql_statements() as sent:
        response = await client.post(f"/pay/notify/v2/{settings.wechat.pay.mch_id}", content=body)
    assert response.status_code == 200, response.text
    return sent


async def test_a_fresh_notify_reads_the_pay_account_once_without_savepoints_and_a_replay_reads_only_the_order(
    app, client, admin, demo, settings
):
    await use_pay_version("v2")
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-trips")
    package = await add_package(client, admin, bonus_balance=0, bonus_points=0)
    order = (await recharge(client, headers, package_id=package["id"]))["order"]

    fresh = await _notify(client, settings, order, "4200000000000000000000000001")
    replay = await _notify(client, settings, order, "4200000000000000000000000001")

    assert (await me(client, headers))["balance"] == 10_000
    assert len(touching(fresh, "wechat_account")) == 1  # the pay account and the merchant's appids, together, once
    assert not [sql for sql in fresh if "SAVEPOINT" in sql.upper()]
    assert [sql.split()[0].upper() for sql in touching(split_batches(fresh), "balance_lot")] == ["INSERT"]
    if bulk_is_one_statement():  # MariaDB: what WeChat's notify costs in round trips (15 before issue 12)
        # the order's read, BEGIN with the guarded UPDATE and the account locks, the credits' batch with the COMMIT;
        # besides, this first notify of the process reads the configuration it caches (pay account, tiers) once
        config = [sql for sql in fresh if touching([sql], "wechat_account") or touching([sql], "tier")]
        assert len(config) == 2 and len(fresh) - len(config) == 3, [sql[:90] for sql in fresh]
    # a PAID order answers a redelivery from the order row; the pay account now comes from the configuration cache
    assert [sql.split()[0].upper() for sql in replay] == ["SELECT"], replay
    assert touching(replay, "pay_order") == replay


async def test_a_notify_credit_costs_the_same_whatever_the_members_open_lots(app, client, admin, demo, settings):
    await use_pay_version("v2")
    package = await add_package(client, admin, bonus_balance=0, bonus_points=0)
    counts = []
    for n, lots in enumerate((0, 0, 60)):  # the first notify also fills the configuration cache
        member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid=f"mp-lots-{n}")
        await credits(merchant_id=demo.merchant.id, member_id=member_id, count=lots, delta=5, kind="gift", key=f"g{n}")
        order = (await recharge(client, headers, package_id=package["id"]))["order"]
        sent = await _notify(client, settings, order, f"42000000000000000000000000{n}9")
        assert [sql.split()[0].upper() for sql in touching(split_batches(sent), "balance_lot")] == ["INSERT"]
        counts.append(len(sent))
        assert await BalanceLot.filter(member_id=member_id, status="open").count() == lots + 1
        assert await assert_consistent(member_id) == (10_000 + 5 * lots, 10_000, 5 * lots)
    assert counts[1] == counts[2]
