"""Huiyuan's server with every driver command logged: for bench/roundtrips.py.

Run: python bench/roundtrips_server.py TRACE_FILE [python -m server arguments...]
Patches aiomysql's Connection._execute_command (every COM_QUERY, BEGIN/COMMIT/ROLLBACK included, COM_PING,
COM_INIT_DB: one round trip each) and redis.asyncio's connection (one line per send, with its command count:
a pipeline is one round trip of several commands), then runs `python -m server` in this process. Only a
single-process server (--workers 1) is traced: Sanic's worker processes would not inherit the patches.
"""

from __future__ import annotations

import asyncio
import runpy
import sys
from pathlib import Path
from typing import Any

import aiomysql.connection
import redis.asyncio.connection as redis_connection

COMMANDS = {1: "QUIT", 2: "INIT_DB", 3: "QUERY", 14: "PING", 22: "STMT_PREPARE", 23: "STMT_EXECUTE"}


def install(trace_path: str) -> None:
    """One tab-separated line per round trip (task, kind, detail, text), line-buffered: a reader sees it at once."""
    trace = open(trace_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the process

    def line(*parts: object) -> None:
        task = asyncio.current_task()
        parts = (task.get_name() if task else "-", *parts)
        trace.write("\t".join(str(p).replace("\t", " ").replace("\n", " ") for p in parts) + "\n")

    sql_execute = aiomysql.connection.Connection._execute_command

    async def traced_execute(self: Any, command: int, sql: Any) -> Any:
        text = sql.decode("utf-8", "replace") if isinstance(sql, bytes | bytearray) else str(sql)
        line("sql", COMMANDS.get(command, command), text[:2000])
        return await sql_execute(self, command, sql)

    aiomysql.connection.Connection._execute_command = traced_execute  # type: ignore[method-assign]

    connection = redis_connection.AbstractConnection
    send_packed = connection.send_packed_command
    send_command = connection.send_command
    pack_commands = connection.pack_commands
    pending: dict[int, list[str]] = {}

    def traced_pack_commands(self: Any, commands: Any) -> Any:
        commands = list(commands)
        pending[id(self)] = [str(c[0]) for c in commands]
        return pack_commands(self, commands)

    async def traced_send_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        pending[id(self)] = [str(args[0]) if args else "?"]
        return await send_command(self, *args, **kwargs)

    async def traced_send_packed(self: Any, command: Any, check_health: bool = True) -> Any:
        names = pending.pop(id(self), ["?"])
        line("redis", len(names), " ".join(names)[:500])
        return await send_packed(self, command, check_health)

    connection.pack_commands = traced_pack_commands  # type: ignore[method-assign]
    connection.send_command = traced_send_command  # type: ignore[method-assign]
    connection.send_packed_command = traced_send_packed  # type: ignore[method-assign]


def main() -> None:
    install(sys.argv[1])
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.argv = ["server", *sys.argv[2:]]
    runpy.run_module("server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
