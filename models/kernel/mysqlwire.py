"""One multi-statement round trip on an aiomysql connection, read straight off the socket.

aiomysql reads a response a packet at a time, two awaits per packet, and builds a result object per statement;
a hot write's batch is a dozen OK packets and a few one-row result sets, so that machinery cost more than the
database's work. `execute` writes the COM_QUERY with aiomysql's own command writer, then parses the response
from the connection's stream buffer in one loop (the text protocol without CLIENT_DEPRECATE_EOF, which is what
aiomysql negotiates): an OK packet per statement without rows, column definitions, EOF, rows, EOF per statement
with rows, an ERR packet ending the batch. The connection is left exactly as aiomysql expects after a command:
no pending result, the server status of the last packet. Anything unexpected closes the connection (the pool
then discards it) and raises, so a half-read response can never be mistaken for the next command's.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pymysql.err
from pymysql.connections import TEXT_TYPES
from pymysql.constants import COMMAND, CR, FIELD_TYPE, SERVER_STATUS
from pymysql.converters import decoders, through

_INTEGERS = frozenset(
    {FIELD_TYPE.TINY, FIELD_TYPE.SHORT, FIELD_TYPE.LONG, FIELD_TYPE.LONGLONG, FIELD_TYPE.INT24, FIELD_TYPE.YEAR}
)
_DECIMALS = frozenset({FIELD_TYPE.DECIMAL, FIELD_TYPE.NEWDECIMAL})
_FLOATS = frozenset({FIELD_TYPE.FLOAT, FIELD_TYPE.DOUBLE})
_BINARY_CHARSET = 63
_MAX_PACKET = 0xFFFFFF
_READ = 1 << 16


class Statement:
    """What one statement of the batch answered: rows changed (or returned), its insert id, its rows."""

    __slots__ = ("count", "insert_id", "rows")

    def __init__(self, count: int, insert_id: int, rows: list[tuple[Any, ...]] | None) -> None:
        self.count, self.insert_id, self.rows = count, insert_id, rows


def _lenenc(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFC:
        return data[pos + 1] | data[pos + 2] << 8, pos + 3
    if first == 0xFD:
        return data[pos + 1] | data[pos + 2] << 8 | data[pos + 3] << 16, pos + 4
    return int.from_bytes(data[pos + 1 : pos + 9], "little"), pos + 9


def _column(payload: bytes) -> tuple[int, int]:
    """(type, charset) of a column definition packet: six length-coded strings, then the fixed part."""
    pos = 0
    for _ in range(6):
        length, pos = _lenenc(payload, pos)
        pos += length
    pos += 1  # length of the fixed fields (0x0c)
    charset = payload[pos] | payload[pos + 1] << 8
    return payload[pos + 6], charset


def _converter(kind: int, charset: int) -> Any:
    """How a column's text value becomes Python, as pymysql decides it (MySQLResult._get_descriptions)."""
    if kind in _INTEGERS:
        return int
    if kind in _DECIMALS:
        return _decimal
    if kind in _FLOATS:
        return float
    decode = decoders.get(kind)
    if kind in TEXT_TYPES and kind != FIELD_TYPE.JSON:
        if charset == _BINARY_CHARSET:
            return bytes
        return _text
    if decode is None or decode is through:
        return _text
    return lambda raw: decode(raw.decode("utf-8"))


def _decimal(raw: bytes) -> Decimal:
    return Decimal(raw.decode("ascii"))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8")


def _row(payload: bytes, converters: list[Any]) -> tuple[Any, ...]:
    values: list[Any] = []
    pos = 0
    for convert in converters:
        if payload[pos] == 0xFB:
            values.append(None)
            pos += 1
            continue
        length, pos = _lenenc(payload, pos)
        values.append(convert(payload[pos : pos + length]))
        pos += length
    return tuple(values)


def _ok(payload: bytes) -> tuple[int, int, int]:
    """(affected rows, insert id, server status) of an OK packet."""
    affected, pos = _lenenc(payload, 1)
    insert_id, pos = _lenenc(payload, pos)
    return affected, insert_id, payload[pos] | payload[pos + 1] << 8


def _lost(connection: Any, why: str) -> pymysql.err.OperationalError:
    connection.close()
    return pymysql.err.OperationalError(CR.CR_SERVER_LOST, f"Lost connection to MySQL server during query ({why})")


async def execute(connection: Any, text: str) -> list[Statement]:
    """Send `text` (statements joined by ";") as one COM_QUERY and read every statement's answer."""
    await connection._execute_command(COMMAND.COM_QUERY, text)
    try:
        return await _read(connection)
    except pymysql.err.MySQLError:
        raise
    except BaseException:  # cancelled or broken mid-response: the stream is out of step, never reuse it
        connection.close()
        raise


async def _read(connection: Any) -> list[Statement]:
    reader: asyncio.StreamReader = connection._reader
    buffer = b""
    pos = 0
    answers: list[Statement] = []
    columns = 0  # column definitions still to read
    converters: list[Any] = []
    rows: list[tuple[Any, ...]] | None = None  # the current result set's rows (None: not in one)
    in_header = False  # between the column definitions and their EOF
    while True:
        if len(buffer) - pos < 4:
            more = await reader.read(_READ)
            if not more:
                raise _lost(connection, "the server closed the connection")
            buffer = buffer[pos:] + more
            pos = 0
            continue
        length = buffer[pos] | buffer[pos + 1] << 8 | buffer[pos + 2] << 16
        end = pos + 4 + length
        if len(buffer) < end:
            more = await reader.read(max(_READ, end - len(buffer)))
            if not more:
                raise _lost(connection, "the server closed the connection")
            buffer = buffer[pos:] + more
            pos = 0
            continue
        if length == _MAX_PACKET:
            raise _lost(connection, "a packet of 16 MB or more")
        if buffer[pos + 3] != connection._next_seq_id:
            raise _lost(connection, f"packet {buffer[pos + 3]}, expected {connection._next_seq_id}")
        connection._next_seq_id = (connection._next_seq_id + 1) % 256
        payload = buffer[pos + 4 : end]
        pos = end
        first = payload[0]
        if first == 0xFF:  # an error ends the batch: the statements after it never ran
            connection._result = None
            try:
                pymysql.err.raise_mysql_exception(payload)
            except pymysql.err.MySQLError as exc:
                exc.answered = len(answers)  # type: ignore[attr-defined]  # the failing statement's answer index
                raise
        if columns:
            converters.append(_converter(*_column(payload)))
            columns -= 1
            in_header = columns == 0
            continue
        if in_header:  # the EOF after the column definitions
            in_header = False
            rows = []
            continue
        if rows is not None:
            if first == 0xFE and length < 9:  # the EOF after the rows
                status = payload[3] | payload[4] << 8
                answers.append(Statement(len(rows), 0, rows))
                rows = None
            else:
                rows.append(_row(payload, converters))
                continue
        elif first == 0x00:
            affected, insert_id, status = _ok(payload)
            answers.append(Statement(affected, insert_id, None))
        elif first == 0xFB:
            raise _lost(connection, "LOCAL INFILE is not supported here")
        else:  # a result set: its column count
            columns, _ = _lenenc(payload, 0)
            converters = []
            continue
        if not status & SERVER_STATUS.SERVER_MORE_RESULTS_EXISTS:
            if pos != len(buffer):
                raise _lost(connection, "bytes after the last answer")
            connection._result = None
            connection.server_status = status
            connection._affected_rows = answers[-1].count
            return answers
