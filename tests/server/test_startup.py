"""A cancelled first query at startup (a health probe's timeout, a client gone) never poisons the database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Each round opens the database as the server's startup listener does (server.db.init_db), cancels the first
# query after 0-9 event-loop steps, then asks again. With a lazily opened SQLite connection most rounds hung.
ROUNDS = """
import asyncio, sys, tempfile
from tortoise import Tortoise, connections
from server import db
from server.config import load_settings

async def main():
    answered = 0
    for round_ in range(50):
        url = f"sqlite://{tempfile.mkdtemp()}/startup.sqlite3"
        await db.init_db(load_settings(environ={"HUIYUAN_DATABASE__URL": url, "HUIYUAN_REDIS__URL": "memory://"}))
        first = asyncio.create_task(connections.get("default").execute_query("SELECT 1"))
        for _ in range(round_ % 10):
            await asyncio.sleep(0)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        try:
            await asyncio.wait_for(connections.get("default").execute_query("SELECT 1"), 2)
            answered += 1
        except Exception as exc:
            print(f"round {round_}: {type(exc).__name__}", file=sys.stderr)
        await Tortoise.close_connections()
    print(answered)

asyncio.run(main())
"""


def test_fifty_cancelled_first_queries_in_a_row_leave_the_database_answering():
    run = subprocess.run(
        [sys.executable, "-c", ROUNDS], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "50", run.stderr
