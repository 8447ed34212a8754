"""The hot writes' one deliberate SQL path: parameterized statements sent on the transaction's own connection.

On MySQL/MariaDB a batch is ONE multi-statement round trip (aiomysql always sets CLIENT_MULTI_STATEMENTS), the
COMMIT included when asked; on SQLite (in-process, no network) the statements run one by one. Statements are
written with `%s` placeholders for both dialects (`dialect()` tells them apart where the SQL differs).

A statement may capture the id its INSERT made (`capture="purchase"`) and later statements of the same batch
refer to it with `Ref("purchase")`, or `Ref("purchase", prefix="purchase:")` for a key built from it: on MySQL a
session variable set right after the insert, on SQLite the cursor's lastrowid. The batch returns those ids and
the rows of the statements marked `rows=True`.

MySQL stops a multi-statement batch at its first error: what ran before it is still in the transaction, so the
error is raised (as Tortoise's IntegrityError / OperationalError, like the ORM's, so `ledger.retrying` and the
callers' replay paths work unchanged) and the caller's transaction rolls back whole. The exactly-once guards
are the same unique keys and conditional updates as the ORM path's; only the round trips are fewer.

Statements built with f-strings carry `# noqa: S608`: what is interpolated is a table name or an SQL fragment
of the code itself, never a value; every value is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pymysql.err
from tortoise import connections
from tortoise.backends.base.client import (
    ConnectionWrapper,
    NestedTransactionContext,
    TransactionalDBClient,
    TransactionContext,
    TransactionContextPooled,
)
from tortoise.backends.mysql.client import TransactionWrapper
from tortoise.exceptions import IntegrityError, OperationalError, TransactionManagementError
from tortoise.transactions import in_transaction

PLACEHOLDER = "%s"


@dataclass(frozen=True)
class Ref:
    """The id an earlier statement of the batch inserted (with a text prefix: a key such as "purchase:<id>")."""

    name: str
    prefix: str = ""


@dataclass(frozen=True)
class Stmt:
    sql: str  # %s placeholders, one per param
    params: tuple[Any, ...] = ()
    capture: str | None = None  # remember the id this INSERT made under this name
    rows: bool = False  # return this statement's rows


@dataclass
class BatchResult:
    ids: dict[str, int | None] = field(default_factory=dict)  # captured insert ids by name (None: no row)
    rows: list[list[tuple[Any, ...]]] = field(default_factory=list)  # of the rows=True statements, in order
    counts: list[int] = field(default_factory=list)  # rows each statement changed (or returned), in order


def dialect() -> str:
    """ "mysql" or "sqlite": the current connection's SQL dialect."""
    return str(connections.get("default").capabilities.dialect)


def db_time(moment: datetime) -> datetime:
    """A datetime as a raw statement parameter: aware UTC (pymysql writes it as UTC, SQLite as Tortoise does)."""
    return moment.astimezone(UTC)


class _BeginFirst(ConnectionWrapper):
    """The connection of a lazily begun transaction: an ORM statement sends the BEGIN first if nothing has."""

    async def __aenter__(self) -> Any:
        connection = await super().__aenter__()
        client: _LazyBegin = self.client  # type: ignore[assignment]
        if not client.begun:
            try:
                await connection.begin()
            except BaseException:
                self._lock.release()
                raise
            client.begun = True
        return connection


class _Nested(NestedTransactionContext):
    """A savepoint inside a lazily begun transaction: the transaction is begun first."""

    def __init__(self, parent: _LazyBegin) -> None:
        super().__init__(TransactionWrapper(parent))
        self.parent = parent

    async def __aenter__(self) -> TransactionalDBClient:
        async with self.parent.acquire_connection():
            pass
        return await super().__aenter__()


class _LazyBegin(TransactionWrapper):
    """A MySQL transaction whose BEGIN travels with its first statement: the batch's first round trip carries
    START TRANSACTION (see run), an ORM statement sends BEGIN on its own; one that sent nothing ends silently."""

    begun = False

    async def begin(self) -> None:
        self._finalized = False
        self.begun = False

    def acquire_connection(self) -> Any:
        return _BeginFirst(self._lock, self)

    def _in_transaction(self) -> TransactionContext:
        return _Nested(self)

    async def commit(self) -> None:
        if self.begun:
            await super().commit()
        self._finalized = True

    async def rollback(self) -> None:
        if self.begun:
            await super().rollback()
        self._finalized = True


def transaction() -> Any:
    """in_transaction() for a hot write: on MySQL the BEGIN is not a round trip of its own (see _LazyBegin)."""
    client = connections.get("default")
    if client.capabilities.dialect == "mysql" and not isinstance(client, TransactionalDBClient):
        return TransactionContextPooled(_LazyBegin(client), client._pool_init_lock)
    return in_transaction()


def _client() -> TransactionalDBClient:
    client = connections.get("default")
    if not isinstance(client, TransactionalDBClient):
        raise TransactionManagementError("sqlpath.run needs the caller's transaction (async with in_transaction())")
    return client


async def run(statements: Sequence[Stmt], *, commit: bool = False, keep: Collection[str] | None = None) -> BatchResult:
    """Run the statements in order in the current transaction; with commit=True the batch also ends it.

    keep: the captured ids to return (None: all). On MySQL an id comes back in its statement's OK packet, and one
    only the next statement reads needs no session variable.
    """
    client = _client()
    if client.capabilities.dialect == "mysql":
        return await _run_mysql(client, statements, commit=commit, keep=keep)
    result = await _run_sqlite(client, statements)
    if keep is not None:
        result.ids = {name: found for name, found in result.ids.items() if name in keep}
    return result


def _needs_variable(statements: Sequence[Stmt], index: int) -> bool:
    """Whether statement `index`'s captured id must be kept in a session variable: a statement after the next
    one refers to it (the next one can read LAST_INSERT_ID() itself; the caller gets it from the OK packet)."""
    name = statements[index].capture
    for later in statements[index + 2 :]:
        if any(isinstance(value, Ref) and value.name == name for value in later.params):
            return True
        if later.capture == name:
            return False
    return False


def _render_mysql(
    statements: Sequence[Stmt], *, commit: bool, begin: bool = False
) -> tuple[str, list[Any], list[int], list[int]]:
    """(batch text, its params, result index of each rows=True statement, result index of each statement)."""
    texts: list[str] = ["START TRANSACTION"] if begin else []
    params: list[Any] = []
    row_results: list[int] = []
    positions: list[int] = []
    # NULL unless the insert made exactly one row: a dependent NOT NULL column then fails the batch
    inline: dict[str, str] = {}  # captures read by the next statement only: no variable
    for index, stmt in enumerate(statements):
        parts = stmt.sql.split(PLACEHOLDER)
        if len(parts) - 1 != len(stmt.params):
            raise ValueError(f"{len(stmt.params)} params for {len(parts) - 1} placeholders in {stmt.sql[:60]!r}")
        text = [parts[0]]
        for value, rest in zip(stmt.params, parts[1:], strict=True):
            if isinstance(value, Ref):
                variable = inline.get(value.name, f"@hy_{value.name}")
                if value.prefix:
                    text.append(f"CONCAT({PLACEHOLDER}, {variable})")
                    params.append(value.prefix)
                else:
                    text.append(variable)
            else:
                text.append(PLACEHOLDER)
                params.append(value)
            text.append(rest)
        if stmt.rows:
            row_results.append(len(texts))
        positions.append(len(texts))
        texts.append("".join(text))
        inline = {}
        if stmt.capture is not None:
            if _needs_variable(statements, index):
                texts.append(f"SET @hy_{stmt.capture} = IF(ROW_COUNT() = 1, LAST_INSERT_ID(), NULL)")
            else:
                inline[stmt.capture] = "IF(ROW_COUNT() = 1, LAST_INSERT_ID(), NULL)"
    if commit:
        texts.append("COMMIT")
    return ";\n".join(texts), params, row_results, positions


async def _run_mysql(
    client: TransactionalDBClient, statements: Sequence[Stmt], *, commit: bool, keep: Collection[str] | None
) -> BatchResult:
    begin = isinstance(client, _LazyBegin) and not client.begun
    text, params, row_results, positions = _render_mysql(statements, commit=commit, begin=begin)
    if begin:
        client.begun = True  # type: ignore[attr-defined]  # sent: a failure below must roll back
    results: dict[int, list[tuple[Any, ...]]] = {}
    counts: list[int] = []
    insert_ids: list[int] = []
    try:
        async with client.acquire_connection() as connection, connection.cursor() as cursor:
            await cursor.execute(text, params)
            index = 0
            while True:
                if index in row_results:
                    results[index] = list(await cursor.fetchall())
                counts.append(int(cursor.rowcount))
                insert_ids.append(int(cursor.lastrowid or 0))  # each statement's OK packet carries its insert id
                index += 1
                if not await cursor.nextset():
                    break
    except pymysql.err.IntegrityError as exc:
        raise IntegrityError(exc) from exc
    except (pymysql.err.OperationalError, pymysql.err.ProgrammingError, pymysql.err.DataError) as exc:
        raise OperationalError(exc) from exc
    if commit:
        client._finalized = True  # type: ignore[attr-defined]  # the batch's COMMIT ended it: the context must not
    ids: dict[str, int | None] = {}
    for stmt, at in zip(statements, positions, strict=True):
        if stmt.capture is not None and (keep is None or stmt.capture in keep):
            ids[stmt.capture] = insert_ids[at] if counts[at] == 1 else None
    return BatchResult(ids=ids, rows=[results[i] for i in row_results], counts=[counts[i] for i in positions])


def _ref_value(ref: Ref, ids: dict[str, int | None]) -> Any:
    found = ids[ref.name]
    return found if found is None or not ref.prefix else f"{ref.prefix}{found}"


async def _run_sqlite(client: TransactionalDBClient, statements: Sequence[Stmt]) -> BatchResult:
    result = BatchResult()
    for stmt in statements:
        values = [_ref_value(v, result.ids) if isinstance(v, Ref) else v for v in stmt.params]
        sql = stmt.sql.replace(PLACEHOLDER, "?")
        count, found = await client.execute_query(sql, values)
        if stmt.capture is not None:
            _, last = await client.execute_query("SELECT last_insert_rowid()")
            result.ids[stmt.capture] = int(last[0][0]) if count == 1 else None
        if stmt.rows:
            result.rows.append([tuple(row) for row in found])
            count = len(found)
        result.counts.append(int(count))
    return result
