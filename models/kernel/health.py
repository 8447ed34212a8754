"""What liveness needs of the database: one trivial query on the shared connection."""

from __future__ import annotations

from tortoise import connections


async def ping_database() -> None:
    """Run SELECT 1 on the default connection; raises when the database does not answer."""
    await connections.get("default").execute_query("SELECT 1")
