"""Count the SQL statements a piece of work sends to the database, in the driver (each one is a round trip).

On MariaDB every command aiomysql sends (queries, BEGIN, COMMIT, SAVEPOINT) passes `_execute_command`; on
SQLite the connection's trace callback sees every statement sqlite runs (BEGIN, COMMIT and SAVEPOINT included).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiomysql.connection
from tortoise import connections

NOT_RECORDED = re.compile(r"^\s*(PRAGMA|SELECT\s+sqlite_version)", re.IGNORECASE)


@asynccontextmanager
async def sql_statements() -> AsyncIterator[list[str]]:
    """The statements sent while the block runs, in order (both backends)."""
    sent: list[str] = []
    client = connections.get("default")
    if client.capabilities.dialect == "mysql":
        original = aiomysql.connection.Connection._execute_command

        async def recording(self: Any, command: int, sql: Any) -> Any:
            sent.append(sql.decode() if isinstance(sql, bytes | bytearray) else str(sql))
            return await original(self, command, sql)

        aiomysql.connection.Connection._execute_command = recording  # type: ignore[method-assign]
        try:
            yield sent
        finally:
            aiomysql.connection.Connection._execute_command = original  # type: ignore[method-assign]
        return
    await client._connection.set_trace_callback(lambda sql: None if NOT_RECORDED.match(sql) else sent.append(sql))
    try:
        yield sent
    finally:
        await client._connection.set_trace_callback(None)


def split_batches(statements: list[str]) -> list[str]:
    """Each statement of a multi-statement round trip (models.kernel.sqlpath joins them with ";\\n") on its own."""
    return [part for sql in statements for part in sql.split(";\n")]


def touching(statements: list[str], table: str) -> list[str]:
    """The statements that name a table (as `table` or "table")."""
    pattern = re.compile(rf"[`\"\s]{re.escape(table)}[`\"\s]", re.IGNORECASE)
    return [sql for sql in statements if pattern.search(f" {sql} ")]


def bulk_is_one_statement() -> bool:
    """True on MariaDB, where a bulk insert is one statement; SQLite's trace shows executemany row by row."""
    return connections.get("default").capabilities.dialect == "mysql"
