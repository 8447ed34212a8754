"""models.kernel.sqlpath: a batch is all or nothing, ids flow between its statements, and a missing row fails."""

from __future__ import annotations

import pytest
from tortoise import connections
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from models.checkout.purchases import Purchase
from models.kernel import clock, mysqlwire, sqlpath
from models.kernel.sqlpath import Ref, Stmt
from models.ledger.books import PointsAccount
from models.points.lots import PointsLot
from tests.points.helpers import buy, new_member

INSERT_PURCHASE = (
    "INSERT INTO purchase (merchant_id, member_id, store_id, order_no, amount, items, points, growth, status,"
    " occurred_at, created_at) SELECT merchant_id, member_id, NULL, %s, 1, '[]', 0, 0, 'settled', %s, %s"
    " FROM points_account WHERE member_id = %s"
)


def _purchase(order_no: str, member_id: int, **extra) -> Stmt:
    now = sqlpath.db_time(clock.now())
    return Stmt(INSERT_PURCHASE, (order_no, now, now, member_id), **extra)


async def test_an_error_mid_batch_undoes_what_ran_before_it_and_the_next_request_works(client, admin):
    member = await new_member(client, admin)
    await buy(client, admin, member, "K-1", 10_000)
    with pytest.raises(IntegrityError):
        async with in_transaction():
            await sqlpath.run(
                [
                    Stmt("UPDATE points_account SET balance = balance + 1000 WHERE member_id = %s", (member,)),
                    _purchase("K-1", member),  # the (merchant_id, order_no) key is taken: the batch stops here
                    Stmt("UPDATE points_account SET balance = balance + 1 WHERE member_id = %s", (member,)),
                ],
                commit=True,
            )
    assert (await PointsAccount.get(member_id=member)).balance == 10
    assert (await buy(client, admin, member, "K-2", 10_000))["points"] == 10  # the connection is fine


async def test_ids_flow_to_later_statements_and_counts_are_per_statement(client, admin):
    member = await new_member(client, admin)
    async with in_transaction():
        done = await sqlpath.run(
            [
                _purchase("K-3", member, capture="purchase"),
                Stmt(
                    "UPDATE purchase SET order_no = %s WHERE id = %s", (Ref("purchase", prefix="K-3-"), Ref("purchase"))
                ),
                Stmt("SELECT order_no FROM purchase WHERE id = %s", (Ref("purchase"),), rows=True),
                Stmt("UPDATE points_account SET balance = balance WHERE member_id = %s", (-1,)),
            ]
        )
    purchase = await Purchase.get(member_id=member)
    assert done.ids == {"purchase": purchase.id}
    assert purchase.order_no == f"K-3-{purchase.id}" and done.rows == [[(purchase.order_no,)]]
    assert done.counts == [1, 1, 1, 0]


@pytest.mark.parametrize("keep", [None, ()], ids=["kept in a variable", "read by the next statement"])
async def test_a_capture_that_inserted_nothing_fails_the_statement_that_needs_its_id(client, admin, keep):
    member = await new_member(client, admin)
    with pytest.raises(IntegrityError):
        async with in_transaction():
            await sqlpath.run(
                [
                    _purchase("K-4", -1, capture="entry"),  # no account -1: nothing inserted, the id is NULL
                    Stmt(
                        "INSERT INTO points_lot (merchant_id, member_id, entry_id, amount, remaining, expired,"
                        " expires_at, status, created_at) SELECT merchant_id, member_id, %s, 1, 1, 0, NULL, 'open',"
                        " updated_at FROM points_account WHERE member_id = %s",
                        (Ref("entry"), member),
                    ),
                ],
                commit=True,
                keep=keep,
            )
    assert await PointsLot.filter(member_id=member).count() == 0


async def test_an_id_read_by_the_next_statement_only_needs_no_variable(client, admin):
    member = await new_member(client, admin)
    statements = [
        _purchase("K-5", member, capture="purchase"),
        Stmt("UPDATE purchase SET order_no = %s WHERE id = %s", (Ref("purchase", prefix="K-5-"), Ref("purchase"))),
    ]
    if sqlpath.dialect() == "mysql":
        async with connections.get("default").acquire_connection() as connection:
            text, *_ = sqlpath._render_mysql(connection, statements, commit=False)
        assert "@hy_purchase" not in text and text.count("LAST_INSERT_ID()") == 2
    async with in_transaction():
        done = await sqlpath.run(statements, keep=())
    purchase = await Purchase.get(member_id=member)
    assert done.ids == {} and purchase.order_no == f"K-5-{purchase.id}"


async def test_a_batch_needs_the_callers_transaction(app):
    with pytest.raises(Exception, match="in_transaction"):
        await sqlpath.run([Stmt("SELECT 1", rows=True)])


VALUES_SQL = (
    "SELECT 1, -9223372036854775808, NULL, 'x''y\\\\z', '汉字', 1.5e0, CAST(2.50 AS DECIMAL(5, 2)), SUM(1),"
    " CAST('2026-01-02 03:04:05.000006' AS DATETIME(6)), CAST('2026-01-02' AS DATE), GROUP_CONCAT('a', 'b'),"
    " JSON_ARRAY(1, 'two'), CAST('bin' AS BINARY), REPEAT('w', 300)"
)


async def test_the_wire_reader_answers_what_the_driver_answers(app):
    """models.kernel.mysqlwire parses the response itself: every column type the paths read, a result bigger
    than one socket read (5,000 rows), and OK packets between them come out exactly as aiomysql's cursor has them."""
    if sqlpath.dialect() != "mysql":
        pytest.skip("the wire reader is MySQL's")
    many = "SELECT seq, CONCAT('row ', seq) FROM seq_1_to_5000"
    async with connections.get("default").acquire_connection() as connection:
        async with connection.cursor() as cursor:
            await cursor.execute(VALUES_SQL)
            values = list(await cursor.fetchall())
            await cursor.execute(many)
            rows = list(await cursor.fetchall())
        answers = await mysqlwire.execute(connection, f"{VALUES_SQL};\nDO 1;\n{many};\nSET @hy_t = 1")
        assert [a.rows for a in answers] == [values, None, rows, None]
        assert [a.count for a in answers] == [1, 0, 5000, 0]
        async with connection.cursor() as cursor:  # the connection is in step for the driver's next command
            await cursor.execute("SELECT @hy_t")
            assert await cursor.fetchall() == ((1,),)


@pytest.mark.parametrize("holds", [True, False], ids=["holds", "fails"])
async def test_a_guard_stops_the_batch_when_its_update_changed_no_row_and_the_transaction_rolls_back(
    client, admin, holds
):
    member = await new_member(client, admin)
    await buy(client, admin, member, "G-1", 10_000)  # 10 points
    batch = [
        Stmt("UPDATE points_account SET balance = balance + 1000 WHERE member_id = %s", (member,)),
        Stmt(
            "UPDATE points_account SET balance = balance - 5 WHERE member_id = %s AND balance >= %s",
            (member, 1000 if holds else 10**9),
            guard=True,
        ),
        Stmt("UPDATE points_account SET balance = balance + 1 WHERE member_id = %s", (member,)),
        Stmt("SELECT balance FROM points_account WHERE member_id = %s", (member,), rows=True),
    ]
    if holds:
        async with sqlpath.transaction():
            done = await sqlpath.run(batch, commit=True)
        assert done.counts == [1, 1, 1, 1] and done.rows == [[(1006,)]]
        assert (await PointsAccount.get(member_id=member)).balance == 1006
    else:
        with pytest.raises(sqlpath.GuardFailed) as failed:
            async with sqlpath.transaction():
                await sqlpath.run(batch, commit=True)
        assert failed.value.index == 1
        assert (await PointsAccount.get(member_id=member)).balance == 10  # the first update rolled back too
    assert (await buy(client, admin, member, "G-2", 10_000))["points"] == 10  # the connection is fine
