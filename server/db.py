"""Database wiring: Tortoise config from settings, init/close, migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiomysql.connection
import pymysql.converters
from tortoise import Tortoise
from tortoise.migrations.api.migrate import migrate as migrate_api

from server.config import Settings

MODEL_MODULES = [  # every module of models/ that defines tables (app label "models")
    "models.kernel.outbox",
    "models.kernel.inbound",
    "models.kernel.config_cache",
    "models.tenancy.merchants",
    "models.tenancy.staff",
    "models.tenancy.program",
    "models.tenancy.onboarding_settings",
    "models.members.members",
    "models.members.member_card",
    "models.members.custom_fields",
    "models.members.timeline",
    "models.members.imports",
    "models.members.import_upload",
    "models.ledger.books",
    "models.ledger.balance_lots",
    "models.points.lots",
    "models.points.signin",
    "models.tiers.tables",
    "models.payments.catalogue",
    "models.payments.orders",
    "models.plans.terms",
    "models.payments.refund_settle",
    "models.cards.template",
    "models.onboarding.qrcodes",
    "models.tenancy.api_keys",
    "models.checkout.purchases",
    "models.checkout.returns",
    "models.packages.tables",
    "models.coupons.tables",
    "models.portrait.rfm",
    "models.segments.tables",
    "models.analytics.tables",
]


def database_url(settings: Settings) -> str:
    """Return the Tortoise DB URL with pool settings; creates the SQLite folder."""
    url = settings.database.url
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return url
    if url.startswith("mysql://"):
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        query.setdefault("minsize", str(settings.database.pool_min))
        query.setdefault("maxsize", str(settings.database.pool_max))
        query.setdefault("charset", "utf8mb4")
        # every statement sees the latest committed rows and no gap locks are taken: the guards are unique keys
        # and conditional updates, and a loser of an insert race must be able to read the winner's row
        query.setdefault("init_command", "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        return urlunsplit(parts._replace(query=urlencode(query)))
    raise ValueError(f"unsupported database url {url!r}: use sqlite://PATH or mysql://user:pw@host:port/db")


def tortoise_config(settings: Settings) -> dict[str, Any]:
    """Tortoise ORM config for this deployment (UTC storage, committed migrations)."""
    return {
        "connections": {"default": database_url(settings)},
        "apps": {
            "models": {
                "models": MODEL_MODULES,
                "default_connection": "default",
                "migrations": "migrations",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


async def init_db(settings: Settings) -> None:
    """Open the ORM and its connection now, so no request is the first to open it and can poison it by cancelling."""
    if settings.database.url.startswith("mysql://"):
        _allow_mysql_bytes()
    await Tortoise.init(config=tortoise_config(settings), _enable_global_fallback=True)
    await Tortoise.get_connection("default").execute_query("SELECT 1")


def _allow_mysql_bytes() -> None:
    """aiomysql 0.3.2 escapes bytes with PyMySQL's escape_bytes_prefixed, a placeholder string since PyMySQL 1.1.1."""

    if not callable(aiomysql.connection.escape_bytes_prefixed):
        aiomysql.connection.escape_bytes_prefixed = pymysql.converters.escape_bytes


async def close_db() -> None:
    await Tortoise.close_connections()


async def migrate(settings: Settings, *, progress: bool = False) -> None:
    """Apply pending committed migrations."""

    def report(event: str, app_label: str, name: str) -> None:
        if progress and event == "apply_done":
            print(f"  applied {app_label}.{name}", flush=True)

    await migrate_api(config=tortoise_config(settings), progress=report)


def is_mysql() -> bool:
    return Tortoise.get_connection("default").capabilities.dialect == "mysql"
