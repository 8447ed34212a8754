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

A conditional UPDATE marked `guard=True` must change exactly one row, or the batch stops right after it and
`GuardFailed` is raised with the statement's index (the caller lets it leave the transaction, which rolls back):
so "CREATED -> PAID, then credit" travels as one round trip and a loser of the race writes nothing. On MySQL the
guard is a scalar subquery that returns two rows, an error, only when the update's ROW_COUNT() was not 1 (no
table, no stored program: MySQL, MariaDB and TiDB alike); on SQLite the cursor's row count is checked.

Statements built with f-strings carry `# noqa: S608`: what is interpolated is a table name or an SQL fragment
of the code itself, never a value; every value is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
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

from models.kernel import mysqlwire

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
    guard: bool = False  # must change exactly one row, else the batch stops here: GuardFailed


class GuardFailed(Exception):
    """A guard=True statement of a batch did not change exactly one row; nothing after it ran."""

    def __init__(self, index: int) -> None:
        super().__init__(f"statement {index} of the batch changed no row")
        self.index = index  # in the statements given to run()


# two rows (an error) when the statement before did not change exactly one row, one NULL otherwise
_GUARD = (
    "SET @hy_guard = ROW_COUNT()",
    "SELECT (SELECT 1 FROM DUAL WHERE @hy_guard <> 1 UNION ALL SELECT 2 FROM DUAL WHERE @hy_guard <> 1)",
)


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


def _needs_variable(statements: Sequence[Stmt], index: int, refs: dict[str, list[int]]) -> bool:
    """Whether statement `index`'s captured id must be kept in a session variable: a statement after the next
    one refers to it (the next one can read LAST_INSERT_ID() itself; the caller gets it from the OK packet).
    refs: the indexes of the statements referring to each capture name."""
    name = statements[index].capture
    for later in refs.get(name or "", ()):
        if later < index + 2:
            continue
        recaptured = any(statements[i].capture == name for i in range(index + 2, later))
        return not recaptured
    return False


def _references(statements: Sequence[Stmt]) -> dict[str, list[int]]:
    refs: dict[str, list[int]] = {}
    for index, stmt in enumerate(statements):
        for value in stmt.params:
            if type(value) is Ref:
                refs.setdefault(value.name, []).append(index)
    return refs


_PARTS: dict[str, tuple[str, ...]] = {}  # a statement's text split at its placeholders (the texts are the code's)
_PARTS_MAX = 1024


def _parts(sql: str) -> tuple[str, ...]:
    found = _PARTS.get(sql)
    if found is None:
        # the literal text between placeholders, with "%%" meaning "%" as in a pymysql query
        found = tuple(part.replace("%%", "%") for part in sql.split(PLACEHOLDER))
        if len(_PARTS) < _PARTS_MAX:
            _PARTS[sql] = found
    return found


def _render_mysql(
    connection: Any, statements: Sequence[Stmt], *, commit: bool, begin: bool = False
) -> tuple[str, list[int], list[int], dict[int, int]]:
    """(batch text with every parameter escaped in, answer index of each rows=True statement, of each statement,
    statement index of each guard's failing answer).

    Values are written as pymysql writes them, escaped by the connection (its charset and NO_BACKSLASH_ESCAPES
    mode); the common types inline, the rest through the connection's escape."""
    texts: list[str] = ["START TRANSACTION"] if begin else []
    row_results: list[int] = []
    positions: list[int] = []
    guards: dict[int, int] = {}
    refs = _references(statements)
    escape_string = connection.escape_string
    # NULL unless the insert made exactly one row: a dependent NOT NULL column then fails the batch
    inline: dict[str, str] = {}  # captures read by the next statement only: no variable
    for index, stmt in enumerate(statements):
        parts = _parts(stmt.sql)
        if len(parts) - 1 != len(stmt.params):
            raise ValueError(f"{len(stmt.params)} params for {len(parts) - 1} placeholders in {stmt.sql[:60]!r}")
        text = [parts[0]]
        for value, rest in zip(stmt.params, parts[1:], strict=True):
            kind = type(value)
            if kind is int:
                text.append(str(value))
            elif kind is str:
                text.append("'" + escape_string(value) + "'")
            elif value is None:
                text.append("NULL")
            elif kind is datetime:  # the wall time as given, microseconds when there are some (as pymysql)
                text.append("'" + value.replace(tzinfo=None).isoformat(" ") + "'")
            elif kind is Ref:
                variable = inline.get(value.name, f"@hy_{value.name}")
                text.append(f"CONCAT('{escape_string(value.prefix)}', {variable})" if value.prefix else variable)
            else:
                text.append(str(connection.escape(value)))
            text.append(rest)
        if stmt.rows:
            row_results.append(len(texts))
        positions.append(len(texts))
        texts.append("".join(text))
        inline = {}
        if stmt.guard:
            texts.append(_GUARD[0])
            guards[len(texts)] = index
            texts.append(_GUARD[1])
        if stmt.capture is not None:
            if _needs_variable(statements, index, refs):
                texts.append(f"SET @hy_{stmt.capture} = IF(ROW_COUNT() = 1, LAST_INSERT_ID(), NULL)")
            else:
                inline[stmt.capture] = "IF(ROW_COUNT() = 1, LAST_INSERT_ID(), NULL)"
    if commit:
        texts.append("COMMIT")
    return ";\n".join(texts), row_results, positions, guards


@contextmanager
def _driver_errors() -> Iterator[None]:
    """pymysql's errors as Tortoise's, like the ORM's: `ledger.retrying` and the replay paths see the same kinds."""
    try:
        yield
    except pymysql.err.IntegrityError as exc:
        raise IntegrityError(exc) from exc
    except (pymysql.err.OperationalError, pymysql.err.ProgrammingError, pymysql.err.DataError) as exc:
        raise OperationalError(exc) from exc


async def _run_mysql(
    client: TransactionalDBClient, statements: Sequence[Stmt], *, commit: bool, keep: Collection[str] | None
) -> BatchResult:
    begin = isinstance(client, _LazyBegin) and not client.begun
    if begin:
        client.begun = True  # type: ignore[attr-defined]  # START TRANSACTION leads the batch: a failure must roll back
    with _driver_errors():
        async with client.acquire_connection() as connection:
            text, row_results, positions, guards = _render_mysql(connection, statements, commit=commit, begin=begin)
            try:
                answers = await mysqlwire.execute(connection, text)
            except pymysql.err.MySQLError as exc:
                failed = guards.get(getattr(exc, "answered", -1))
                if failed is not None:
                    raise GuardFailed(failed) from exc
                raise
    if commit:
        client._finalized = True  # type: ignore[attr-defined]  # the batch's COMMIT ended it: the context must not
    ids: dict[str, int | None] = {}
    for stmt, at in zip(statements, positions, strict=True):
        if stmt.capture is not None and (keep is None or stmt.capture in keep):
            answer = answers[at]  # each statement's OK packet carries its insert id
            ids[stmt.capture] = answer.insert_id if answer.count == 1 else None
    return BatchResult(
        ids=ids, rows=[answers[i].rows or [] for i in row_results], counts=[answers[i].count for i in positions]
    )


async def select(statements: Sequence[Stmt]) -> list[list[tuple[Any, ...]]]:
    """The rows of read-only statements, in or outside a transaction: on MySQL one round trip read off the wire
    (models.kernel.mysqlwire), on SQLite one statement after another. For the hot reads (the points page, the
    notify's order) that would otherwise pay the driver's result machinery for a few small rows."""
    client = connections.get("default")
    if client.capabilities.dialect != "mysql":
        found = []
        for stmt in statements:
            _, rows = await client.execute_query(stmt.sql.replace(PLACEHOLDER, "?"), list(stmt.params))
            found.append([tuple(row) for row in rows])
        return found
    with _driver_errors():
        async with client.acquire_connection() as connection:
            text, _, positions, _ = _render_mysql(connection, statements, commit=False)
            answers = await mysqlwire.execute(connection, text)
    return [answers[i].rows or [] for i in positions]


def _ref_value(ref: Ref, ids: dict[str, int | None]) -> Any:
    found = ids[ref.name]
    return found if found is None or not ref.prefix else f"{ref.prefix}{found}"


async def _run_sqlite(client: TransactionalDBClient, statements: Sequence[Stmt]) -> BatchResult:
    result = BatchResult()
    for stmt in statements:
        values = [_ref_value(v, result.ids) if isinstance(v, Ref) else v for v in stmt.params]
        sql = stmt.sql.replace(PLACEHOLDER, "?")
        count, found = await client.execute_query(sql, values)
        if stmt.guard and count != 1:
            raise GuardFailed(len(result.counts))
        if stmt.capture is not None:
            _, last = await client.execute_query("SELECT last_insert_rowid()")
            result.ids[stmt.capture] = int(last[0][0]) if count == 1 else None
        if stmt.rows:
            result.rows.append([tuple(row) for row in found])
            count = len(found)
        result.counts.append(int(count))
    return result
